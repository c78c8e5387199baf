package auth_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

func TestValidate(t *testing.T) {
	f := newFixture(t)
	now := f.now
	other := authtest.NewIssuer(t, gw)
	good := f.token(t, nil)
	segs := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString

	tests := []struct {
		name   string
		mutate func(*authtest.Claims)
		raw    string // used instead of mutate when set
		reason string // "" means the token is accepted
		aud    string // accepted audience, default mcp
	}{
		{name: "valid"},
		{name: "typ in upper case", mutate: func(c *authtest.Claims) { c.Typ = "AT+JWT" }},
		{name: "typ as media type", mutate: func(c *authtest.Claims) { c.Typ = "application/at+jwt" }},

		// Time.
		{name: "expired beyond leeway", mutate: func(c *authtest.Claims) { c.ExpiresAt = now.Add(-61 * time.Second) }, reason: "token has expired"},
		{name: "expired within leeway", mutate: func(c *authtest.Claims) { c.ExpiresAt = now.Add(-59 * time.Second) }},
		{name: "expires exactly at the end of leeway", mutate: func(c *authtest.Claims) { c.ExpiresAt = now.Add(-time.Minute) }, reason: "token has expired"},
		{name: "no exp", mutate: func(c *authtest.Claims) { c.ExpiresAt = time.Time{} }, reason: "token has no exp claim"},
		{name: "exp of the wrong type", mutate: func(c *authtest.Claims) { c.Extra = map[string]any{"exp": "tomorrow"} }, reason: "token is malformed"},
		{name: "not yet valid", mutate: func(c *authtest.Claims) { c.NotBefore = now.Add(2 * time.Minute) }, reason: "token is not valid yet"},
		{name: "nbf within leeway", mutate: func(c *authtest.Claims) { c.NotBefore = now.Add(59 * time.Second) }},
		{name: "no nbf", mutate: func(c *authtest.Claims) { c.NotBefore = time.Time{} }},
		{name: "issued in the future", mutate: func(c *authtest.Claims) { c.IssuedAt = now.Add(2 * time.Minute) }, reason: "token was issued in the future"},
		{name: "iat within leeway", mutate: func(c *authtest.Claims) { c.IssuedAt = now.Add(59 * time.Second) }},

		// Issuer and audience.
		{name: "wrong issuer", mutate: func(c *authtest.Claims) { c.Issuer = "https://evil.example" }, reason: "token issuer is not accepted"},
		{name: "issuer with trailing slash", mutate: func(c *authtest.Claims) { c.Issuer = gw + "/" }, reason: "token issuer is not accepted"},
		{name: "no issuer", mutate: func(c *authtest.Claims) { c.Issuer = "" }, reason: "token has no iss claim"},
		{name: "wrong audience", mutate: func(c *authtest.Claims) { c.Audience = []string{gw + "/other"} }, reason: "token audience is not accepted"},
		{name: "audience is the gateway", mutate: func(c *authtest.Claims) { c.Audience = []string{gw} }, reason: "token audience is not accepted"},
		{name: "no audience", mutate: func(c *authtest.Claims) { c.Audience = nil }, reason: "token has no aud claim"},
		{name: "sse audience", mutate: func(c *authtest.Claims) { c.Audience = []string{sse} }, aud: sse},
		{name: "audience array of one", mutate: func(c *authtest.Claims) { c.AudienceArray = true }},
		{name: "audience array with a match", mutate: func(c *authtest.Claims) { c.Audience = []string{"https://elsewhere.example", sse} }, aud: sse},
		{name: "audience array without a match", mutate: func(c *authtest.Claims) { c.Audience = []string{"https://a.example", "https://b.example"} }, reason: "token audience is not accepted"},
		{name: "audience of the wrong type", mutate: func(c *authtest.Claims) { c.Extra = map[string]any{"aud": 42} }, reason: "token is malformed"},

		// Keys and algorithms.
		{name: "unknown kid", mutate: func(c *authtest.Claims) { c.Kid = "not-a-known-kid" }, reason: "token signing key is unknown"},
		{name: "no kid", mutate: func(c *authtest.Claims) { c.OmitKid = true }, reason: "token has no key id"},
		{name: "kid of the wrong type", mutate: func(c *authtest.Claims) { c.Header = map[string]any{"kid": 7} }, reason: "token has no key id"},
		{name: "another RSA key under a known kid", mutate: func(c *authtest.Claims) { c.SigningKey = other.PrivateKey() }, reason: "token signature is invalid"},
		{name: "payload changed after signing", raw: authtest.Tamper(t, good, map[string]any{"sub": "x"}), reason: "token signature is invalid"},
		{name: "alg none", mutate: func(c *authtest.Claims) { c.Alg = "none" }, reason: "token must be signed with RS256"},
		{name: "alg none with the RS256 signature kept", raw: b64([]byte(`{"alg":"none","typ":"at+jwt","kid":"`+f.iss.Kid()+`"}`)) + "." + segs[1] + "." + segs[2], reason: "token must be signed with RS256"},
		{name: "alg None", mutate: func(c *authtest.Claims) { c.Alg = "None" }, reason: "token must be signed with RS256"},
		{name: "HS256 keyed with the public key PEM", mutate: func(c *authtest.Claims) { c.Alg, c.HMACSecret = "HS256", f.iss.PublicKeyPEM() }, reason: "token must be signed with RS256"},
		{name: "HS256 keyed with the public key DER", mutate: func(c *authtest.Claims) { c.Alg, c.HMACSecret = "HS256", f.iss.PublicKeyDER() }, reason: "token must be signed with RS256"},
		{name: "HS256 keyed with the JWKS", mutate: func(c *authtest.Claims) { c.Alg, c.HMACSecret = "HS256", f.iss.JWKS() }, reason: "token must be signed with RS256"},
		{name: "HS512", mutate: func(c *authtest.Claims) { c.Alg, c.HMACSecret = "HS512", f.iss.PublicKeyPEM() }, reason: "token must be signed with RS256"},
		{name: "RS384 header", mutate: func(c *authtest.Claims) { c.Alg = "RS384" }, reason: "token must be signed with RS256"},
		{name: "PS256 header", mutate: func(c *authtest.Claims) { c.Alg = "PS256" }, reason: "token must be signed with RS256"},
		{name: "unknown alg", mutate: func(c *authtest.Claims) { c.Alg = "XX999" }, reason: "token must be signed with RS256"},
		{name: "no alg", mutate: func(c *authtest.Claims) { c.Header = map[string]any{"alg": nil} }, reason: "token must be signed with RS256"},
		{name: "rs256 in lower case", mutate: func(c *authtest.Claims) { c.Alg = "rs256" }, reason: "token must be signed with RS256"},

		// Header.
		{name: "typ JWT", mutate: func(c *authtest.Claims) { c.Typ = "JWT" }, reason: "token type must be at+jwt"},
		{name: "no typ", mutate: func(c *authtest.Claims) { c.OmitTyp = true }, reason: "token type must be at+jwt"},
		{name: "typ of the wrong type", mutate: func(c *authtest.Claims) { c.Header = map[string]any{"typ": 1} }, reason: "token type must be at+jwt"},
		{name: "typ with a suffix", mutate: func(c *authtest.Claims) { c.Typ = "at+jwt; x=y" }, reason: "token type must be at+jwt"},
		{name: "crit header", mutate: func(c *authtest.Claims) { c.Header = map[string]any{"crit": []string{"exp"}} }, reason: "token uses unsupported critical header parameters"},

		// Identity claims.
		{name: "tid not a GUID", mutate: func(c *authtest.Claims) { c.TenantID, c.Subject = "contoso", "contoso:"+oid }, reason: "token tid claim must be a GUID"},
		{name: "tid with a path", mutate: func(c *authtest.Claims) { c.TenantID = "../../72f988bf-86f1-41af-91ab-2d7c" }, reason: "token tid claim must be a GUID"},
		{name: "tid in braces", mutate: func(c *authtest.Claims) { c.TenantID = "{" + tid + "}" }, reason: "token tid claim must be a GUID"},
		{name: "no tid", mutate: func(c *authtest.Claims) { c.TenantID = "" }, reason: "token tid claim must be a GUID"},
		{name: "oid not a GUID", mutate: func(c *authtest.Claims) { c.ObjectID, c.Subject = "alice", tid+":alice" }, reason: "token oid claim must be a GUID"},
		{name: "oid GUID with a non-hex digit", mutate: func(c *authtest.Claims) { c.ObjectID = "00000000-0000-0000-0000-00000000000g" }, reason: "token oid claim must be a GUID"},
		{name: "no oid", mutate: func(c *authtest.Claims) { c.ObjectID = "" }, reason: "token oid claim must be a GUID"},
		{name: "sub of another user", mutate: func(c *authtest.Claims) { c.Subject = tid + ":00000000-0000-0000-0000-0000000000b2" }, reason: "token sub claim must be tid:oid"},
		{name: "sub in another case", mutate: func(c *authtest.Claims) { c.Subject = strings.ToLower(c.Subject) }, reason: "token sub claim must be tid:oid"},
		{name: "no sub", mutate: func(c *authtest.Claims) { c.Subject = "" }, reason: "token sub claim must be tid:oid"},
		{name: "no fid", mutate: func(c *authtest.Claims) { c.FamilyID = "" }, reason: "token fid claim is missing or malformed"},
		{name: "fid with a path", mutate: func(c *authtest.Claims) { c.FamilyID = "../families/x" }, reason: "token fid claim is missing or malformed"},
		{name: "fid as a GUID", mutate: func(c *authtest.Claims) { c.FamilyID = authtest.GUID() }},
		{name: "claim of the wrong type", mutate: func(c *authtest.Claims) { c.Extra = map[string]any{"name": []int{1}} }, reason: "token is malformed"},
		{name: "optional claims absent", mutate: func(c *authtest.Claims) {
			c.Name, c.PreferredUsername, c.ClientID, c.Scope, c.JTI = "", "", "", "", ""
		}},

		// Malformed.
		{name: "empty", raw: "", reason: "token is empty"},
		{name: "garbage", raw: "not a token at all", reason: "token is malformed"},
		{name: "two segments", raw: segs[0] + "." + segs[1], reason: "token is malformed"},
		{name: "four segments", raw: good + ".x", reason: "token is malformed"},
		{name: "bad base64 header", raw: "!!!." + segs[1] + "." + segs[2], reason: "token is malformed"},
		{name: "standard base64 payload", raw: segs[0] + "." + base64.StdEncoding.EncodeToString([]byte(`{"a":"???>>>"}`)) + "." + segs[2], reason: "token is malformed"},
		{name: "bad base64 signature", raw: segs[0] + "." + segs[1] + ".@@@@", reason: "token is malformed"},
		{name: "non-canonical base64 signature", raw: good[:len(good)-1] + sibling(good[len(good)-1]), reason: "token is malformed"},
		{name: "bad JSON header", raw: b64([]byte(`{"alg":`)) + "." + segs[1] + "." + segs[2], reason: "token is malformed"},
		{name: "bad JSON payload", raw: segs[0] + "." + b64([]byte(`{not json`)) + "." + segs[2], reason: "token is malformed"},
		{name: "payload is an array", raw: segs[0] + "." + b64([]byte(`[1,2]`)) + "." + segs[2], reason: "token is malformed"},
		{name: "JWE-shaped", raw: strings.Repeat("e30.", 4) + "e30", reason: "token is malformed"},
		{name: "oversize", mutate: func(c *authtest.Claims) { c.Extra = map[string]any{"pad": strings.Repeat("x", auth.MaxTokenSize)} }, reason: "token is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := tt.raw
			if raw == "" && tt.reason != "token is empty" {
				raw = f.token(t, tt.mutate)
			}
			id, err := f.v.Validate(raw)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("Validate: %v, want success", err)
				}
				wantAud := tt.aud
				if wantAud == "" {
					wantAud = mcp
				}
				if id.Audience != wantAud || id.Owner() != owner {
					t.Errorf("Audience, Owner = %q, %q; want %q, %q", id.Audience, id.Owner(), wantAud, owner)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted the token, want %q", tt.reason)
			}
			checkRefusal(t, raw, id, err, tt.reason)
		})
	}
}

