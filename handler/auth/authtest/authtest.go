// Package authtest mints MCP access tokens for tests, the way API Management
// does in production: RS256 JWTs with the RFC 9068 header and FRONTDOOR's
// claims, and a JWKS of the public key for the handler to trust.
//
// It deliberately does not use the JWT library the validator uses: tokens
// are assembled and signed here with the standard library, so a bug in that
// library cannot cancel itself out in tests. Every part of a token can be
// overridden, so tests can also mint each kind of bad token (expired, wrong
// audience, alg none, HS256 signed with the public key, foreign key, ...).
package authtest

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"testing"
	"time"
)

// Scope is the scope FRONTDOOR tokens carry.
const Scope = "mcp.tools"

// Issuer holds a signing key and the issuer identifier (the gateway origin).
// Generating a 2048-bit key takes tens of milliseconds, so each test simply
// makes its own Issuer; there is no shared key pool to reason about.
type Issuer struct {
	issuer string
	key    *rsa.PrivateKey
	kid    string
}

// NewIssuer returns an Issuer with a fresh 2048-bit RSA key. issuer is the
// iss of its tokens, e.g. "https://gw.example" (no trailing slash).
func NewIssuer(t testing.TB, issuer string) *Issuer {
	t.Helper()
	key := NewKey(t)
	return &Issuer{issuer: issuer, key: key, kid: Thumbprint(&key.PublicKey)}
}

// NewKey returns a fresh 2048-bit RSA key, e.g. for Claims.SigningKey.
func NewKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("authtest: generate RSA key: %v", err)
	}
	return key
}

// Issuer returns the iss of the tokens.
func (i *Issuer) Issuer() string { return i.issuer }

// Kid returns the key id, the RFC 7638 thumbprint of the public key, as APIM's
// key generator would compute it.
func (i *Issuer) Kid() string { return i.kid }

// Resource returns "<issuer>/mcp", the default audience (FRONTDOOR: a client
// that names no resource gets a token for /mcp).
func (i *Issuer) Resource() string { return i.issuer + "/mcp" }

// PublicKey returns the verification key.
func (i *Issuer) PublicKey() *rsa.PublicKey { return &i.key.PublicKey }

// PrivateKey returns the signing key, e.g. to sign under another Issuer's kid.
func (i *Issuer) PrivateKey() *rsa.PrivateKey { return i.key }

// PublicKeyPEM returns the public key as a PKIX "PUBLIC KEY" PEM block, the
// bytes a key-confusion attacker would use as an HMAC secret.
func (i *Issuer) PublicKeyPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: i.PublicKeyDER()})
}

// PublicKeyDER returns the public key in PKIX DER form.
func (i *Issuer) PublicKeyDER() []byte {
	der, err := x509.MarshalPKIXPublicKey(&i.key.PublicKey)
	if err != nil {
		// An RSA public key always marshals; anything else is a broken stdlib.
		panic(fmt.Sprintf("authtest: marshal public key: %v", err))
	}
	return der
}

// JWKS returns {"keys":[<this issuer's public key>]}, as MCP_TOKEN_JWKS holds it.
func (i *Issuer) JWKS() []byte { return JWKS(i) }

// JWKS returns one key set holding the public keys of all the issuers, as
// during a key rotation.
func JWKS(issuers ...*Issuer) []byte {
	keys := make([]map[string]string, 0, len(issuers))
	for _, i := range issuers {
		keys = append(keys, map[string]string{
			"kty": "RSA",
			"use": "sig",
			"alg": "RS256",
			"kid": i.kid,
			"n":   b64(i.key.N.Bytes()),
			"e":   b64(big.NewInt(int64(i.key.E)).Bytes()),
		})
	}
	out, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(fmt.Sprintf("authtest: marshal JWKS: %v", err))
	}
	return out
}

// Claims describes one token: its claims and, for bad tokens, its header and
// signature. A zero field is left out of the token, so a test can drop any
// claim by clearing it in the result of User.
type Claims struct {
	Issuer            string
	Audience          []string // one entry is encoded as a string unless AudienceArray
	AudienceArray     bool
	Subject           string
	TenantID          string
	ObjectID          string
	Name              string
	PreferredUsername string
	ClientID          string
	Scope             string
	FamilyID          string
	JTI               string
	IssuedAt          time.Time
	NotBefore         time.Time
	ExpiresAt         time.Time
	// Extra claims are added last and win over the fields above, so a test
	// can also give a claim the wrong JSON type (e.g. "exp": "soon").
	Extra map[string]any

	// Alg is the header alg: "" means RS256. "none" yields an unsigned token
	// (empty signature); HS256, HS384 and HS512 sign with HMACSecret. Any
	// other value is written to the header and the token is signed RS256.
	Alg string
	// Typ is the header typ: "" means "at+jwt"; OmitTyp drops it.
	Typ     string
	OmitTyp bool
	// Kid is the header kid: "" means the issuer's; OmitKid drops it.
	Kid     string
	OmitKid bool
	// Header parameters are added last and win over the fields above.
	Header map[string]any
	// SigningKey, if set, signs instead of the issuer's key (kid unchanged).
	SigningKey *rsa.PrivateKey
	// HMACSecret is the key for the HS* algorithms.
	HMACSecret []byte
}

