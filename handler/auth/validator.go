package auth

import (
	"github.com/mcp-apim/remote-mcp/handler/guid"

	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// MaxTokenSize is the largest token Validate will look at. Real tokens
	// are about 1 KiB; the limit keeps hostile input from costing base64 and
	// JSON work before it is refused.
	MaxTokenSize = 8 << 10

	// DefaultLeeway is the clock skew allowed when ValidatorOptions.Leeway is zero.
	DefaultLeeway = time.Minute

	// MaxLeeway is the largest skew DESIGN section 5 allows ("at most a minute").
	MaxLeeway = time.Minute
)

// ValidatorOptions configures NewValidator.
type ValidatorOptions struct {
	// Keys are the public keys that may sign tokens (MCP_TOKEN_JWKS). Required.
	Keys *KeySet
	// Issuer is the exact iss expected: the gateway origin, no trailing slash.
	Issuer string
	// Audiences are the accepted resource identifiers (<gw>/mcp and
	// <gw>/mcp/sse); a token must name at least one of them.
	Audiences []string
	// Leeway is the clock skew allowed on exp, nbf and iat. Zero means
	// DefaultLeeway; more than MaxLeeway is refused.
	Leeway time.Duration
	// Now replaces time.Now, for tests.
	Now func() time.Time
}

// Validator checks MCP access tokens. It is safe for concurrent use.
type Validator struct {
	keys      *KeySet
	audiences []string
	parser    *jwt.Parser
	leeway    time.Duration
	now       func() time.Time
	verified  verifiedCache
}

// verifiedCache remembers tokens whose signature and claims were checked,
// until they expire: an RSA verification is close to half the cost of a
// tools/call, and a client sends the same token with every request.
type verifiedCache struct {
	mu      sync.Mutex
	entries map[[sha256.Size]byte]Identity
}

// maxVerified bounds the cache; when full it is emptied, which only costs
// re-verification.
const maxVerified = 10000

func (c *verifiedCache) get(k [sha256.Size]byte) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id, ok := c.entries[k]
	return id, ok
}

func (c *verifiedCache) put(k [sha256.Size]byte, id Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) >= maxVerified {
		c.entries = make(map[[sha256.Size]byte]Identity)
	}
	c.entries[k] = id
}

func (c *verifiedCache) drop(k [sha256.Size]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, k)
}

// NewValidator returns a Validator, or an error describing the misconfiguration.
func NewValidator(opts ValidatorOptions) (*Validator, error) {
	if opts.Keys == nil || opts.Keys.Len() == 0 {
		return nil, errors.New("auth: validator needs at least one signing key")
	}
	if err := checkIdentifier("issuer", opts.Issuer); err != nil {
		return nil, err
	}
	if len(opts.Audiences) == 0 {
		return nil, errors.New("auth: validator needs at least one audience")
	}
	for _, aud := range opts.Audiences {
		if err := checkIdentifier("audience", aud); err != nil {
			return nil, err
		}
	}
	leeway := opts.Leeway
	switch {
	case leeway == 0:
		leeway = DefaultLeeway
	case leeway < 0:
		return nil, fmt.Errorf("auth: leeway %v is negative", leeway)
	case leeway > MaxLeeway:
		return nil, fmt.Errorf("auth: leeway %v exceeds the maximum of %v", leeway, MaxLeeway)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	v := &Validator{
		keys:      opts.Keys,
		audiences: slices.Clone(opts.Audiences),
		leeway:    leeway,
		now:       now,
	}
	v.parser = jwt.NewParser(
		// The method allow-list is what refuses alg=none and the HS256
		// key-confusion attack; the key function returning only RSA keys is
		// a second line behind it.
		jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
		jwt.WithIssuer(opts.Issuer),
		jwt.WithAudience(v.audiences...),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(now),
		// Strict base64 gives every token exactly one encoding, so a valid
		// token cannot be altered into another string that also validates.
		jwt.WithStrictDecoding(),
	)
	return v, nil
}

// checkIdentifier refuses values that could never equal a claim: FRONTDOOR
// compares the gateway URLs without a trailing slash.
func checkIdentifier(what, s string) error {
	if s == "" {
		return fmt.Errorf("auth: validator needs an %s", what)
	}
	if strings.TrimSpace(s) != s || strings.HasSuffix(s, "/") {
		return fmt.Errorf("auth: %s %q must have no surrounding spaces and no trailing slash", what, s)
	}
	return nil
}

// Validate verifies raw (the bearer token, without the "Bearer " prefix) and
// returns the identity it carries. Every refusal is a *TokenError whose
// message is safe to show the client.
func (v *Validator) Validate(raw string) (Identity, error) {
	if raw == "" {
		return Identity{}, tokenError("token is empty", nil)
	}
	if len(raw) > MaxTokenSize {
		return Identity{}, tokenError("token is too large", nil)
	}
	// A token seen before needs only its expiry checked again: everything
	// else it was checked against is fixed for the Validator's life. Only
	// the expiry moves with the clock (nbf and iat were already in the past
	// when it was stored).
	key := sha256.Sum256([]byte(raw))
	if id, ok := v.verified.get(key); ok {
		if v.now().Before(id.ExpiresAt.Add(v.leeway)) {
			return id, nil
		}
		v.verified.drop(key)
		return Identity{}, tokenError("token has expired", nil)
	}
	var c tokenClaims
	tok, err := v.parser.ParseWithClaims(raw, &c, v.key)
	if err != nil {
		return Identity{}, classify(tok, &c, err)
	}
	if !tok.Valid {
		// ParseWithClaims reports every failure as an error; this guards
		// against that contract changing under us.
		return Identity{}, tokenError("token could not be verified", nil)
	}
	id := Identity{
		Subject:           c.Subject,
		TenantID:          c.TenantID,
		ObjectID:          c.ObjectID,
		Name:              c.Name,
		PreferredUsername: c.PreferredUsername,
		ClientID:          c.ClientID,
		Scope:             c.Scope,
		FamilyID:          c.FamilyID,
	}
	if c.ExpiresAt != nil {
		id.ExpiresAt = c.ExpiresAt.Time
	}
	for _, aud := range c.Audience {
		if slices.Contains(v.audiences, aud) {
			id.Audience = aud
			break
		}
	}
	v.verified.put(key, id)
	return id, nil
}

// key is the jwt.Keyfunc. The library calls it only after the alg check, so
// it sees RS256 tokens only; it checks the rest of the JOSE header.
func (v *Validator) key(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 section 4.1.11: extensions we do not understand must be
		// refused, and we understand none.
		return nil, tokenError("token uses unsupported critical header parameters", nil)
	}
	typ, _ := t.Header["typ"].(string)
	if !isAccessTokenType(typ) {
		// RFC 9068 section 4: the typ check keeps other JWTs signed by the
		// same key (ID tokens, say) from being accepted as access tokens.
		return nil, tokenError("token type must be at+jwt", nil)
	}
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, tokenError("token has no key id", nil)
	}
	pub, ok := v.keys.lookup(kid)
	if !ok {
		return nil, tokenError("token signing key is unknown", nil)
	}
	return pub, nil
}