// checkRefusal asserts the shape every refusal must have.
func checkRefusal(t *testing.T, raw string, id auth.Identity, err error, reason string) {
	t.Helper()
	var te *auth.TokenError
	if !errors.As(err, &te) {
		t.Fatalf("error %v (%T) is not a *TokenError", err, err)
	}
	if te.Reason != reason {
		t.Errorf("Reason = %q, want %q (cause: %v)", te.Reason, reason, errors.Unwrap(err))
	}
	if !errors.Is(err, auth.ErrInvalidToken) {
		t.Error("errors.Is(err, ErrInvalidToken) = false")
	}
	if err.Error() != "invalid token: "+reason {
		t.Errorf("Error() = %q", err.Error())
	}
	if id != (auth.Identity{}) {
		t.Errorf("refused token still yielded an identity: %+v", id)
	}
	for _, seg := range strings.Split(raw, ".") {
		if len(seg) >= 8 && strings.Contains(err.Error(), seg) {
			t.Errorf("error message echoes the token: %q", err.Error())
		}
	}
}

// sibling returns a base64url character with the same top two bits as c but
// different low bits, so that, as the last character of a 256-byte signature
// (which uses only its top two bits), it decodes to the same bytes.
func sibling(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, c)
	return string(alphabet[i^1])
}

