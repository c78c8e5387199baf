package oauthstore

import (
	"github.com/mcp-apim/remote-mcp/handler/guid"

	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Grant limits.
const (
	MinCodeChallengeLength = 43
	MaxCodeChallengeLength = 128
	MinCodeVerifierLength  = 43
	MaxCodeVerifierLength  = 128
	MaxResourceLength      = 512
	MaxScopeLength         = 512
	MaxUserTextLength      = 256 // name and preferred_username, characters
	// ChallengeS256 is the only PKCE method accepted (OAuth 2.1).
	ChallengeS256 = "S256"
)

// User is the signed-in person as the Entra id_token described them.
type User struct {
	// Subject is "<tid>:<oid>", the access token's sub.
	Subject string `json:"sub"`
	// TenantID and ObjectID are Entra GUIDs (tid, oid).
	TenantID string `json:"tid"`
	ObjectID string `json:"oid"`
	// Name and PreferredUsername are informational.
	Name              string `json:"name,omitempty"`
	PreferredUsername string `json:"preferred_username,omitempty"`
}

// Grant is what an authorization code stands for: who approved which
// client, for what, and how the client must prove it is the one that asked.
type Grant struct {
	ClientID    string
	RedirectURI string
	// CodeChallenge is the PKCE S256 challenge of the authorization request.
	CodeChallenge string
	// CodeChallengeMethod must be "S256" or empty (meaning S256).
	CodeChallengeMethod string
	// Resource is the resource the client asked for, or the default MCP
	// resource when it asked for none; it becomes the access token's aud.
	Resource string
	Scope    string
	User     User
}

// RedeemRequest is the authorization_code grant of a token request.
type RedeemRequest struct {
	Code         string
	ClientID     string
	RedirectURI  string
	Resource     string // optional; if set it must equal the grant's
	CodeVerifier string
}

// Issued is the result of a successful code redemption or rotation: a new
// refresh token (shown once), its family, and what the access token that
// APIM signs next to it must say.
type Issued struct {
	RefreshToken     string
	RefreshExpiresAt time.Time
	FamilyID         string
	ClientID         string
	Scope            string
	Resource         string
	User             User
}

// codeRecord is the JSON of codes/<sha256hex(code)>.
type codeRecord struct {
	V             int        `json:"v"`
	ClientID      string     `json:"client_id"`
	RedirectURI   string     `json:"redirect_uri"`
	CodeChallenge string     `json:"code_challenge"`
	Resource      string     `json:"resource"`
	Scope         string     `json:"scope"`
	User          User       `json:"user"`
	Created       time.Time  `json:"created"`
	Expires       time.Time  `json:"expires"`
	Consumed      bool       `json:"consumed"`
	ConsumedAt    *time.Time `json:"consumed_at,omitempty"`
	// Family is the family the consuming redeem created; empty when the
	// code was burnt by a failed redeem.
	Family string `json:"family,omitempty"`
}

// CreateCode stores a grant and returns its authorization code, valid for
// CodeTTL and good for one redemption. The client must be registered and
// the redirect URI one of its own (RedirectURIMatches): the policy checked
// both at /authorize, and checking again here means a policy bug cannot
// mint codes for someone else's redirect URI. Bad input is an *Error with
// code invalid_request.
func (s *Store) CreateCode(ctx context.Context, g Grant) (string, error) {
	g, err := validateGrant(g)
	if err != nil {
		return "", err
	}
	client, err := s.getClient(ctx, g.ClientID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", oauthError(CodeInvalidRequest, "client_id is not a registered client")
	}
	if err != nil {
		return "", err
	}
	if !slices.ContainsFunc(client.RedirectURIs, func(r string) bool { return RedirectURIMatches(r, g.RedirectURI) }) {
		return "", oauthError(CodeInvalidRequest, "redirect_uri is not registered for this client")
	}
	now := s.nowUTC()
	code := newSecret()
	rec := codeRecord{
		V:             1,
		ClientID:      g.ClientID,
		RedirectURI:   g.RedirectURI,
		CodeChallenge: g.CodeChallenge,
		Resource:      g.Resource,
		Scope:         g.Scope,
		User:          g.User,
		Created:       now,
		Expires:       now.Add(s.codeTTL),
	}
	if err := s.create(ctx, codeName(hashSecret(code)), rec); err != nil {
		return "", fmt.Errorf("storing the authorization code: %w", err)
	}
	return code, nil
}

func validateGrant(g Grant) (Grant, error) {
	bad := func(format string, args ...any) (Grant, error) {
		return Grant{}, oauthError(CodeInvalidRequest, format, args...)
	}
	if !isID(g.ClientID) && !IsDocumentClientID(g.ClientID) {
		return bad("client_id is missing or malformed")
	}
	if g.RedirectURI == "" || len(g.RedirectURI) > MaxRedirectURILength {
		return bad("redirect_uri is missing or longer than %d characters", MaxRedirectURILength)
	}
	switch g.CodeChallengeMethod {
	case "", ChallengeS256:
		g.CodeChallengeMethod = ChallengeS256
	default:
		return bad("code_challenge_method must be S256")
	}
	if !isBase64URLString(g.CodeChallenge, MinCodeChallengeLength, MaxCodeChallengeLength) {
		return bad("code_challenge must be %d to %d base64url characters", MinCodeChallengeLength, MaxCodeChallengeLength)
	}
	if g.Resource == "" || len(g.Resource) > MaxResourceLength || !printableASCII(g.Resource) {
		return bad("resource is missing, longer than %d characters or not printable ASCII", MaxResourceLength)
	}
	if len(g.Scope) > MaxScopeLength || (g.Scope != "" && !isScopeList(g.Scope)) {
		return bad("scope is not a valid scope list")
	}
	u, err := validateUser(g.User)
	if err != nil {
		return Grant{}, err
	}
	g.User = u
	return g, nil
}

// validateUser checks what the access token will carry: tid and oid become
// the user's storage namespace in the handler, whose token validator
// demands GUIDs and sub = tid:oid, so a grant that would yield a token the
// handler refuses is refused here.
func validateUser(u User) (User, error) {
	bad := func(format string, args ...any) (User, error) {
		return User{}, oauthError(CodeInvalidRequest, format, args...)
	}
	if !guid.Valid(u.TenantID) {
		return bad("tid must be a GUID")
	}
	if !guid.Valid(u.ObjectID) {
		return bad("oid must be a GUID")
	}
	want := u.TenantID + ":" + u.ObjectID
	switch u.Subject {
	case "":
		u.Subject = want
	case want:
	default:
		return bad("sub must be tid:oid")
	}
	for _, f := range []struct{ name, value string }{{"name", u.Name}, {"preferred_username", u.PreferredUsername}} {
		if utf8.RuneCountInString(f.value) > MaxUserTextLength {
			return bad("%s is longer than %d characters", f.name, MaxUserTextLength)
		}
		if err := displayText(f.value); err != nil {
			return bad("%s %s", f.name, err)
		}
	}
	return u, nil
}

// RedeemCode consumes an authorization code (FRONTDOOR section 6).
//
// The code is marked consumed with If-Match on the ETag it was read with,
// so of any number of concurrent redeems exactly one changes it; the others
// re-read and find it consumed. A redeem that finds the code consumed is a
// replay: it fails with invalid_grant and revokes the family the consuming
// redeem created (RFC 6749 section 4.1.2), which also covers a thief racing
// the client.
//
// Every check (expiry, client_id, redirect_uri, resource, PKCE) runs after
// the read, and any failure burns the code: it is consumed without a family,
// so a guessed or intercepted code gets one try at most.
//
// On success the family and first refresh token are created before the
// code is marked, so that a concurrent replay that sees the mark always
// finds the family to revoke; if the mark then loses its race, the unused
// family and token are deleted and nothing was issued.
//
// Errors are *Error with code invalid_request, invalid_grant or
// invalid_target, or storage errors (storage.ErrUnavailable and the like).
func (s *Store) RedeemCode(ctx context.Context, req RedeemRequest) (Issued, error) {
	if req.Code == "" {
		return Issued{}, oauthError(CodeInvalidRequest, "code is required")
	}
	unknown := oauthError(CodeInvalidGrant, "the authorization code is unknown, expired or already used")
	if !plausibleSecret(req.Code) {
		return Issued{}, unknown
	}
	name := codeName(hashSecret(req.Code))

	var (
		issued    Issued
		leftovers []string // records to delete unless the redeem commits
		committed bool
	)
	defer func() {
		if !committed && len(leftovers) > 0 {
			s.cleanup(ctx, leftovers...)
		}
	}()

	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return Issued{}, err
			}
		}
		var rec codeRecord
		etag, err := s.read(ctx, name, &rec)
		if errors.Is(err, storage.ErrNotFound) {
			return Issued{}, unknown
		}
		if err != nil {
			return Issued{}, fmt.Errorf("reading the authorization code: %w", err)
		}
		now := s.nowUTC()

		if rec.Consumed {
			if issued.FamilyID != "" && rec.Family == issued.FamilyID {
				// Our mark landed although the write reported a lost race
				// (the SDK retried a write whose response was lost).
				committed = true
				return issued, nil
			}
			if rec.Family != "" {
				if err := s.revokeFamily(ctx, rec.Family, ReasonCodeReplay); err != nil {
					return Issued{}, err
				}
			}
			return Issued{}, oauthError(CodeInvalidGrant, "the authorization code was already used; tokens issued from it have been revoked")
		}

		rec.Consumed, rec.ConsumedAt = true, &now
		if failure := checkRedeem(rec, req, now); failure != nil {
			// Burn the code: the failed attempt consumes it.
			err := s.replace(ctx, name, rec, etag)
			if errors.Is(err, storage.ErrConflict) {
				continue
			}
			if err != nil {
				return Issued{}, fmt.Errorf("consuming the authorization code: %w", err)
			}
			return Issued{}, failure
		}

		if issued.FamilyID == "" {
			issued, leftovers, err = s.startFamily(ctx, rec)
			if err != nil {
				return Issued{}, err
			}
		}
		rec.Family = issued.FamilyID
		err = s.replace(ctx, name, rec, etag)
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return Issued{}, fmt.Errorf("consuming the authorization code: %w", err)
		}
		committed = true
		return issued, nil
	}
	return Issued{}, contended()
}