// isAccessTokenType accepts "at+jwt" and "application/at+jwt", in any case:
// media types are case-insensitive and RFC 7515 lets the prefix be dropped.
func isAccessTokenType(typ string) bool {
	typ = strings.ToLower(typ)
	return typ == "at+jwt" || typ == "application/at+jwt"
}

// classify turns a parser error into a client-safe TokenError. The order
// follows the order of the checks, so the reason names the first failure.
func classify(tok *jwt.Token, c *tokenClaims, err error) *TokenError {
	if errors.Is(err, jwt.ErrTokenMalformed) || tok == nil {
		return tokenError("token is malformed", err)
	}
	if tok.Method == nil || tok.Method.Alg() != jwt.SigningMethodRS256.Alg() {
		return tokenError("token must be signed with RS256", err)
	}
	var te *TokenError
	if errors.Is(err, jwt.ErrTokenInvalidClaims) {
		switch {
		case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
			switch {
			case c.ExpiresAt == nil:
				return tokenError("token has no exp claim", err)
			case c.Issuer == "":
				return tokenError("token has no iss claim", err)
			case len(c.Audience) == 0 || c.Audience[0] == "":
				return tokenError("token has no aud claim", err)
			}
			return tokenError("token is missing a required claim", err)
		case errors.Is(err, jwt.ErrTokenExpired):
			return tokenError("token has expired", err)
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			return tokenError("token is not valid yet", err)
		case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
			return tokenError("token was issued in the future", err)
		case errors.Is(err, jwt.ErrTokenInvalidIssuer):
			return tokenError("token issuer is not accepted", err)
		case errors.Is(err, jwt.ErrTokenInvalidAudience):
			return tokenError("token audience is not accepted", err)
		case errors.As(err, &te):
			return te
		}
		return tokenError("token claims are invalid", err)
	}
	if errors.As(err, &te) {
		return te
	}
	if errors.Is(err, jwt.ErrTokenSignatureInvalid) {
		return tokenError("token signature is invalid", err)
	}
	return tokenError("token could not be verified", err)
}

// tokenClaims are the claims of FRONTDOOR's "Access token".
type tokenClaims struct {
	jwt.RegisteredClaims
	TenantID          string `json:"tid"`
	ObjectID          string `json:"oid"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username"`
	ClientID          string `json:"client_id"`
	Scope             string `json:"scope"`
	FamilyID          string `json:"fid"`
}

// maxFamilyIDLen bounds fid, which becomes part of a blob name.
const maxFamilyIDLen = 128

// Validate implements jwt.ClaimsValidator; the parser runs it after the
// signature and standard claims checks. It enforces what the rest of the
// handler relies on: tid and oid become storage paths, sub is their
// combination, and fid names the family a revocation check reads.
func (c tokenClaims) Validate() error {
	if !guid.Valid(c.TenantID) {
		return tokenError("token tid claim must be a GUID", nil)
	}
	if !guid.Valid(c.ObjectID) {
		return tokenError("token oid claim must be a GUID", nil)
	}
	if c.Subject != c.TenantID+":"+c.ObjectID {
		return tokenError("token sub claim must be tid:oid", nil)
	}
	if !isFamilyID(c.FamilyID) {
		return tokenError("token fid claim is missing or malformed", nil)
	}
	return nil
}

// isFamilyID accepts 1 to maxFamilyIDLen characters of the base64url
// alphabet, which covers GUIDs, hex and base64url random ids alike while
// keeping path separators and dots out of blob names.
func isFamilyID(s string) bool {
	if s == "" || len(s) > maxFamilyIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