func TestValidateIdentity(t *testing.T) {
	f := newFixture(t)
	c := f.claims()
	id, err := f.v.Validate(f.iss.Mint(t, c))
	if err != nil {
		t.Fatal(err)
	}
	want := auth.Identity{
		Subject:           tid + ":" + oid,
		TenantID:          tid,
		ObjectID:          oid,
		Name:              c.Name,
		PreferredUsername: c.PreferredUsername,
		ClientID:          c.ClientID,
		Scope:             "mcp.tools",
		FamilyID:          c.FamilyID,
		Audience:          mcp,
		ExpiresAt:         c.ExpiresAt,
	}
	if !id.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("ExpiresAt = %v, want %v", id.ExpiresAt, want.ExpiresAt)
	}
	id.ExpiresAt = want.ExpiresAt
	if id != want {
		t.Errorf("identity =\n%+v\nwant\n%+v", id, want)
	}
}

// A token exactly at the size limit is looked at; one byte more is not.
func TestValidateSizeLimit(t *testing.T) {
	f := newFixture(t)
	mint := func(pad int) string {
		return f.token(t, func(c *authtest.Claims) { c.Extra = map[string]any{"pad": strings.Repeat("x", pad)} })
	}
	// Each 3 bytes of padding add 4 characters; find the largest token that fits.
	pad := (auth.MaxTokenSize - len(mint(0))) * 3 / 4
	for len(mint(pad)) > auth.MaxTokenSize {
		pad--
	}
	for len(mint(pad+1)) <= auth.MaxTokenSize {
		pad++
	}
	fits := mint(pad)
	if _, err := f.v.Validate(fits); err != nil {
		t.Errorf("token of %d bytes refused: %v", len(fits), err)
	}
	over := mint(pad + 1)
	if _, err := f.v.Validate(over); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Errorf("token of %d bytes: err = %v, want too large", len(over), err)
	}
}

