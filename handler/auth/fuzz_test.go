package auth_test

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

// FuzzValidate feeds arbitrary strings to Validate: it must never panic,
// must refuse with a *TokenError that does not echo the input, and must only
// return an identity for a token that independently checks out as signed by
// the trusted key.
func FuzzValidate(f *testing.F) {
	fx := newFixture(f)
	good := fx.token(f, nil)
	segs := strings.Split(good, ".")
	seeds := []string{
		good,
		fx.token(f, func(c *authtest.Claims) { c.Alg = "none" }),
		fx.token(f, func(c *authtest.Claims) { c.Alg, c.HMACSecret = "HS256", fx.iss.PublicKeyPEM() }),
		fx.token(f, func(c *authtest.Claims) { c.Typ = "JWT" }),
		fx.token(f, func(c *authtest.Claims) { c.Audience = []string{mcp, sse}; c.AudienceArray = true }),
		fx.token(f, func(c *authtest.Claims) { c.Extra = map[string]any{"exp": 1e300, "nbf": -1e300} }),
		segs[0] + "." + segs[1] + ".",
		segs[0] + ".." + segs[2],
		"", ".", "..", "...", "a.b.c", "e30.e30.e30", "eyJhbGciOiJub25lIn0.e30.",
		strings.Repeat("A", auth.MaxTokenSize+1),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	pub := fx.iss.PublicKey()
	kid := fx.iss.Kid()

	f.Fuzz(func(t *testing.T, raw string) {
		id, err := fx.v.Validate(raw)
		if err != nil {
			var te *auth.TokenError
			if !errors.As(err, &te) || te.Reason == "" {
				t.Fatalf("error %v (%T) is not a *TokenError with a reason", err, err)
			}
			if id != (auth.Identity{}) {
				t.Fatalf("refused token yielded an identity: %+v", id)
			}
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatalf("error echoes the input: %q", err)
			}
			return
		}
		// Accepted: check it the long way, without the JWT library.
		parts := strings.Split(raw, ".")
		if len(parts) != 3 {
			t.Fatalf("accepted a token of %d segments", len(parts))
		}
		var header struct{ Alg, Typ, Kid string }
		if err := json.Unmarshal(decode(t, parts[0]), &header); err != nil {
			t.Fatalf("accepted a token with header %q: %v", parts[0], err)
		}
		if header.Alg != "RS256" || header.Kid != kid || !strings.EqualFold(strings.TrimPrefix(strings.ToLower(header.Typ), "application/"), "at+jwt") {
			t.Fatalf("accepted header %+v", header)
		}
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], decode(t, parts[2])); err != nil {
			t.Fatalf("accepted a token whose signature does not verify: %v", err)
		}
		if id.Subject != id.TenantID+":"+id.ObjectID || id.FamilyID == "" ||
			(id.Audience != mcp && id.Audience != sse) || !id.ExpiresAt.After(fixedNow().Add(-time.Minute)) {
			t.Fatalf("accepted identity %+v", id)
		}
	})
}

func decode(t *testing.T, seg string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("accepted a token with segment %q: %v", seg, err)
	}
	return b
}
