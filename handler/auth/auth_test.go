package auth_test

import (
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

// Shared fixtures of the tests in this package.
const (
	gw    = "https://gw.example"
	mcp   = gw + "/mcp"
	sse   = gw + "/mcp/sse"
	tid   = "72F988BF-86F1-41AF-91AB-2D7CD011DB47" // upper case on purpose: Owner lowers it
	oid   = "00000000-0000-0000-0000-0000000000a1"
	owner = "72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-0000000000a1"
)

// fixedNow is the validators' clock: fixed, so expiry cases are exact.
func fixedNow() time.Time { return time.Unix(1_900_000_000, 0) }

// fixture is an issuer and a validator that trusts it, with its clock.
type fixture struct {
	iss *authtest.Issuer
	v   *auth.Validator
	now time.Time
}

func newFixture(t testing.TB) fixture {
	t.Helper()
	iss := authtest.NewIssuer(t, gw)
	keys, err := auth.ParseJWKS(iss.JWKS())
	if err != nil {
		t.Fatalf("ParseJWKS: %v", err)
	}
	v, err := auth.NewValidator(auth.ValidatorOptions{
		Keys:      keys,
		Issuer:    gw,
		Audiences: []string{mcp, sse},
		Now:       fixedNow,
	})
	if err != nil {
		t.Fatalf("NewValidator: %v", err)
	}
	return fixture{iss: iss, v: v, now: fixedNow()}
}

// claims are good claims valid at now.
func (f fixture) claims() authtest.Claims {
	c := f.iss.User(tid, oid)
	c.IssuedAt = f.now.Add(-time.Minute)
	c.NotBefore = f.now.Add(-time.Minute)
	c.ExpiresAt = f.now.Add(59 * time.Minute)
	return c
}

// token mints good claims after mutate has changed them.
func (f fixture) token(t testing.TB, mutate func(*authtest.Claims)) string {
	t.Helper()
	c := f.claims()
	if mutate != nil {
		mutate(&c)
	}
	return f.iss.Mint(t, c)
}