// startFamily creates a family and its first refresh token for a grant and
// returns them with the names to delete if the redeem does not commit.
func (s *Store) startFamily(ctx context.Context, rec codeRecord) (Issued, []string, error) {
	fid, err := s.createFamily(ctx, rec.ClientID, rec.User)
	if err != nil {
		return Issued{}, nil, err
	}
	leftovers := []string{familyName(fid)}
	token, hash, ref := s.newRefresh(fid, rec.ClientID, rec.Resource, rec.Scope, rec.User, "")
	if err := s.create(ctx, refreshName(hash), ref); err != nil {
		return Issued{}, leftovers, fmt.Errorf("storing the refresh token: %w", err)
	}
	leftovers = append(leftovers, refreshName(hash))
	return ref.issued(token), leftovers, nil
}

// checkRedeem applies the token endpoint's checks to a code.
func checkRedeem(rec codeRecord, req RedeemRequest, now time.Time) *Error {
	switch {
	case !now.Before(rec.Expires):
		return oauthError(CodeInvalidGrant, "the authorization code has expired")
	case req.ClientID == "":
		return oauthError(CodeInvalidRequest, "client_id is required")
	case req.ClientID != rec.ClientID:
		return oauthError(CodeInvalidGrant, "the authorization code was issued to another client")
	case req.RedirectURI == "":
		return oauthError(CodeInvalidRequest, "redirect_uri is required")
	case req.RedirectURI != rec.RedirectURI:
		// Identical to the authorization request's, not merely matching a
		// registration (RFC 6749 section 4.1.3).
		return oauthError(CodeInvalidGrant, "redirect_uri differs from the authorization request's")
	case req.Resource != "" && req.Resource != rec.Resource:
		// RFC 8707 section 2.2 names this error.
		return oauthError(CodeInvalidTarget, "resource differs from the authorization request's")
	case req.CodeVerifier == "":
		return oauthError(CodeInvalidRequest, "code_verifier is required")
	case !isCodeVerifier(req.CodeVerifier):
		return oauthError(CodeInvalidGrant, "code_verifier must be %d to %d characters of A-Z, a-z, 0-9, '-', '.', '_' and '~'", MinCodeVerifierLength, MaxCodeVerifierLength)
	case !S256Matches(req.CodeVerifier, rec.CodeChallenge):
		return oauthError(CodeInvalidGrant, "code_verifier does not match the code_challenge")
	}
	return nil
}

// S256Matches reports whether base64url(SHA-256(verifier)) equals challenge
// (RFC 7636 section 4.6), comparing in constant time.
func S256Matches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	got := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(got), []byte(challenge)) == 1
}

// isCodeVerifier checks RFC 7636 section 4.1: 43 to 128 unreserved
// characters.
func isCodeVerifier(v string) bool {
	if len(v) < MinCodeVerifierLength || len(v) > MaxCodeVerifierLength {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !isBase64URL(c) && c != '.' && c != '~' {
			return false
		}
	}
	return true
}

func isBase64URLString(s string, minLen, maxLen int) bool {
	if len(s) < minLen || len(s) > maxLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBase64URL(s[i]) {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// isScopeList checks RFC 6749 section 3.3: scope tokens of printable ASCII
// without '"' and '\', separated by single spaces.
func isScopeList(s string) bool {
	if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ' ' {
			if s[i-1] == ' ' {
				return false
			}
			continue
		}
		if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
