package authtest_test

import (
	"crypto"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

const gw = "https://gw.example"

// decoded splits a token into its header, claims and signature.
func decoded(t *testing.T, token string) (header, claims map[string]any, sig []byte) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments", len(parts))
	}
	dec := func(s string) []byte {
		b, err := base64.RawURLEncoding.Strict().DecodeString(s)
		if err != nil {
			t.Fatalf("segment %q: %v", s, err)
		}
		return b
	}
	if err := json.Unmarshal(dec(parts[0]), &header); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(dec(parts[1]), &claims); err != nil {
		t.Fatal(err)
	}
	return header, claims, dec(parts[2])
}

func TestMintGoodToken(t *testing.T) {
	iss := authtest.NewIssuer(t, gw)
	tid, oid := authtest.GUID(), authtest.GUID()
	before := time.Now().Truncate(time.Second)
	token := iss.Token(t, tid, oid)
	header, claims, sig := decoded(t, token)

	if header["alg"] != "RS256" || header["typ"] != "at+jwt" || header["kid"] != iss.Kid() || len(header) != 3 {
		t.Errorf("header = %v", header)
	}
	for name, want := range map[string]any{
		"iss": gw, "aud": gw + "/mcp", "sub": tid + ":" + oid, "tid": tid, "oid": oid,
		"scope": "mcp.tools", "client_id": "authtest-client", "name": "Test User",
	} {
		if claims[name] != want {
			t.Errorf("claim %s = %v, want %v", name, claims[name], want)
		}
	}
	for _, name := range []string{"preferred_username", "fid", "jti"} {
		if s, _ := claims[name].(string); s == "" {
			t.Errorf("claim %s missing", name)
		}
	}
	iat, nbf, exp := claims["iat"].(float64), claims["nbf"].(float64), claims["exp"].(float64)
	if iat < float64(before.Unix()) || nbf != iat || exp != iat+3600 {
		t.Errorf("iat, nbf, exp = %v, %v, %v", iat, nbf, exp)
	}

	// The signature verifies with the published key, checked without any JWT code.
	parts := strings.Split(token, ".")
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(iss.PublicKey(), crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("signature: %v", err)
	}

	// jti and fid differ between tokens.
	_, again, _ := decoded(t, iss.Token(t, tid, oid))
	if again["jti"] == claims["jti"] || again["fid"] == claims["fid"] {
		t.Error("jti or fid repeated across tokens")
	}
}