// During a rotation the JWKS holds the current and the next key, and tokens
// of both validate.
func TestValidateKeyRotation(t *testing.T) {
	current := authtest.NewIssuer(t, gw)
	next := authtest.NewIssuer(t, gw)
	keys, err := auth.ParseJWKS(authtest.JWKS(current, next))
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewValidator(auth.ValidatorOptions{Keys: keys, Issuer: gw, Audiences: []string{mcp}})
	if err != nil {
		t.Fatal(err)
	}
	for _, iss := range []*authtest.Issuer{current, next} {
		if _, err := v.Validate(iss.Token(t, tid, oid)); err != nil {
			t.Errorf("token of kid %s: %v", iss.Kid(), err)
		}
	}
	// The current key signing under the next key's kid is still a forgery.
	c := current.User(tid, oid)
	c.Kid = next.Kid()
	if _, err := v.Validate(current.Mint(t, c)); err == nil {
		t.Error("token signed by one key under the other key's kid was accepted")
	}
}

// The default clock is the real one: a token minted now validates.
func TestValidateRealClock(t *testing.T) {
	iss := authtest.NewIssuer(t, gw)
	keys, err := auth.ParseJWKS(iss.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewValidator(auth.ValidatorOptions{Keys: keys, Issuer: gw, Audiences: []string{mcp}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Validate(iss.Token(t, authtest.GUID(), authtest.GUID())); err != nil {
		t.Fatal(err)
	}
}

func TestValidatorLeeway(t *testing.T) {
	iss := authtest.NewIssuer(t, gw)
	keys, err := auth.ParseJWKS(iss.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	now := fixedNow()
	expiredAgo := func(d time.Duration) string {
		c := iss.User(tid, oid)
		c.IssuedAt, c.NotBefore, c.ExpiresAt = now.Add(-time.Hour), now.Add(-time.Hour), now.Add(-d)
		return iss.Mint(t, c)
	}
	tests := []struct {
		leeway time.Duration
		ago    time.Duration
		ok     bool
	}{
		{0, 59 * time.Second, true}, // zero means the default minute
		{0, 61 * time.Second, false},
		{10 * time.Second, 9 * time.Second, true},
		{10 * time.Second, 30 * time.Second, false},
		{time.Minute, 59 * time.Second, true},
	}
	for _, tt := range tests {
		v, err := auth.NewValidator(auth.ValidatorOptions{
			Keys: keys, Issuer: gw, Audiences: []string{mcp}, Leeway: tt.leeway,
			Now: fixedNow,
		})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Validate(expiredAgo(tt.ago))
		if (err == nil) != tt.ok {
			t.Errorf("leeway %v, expired %v ago: err = %v, want ok=%v", tt.leeway, tt.ago, err, tt.ok)
		}
	}
}

func TestNewValidatorErrors(t *testing.T) {
	keys, err := auth.ParseJWKS(authtest.NewIssuer(t, gw).JWKS())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts auth.ValidatorOptions
		want string
	}{
		{"no keys", auth.ValidatorOptions{Issuer: gw, Audiences: []string{mcp}}, "signing key"},
		{"no issuer", auth.ValidatorOptions{Keys: keys, Audiences: []string{mcp}}, "needs an issuer"},
		{"issuer with trailing slash", auth.ValidatorOptions{Keys: keys, Issuer: gw + "/", Audiences: []string{mcp}}, "trailing slash"},
		{"no audiences", auth.ValidatorOptions{Keys: keys, Issuer: gw}, "audience"},
		{"empty audience", auth.ValidatorOptions{Keys: keys, Issuer: gw, Audiences: []string{""}}, "needs an audience"},
		{"audience with trailing slash", auth.ValidatorOptions{Keys: keys, Issuer: gw, Audiences: []string{mcp + "/"}}, "trailing slash"},
		{"leeway too large", auth.ValidatorOptions{Keys: keys, Issuer: gw, Audiences: []string{mcp}, Leeway: 61 * time.Second}, "exceeds the maximum"},
		{"negative leeway", auth.ValidatorOptions{Keys: keys, Issuer: gw, Audiences: []string{mcp}, Leeway: -time.Second}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := auth.NewValidator(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewValidator = %v, %v; want an error containing %q", v, err, tt.want)
			}
		})
	}
}

// One Validator serves every request of the handler at once.
func TestValidateConcurrent(t *testing.T) {
	f := newFixture(t)
	good := f.token(t, nil)
	bad := f.token(t, func(c *authtest.Claims) { c.Typ = "JWT" })
	errs := make(chan error, 16)
	for i := range 16 {
		go func() {
			raw, wantOK := good, true
			if i%2 == 1 {
				raw, wantOK = bad, false
			}
			var err error
			for range 50 {
				if _, verr := f.v.Validate(raw); (verr == nil) != wantOK {
					err = fmt.Errorf("goroutine %d: Validate = %v", i, verr)
					break
				}
			}
			errs <- err
		}()
	}
	for range 16 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestVerifiedTokensExpire checks the cache of verified tokens: a token
// accepted once is accepted again without re-verification, but not after it
// expires.
func TestVerifiedTokensExpire(t *testing.T) {
	iss := authtest.NewIssuer(t, gw)
	keys, err := auth.ParseJWKS(iss.JWKS())
	if err != nil {
		t.Fatal(err)
	}
	now := fixedNow()
	v, err := auth.NewValidator(auth.ValidatorOptions{
		Keys: keys, Issuer: gw, Audiences: []string{mcp}, Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.User(authtest.GUID(), authtest.GUID())
	c.IssuedAt, c.NotBefore, c.ExpiresAt = now.Add(-time.Minute), now.Add(-time.Minute), now.Add(10*time.Minute)
	tok := iss.Mint(t, c)
	first, err := v.Validate(tok)
	if err != nil {
		t.Fatal(err)
	}
	again, err := v.Validate(tok)
	if err != nil || again != first {
		t.Fatalf("second validation: %v, identity %+v vs %+v", err, again, first)
	}
	now = now.Add(10*time.Minute + 59*time.Second) // within the minute of leeway
	if _, err := v.Validate(tok); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := v.Validate(tok); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("after expiry: err = %v, want an invalid token", err)
	}
	// A token that differs in one byte is not the cached one.
	if _, err := v.Validate(tok[:len(tok)-1] + "A"); err == nil {
		t.Fatal("altered token accepted")
	}
}