// User returns the claims of a good token for the user tid/oid, as APIM mints
// them: iss the issuer, aud Resource(), sub "<tid>:<oid>", scope mcp.tools,
// valid from now for an hour, with a random jti and fid.
func (i *Issuer) User(tid, oid string) Claims {
	now := time.Now().Truncate(time.Second)
	return Claims{
		Issuer:            i.issuer,
		Audience:          []string{i.Resource()},
		Subject:           tid + ":" + oid,
		TenantID:          tid,
		ObjectID:          oid,
		Name:              "Test User",
		PreferredUsername: "user-" + short(oid) + "@example.com",
		ClientID:          "authtest-client",
		Scope:             Scope,
		FamilyID:          randomID(),
		JTI:               randomID(),
		IssuedAt:          now,
		NotBefore:         now,
		ExpiresAt:         now.Add(time.Hour),
	}
}

// Token mints a good token for tid/oid: Mint(t, User(tid, oid)).
func (i *Issuer) Token(t testing.TB, tid, oid string) string {
	t.Helper()
	return i.Mint(t, i.User(tid, oid))
}

// Mint encodes and signs c.
func (i *Issuer) Mint(t testing.TB, c Claims) string {
	t.Helper()
	header := map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": i.kid}
	if c.Alg != "" {
		header["alg"] = c.Alg
	}
	if c.Typ != "" {
		header["typ"] = c.Typ
	}
	if c.OmitTyp {
		delete(header, "typ")
	}
	if c.Kid != "" {
		header["kid"] = c.Kid
	}
	if c.OmitKid {
		delete(header, "kid")
	}
	for k, v := range c.Header {
		header[k] = v
	}

	signingInput := segment(t, header) + "." + segment(t, c.payload())
	var sig []byte
	switch alg := header["alg"]; alg {
	case "none":
	case "HS256", "HS384", "HS512":
		sig = hmacSign(alg.(string), c.HMACSecret, signingInput)
	default:
		key := i.key
		if c.SigningKey != nil {
			key = c.SigningKey
		}
		digest := sha256.Sum256([]byte(signingInput))
		var err error
		sig, err = rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, digest[:])
		if err != nil {
			t.Fatalf("authtest: sign token: %v", err)
		}
	}
	return signingInput + "." + b64(sig)
}

// payload builds the claims object, leaving zero fields out.
func (c Claims) payload() map[string]any {
	p := map[string]any{}
	str := func(name, v string) {
		if v != "" {
			p[name] = v
		}
	}
	date := func(name string, v time.Time) {
		if !v.IsZero() {
			p[name] = v.Unix()
		}
	}
	str("iss", c.Issuer)
	switch {
	case len(c.Audience) == 1 && !c.AudienceArray:
		p["aud"] = c.Audience[0]
	case len(c.Audience) > 0:
		p["aud"] = c.Audience
	}
	str("sub", c.Subject)
	str("tid", c.TenantID)
	str("oid", c.ObjectID)
	str("name", c.Name)
	str("preferred_username", c.PreferredUsername)
	str("client_id", c.ClientID)
	str("scope", c.Scope)
	str("fid", c.FamilyID)
	str("jti", c.JTI)
	date("iat", c.IssuedAt)
	date("nbf", c.NotBefore)
	date("exp", c.ExpiresAt)
	for k, v := range c.Extra {
		p[k] = v
	}
	return p
}

func hmacSign(alg string, secret []byte, input string) []byte {
	var h func() hash.Hash
	switch alg {
	case "HS256":
		h = sha256.New
	case "HS384":
		h = sha512.New384
	default:
		h = sha512.New
	}
	mac := hmac.New(h, secret)
	mac.Write([]byte(input))
	return mac.Sum(nil)
}

// GUID returns a random version 4 GUID in canonical lower-case form, for
// tid and oid values.
func GUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// randomID returns 128 random bits in base64url, the shape of jti and fid.
func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return b64(b[:])
}

func short(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

// Thumbprint returns the RFC 7638 JWK thumbprint of pub (SHA-256,
// base64url), the kid NewIssuer uses: a key id derived from the key itself
// cannot point at the wrong key.
func Thumbprint(pub *rsa.PublicKey) string {
	// RFC 7638 section 3: required members only, in lexical order, no spaces.
	canonical := `{"e":"` + b64(big.NewInt(int64(pub.E)).Bytes()) + `","kty":"RSA","n":"` + b64(pub.N.Bytes()) + `"}`
	sum := sha256.Sum256([]byte(canonical))
	return b64(sum[:])
}

func segment(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("authtest: encode token segment: %v", err)
	}
	return b64(b)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Tamper returns token with its payload replaced by the JSON of claims while
// keeping the original header and signature, i.e. a token whose signature no
// longer matches.
func Tamper(t testing.TB, token string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("authtest: Tamper: token has %d segments, want 3", len(parts))
	}
	return parts[0] + "." + segment(t, claims) + "." + parts[2]
}