func TestMintOverrides(t *testing.T) {
	iss := authtest.NewIssuer(t, gw)
	other := authtest.NewIssuer(t, gw)
	base := iss.User(authtest.GUID(), authtest.GUID())

	t.Run("zero fields are left out", func(t *testing.T) {
		c := base
		c.Subject, c.ExpiresAt, c.Audience, c.FamilyID = "", time.Time{}, nil, ""
		_, claims, _ := decoded(t, iss.Mint(t, c))
		for _, name := range []string{"sub", "exp", "aud", "fid"} {
			if _, ok := claims[name]; ok {
				t.Errorf("claim %s present", name)
			}
		}
	})
	t.Run("audience forms", func(t *testing.T) {
		c := base
		c.AudienceArray = true
		if _, claims, _ := decoded(t, iss.Mint(t, c)); claims["aud"].([]any)[0] != gw+"/mcp" {
			t.Errorf("aud = %v", claims["aud"])
		}
		c.AudienceArray = false
		c.Audience = []string{"a", "b"}
		if _, claims, _ := decoded(t, iss.Mint(t, c)); len(claims["aud"].([]any)) != 2 {
			t.Errorf("aud = %v", claims["aud"])
		}
	})
	t.Run("extra claims win", func(t *testing.T) {
		c := base
		c.Extra = map[string]any{"exp": "soon", "custom": true}
		_, claims, _ := decoded(t, iss.Mint(t, c))
		if claims["exp"] != "soon" || claims["custom"] != true {
			t.Errorf("claims = %v", claims)
		}
	})
	t.Run("header fields", func(t *testing.T) {
		c := base
		c.Typ, c.Kid = "JWT", "k2"
		c.Header = map[string]any{"crit": []string{"x"}}
		header, _, _ := decoded(t, iss.Mint(t, c))
		if header["typ"] != "JWT" || header["kid"] != "k2" || header["crit"] == nil {
			t.Errorf("header = %v", header)
		}
		c.OmitTyp, c.OmitKid = true, true
		header, _, _ = decoded(t, iss.Mint(t, c))
		if _, ok := header["typ"]; ok {
			t.Error("typ present")
		}
		if _, ok := header["kid"]; ok {
			t.Error("kid present")
		}
	})
	t.Run("alg none", func(t *testing.T) {
		c := base
		c.Alg = "none"
		token := iss.Mint(t, c)
		header, _, sig := decoded(t, token)
		if header["alg"] != "none" || len(sig) != 0 || !strings.HasSuffix(token, ".") {
			t.Errorf("header %v, signature %d bytes", header, len(sig))
		}
	})
	t.Run("HS256", func(t *testing.T) {
		c := base
		c.Alg, c.HMACSecret = "HS256", iss.PublicKeyPEM()
		token := iss.Mint(t, c)
		parts := strings.Split(token, ".")
		mac := hmac.New(sha256.New, iss.PublicKeyPEM())
		mac.Write([]byte(parts[0] + "." + parts[1]))
		if _, _, sig := decoded(t, token); !hmac.Equal(sig, mac.Sum(nil)) {
			t.Error("HS256 signature does not match")
		}
	})
	t.Run("signing key", func(t *testing.T) {
		c := base
		c.SigningKey = other.PrivateKey()
		token := iss.Mint(t, c)
		header, _, sig := decoded(t, token)
		parts := strings.Split(token, ".")
		digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
		if header["kid"] != iss.Kid() || rsa.VerifyPKCS1v15(other.PublicKey(), crypto.SHA256, digest[:], sig) != nil {
			t.Error("token not signed by the override key under the issuer's kid")
		}
	})
	t.Run("tamper", func(t *testing.T) {
		token := iss.Mint(t, base)
		tampered := authtest.Tamper(t, token, map[string]any{"sub": "x"})
		_, claims, _ := decoded(t, tampered)
		if claims["sub"] != "x" || strings.Split(tampered, ".")[2] != strings.Split(token, ".")[2] {
			t.Errorf("Tamper = %v", claims)
		}
	})
}

func TestJWKS(t *testing.T) {
	a := authtest.NewIssuer(t, gw)
	b := authtest.NewIssuer(t, gw)
	var set struct {
		Keys []map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(authtest.JWKS(a, b), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0]["kid"] != a.Kid() || set.Keys[1]["kid"] != b.Kid() {
		t.Fatalf("keys = %v", set.Keys)
	}
	k := set.Keys[0]
	if k["kty"] != "RSA" || k["use"] != "sig" || k["alg"] != "RS256" || k["e"] != "AQAB" {
		t.Errorf("key = %v", k)
	}
	n, err := base64.RawURLEncoding.DecodeString(k["n"])
	if err != nil || new(big.Int).SetBytes(n).Cmp(a.PublicKey().N) != 0 || a.PublicKey().N.BitLen() != 2048 {
		t.Errorf("n does not match the public key (%v)", err)
	}
	if a.Kid() == b.Kid() {
		t.Error("two keys share a kid")
	}
	if !strings.HasPrefix(string(a.PublicKeyPEM()), "-----BEGIN PUBLIC KEY-----") {
		t.Errorf("PublicKeyPEM = %q", a.PublicKeyPEM()[:30])
	}
}

// The kid is the RFC 7638 thumbprint; the RFC's own example (section 3.1)
// pins the canonical form.
func TestKidIsThumbprint(t *testing.T) {
	const n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	nb, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil {
		t.Fatal(err)
	}
	rfc := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: 65537}
	if got := authtest.Thumbprint(rfc); got != "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs" {
		t.Errorf("Thumbprint = %s", got)
	}
	iss := authtest.NewIssuer(t, gw)
	if iss.Kid() != authtest.Thumbprint(iss.PublicKey()) {
		t.Error("Kid is not the thumbprint")
	}
}

func TestGUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := authtest.GUID(), authtest.GUID()
	if !re.MatchString(a) || a == b {
		t.Errorf("GUID() = %s, %s", a, b)
	}
}
