package auth_test

import (
	"encoding/base64"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

func TestParseJWKS(t *testing.T) {
	a := authtest.NewIssuer(t, gw)
	b := authtest.NewIssuer(t, gw)
	keys, err := auth.ParseJWKS(authtest.JWKS(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if keys.Len() != 2 || !slices.Equal(keys.Kids(), []string{a.Kid(), b.Kid()}) {
		t.Errorf("Kids() = %v, want [%s %s]", keys.Kids(), a.Kid(), b.Kid())
	}
}

// jwk returns the JWK of a good 2048-bit key as a map a test can spoil.
func jwk(t *testing.T, iss *authtest.Issuer) map[string]any {
	t.Helper()
	var set struct{ Keys []map[string]any }
	if err := json.Unmarshal(iss.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	return set.Keys[0]
}

func TestParseJWKSKeys(t *testing.T) {
	iss := authtest.NewIssuer(t, gw)
	b64 := base64.RawURLEncoding.EncodeToString
	// modulus returns an odd number of exactly bits bits: key size is all the
	// parser can check, so it need not be a real RSA modulus.
	modulus := func(bits int) string {
		n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
		return b64(n.SetBit(n, 0, 1).Bytes())
	}
	n := jwk(t, iss)["n"].(string)

	tests := []struct {
		name   string
		mutate func(k map[string]any)
		want   string // "" means accepted
	}{
		{"good", func(map[string]any) {}, ""},
		{"no use, alg or key_ops", func(k map[string]any) { delete(k, "use"); delete(k, "alg") }, ""},
		{"key_ops verify", func(k map[string]any) { k["key_ops"] = []string{"verify"} }, ""},
		{"padded base64url", func(k map[string]any) { k["e"] = "AQAB" + "=="; k["n"] = n + "==" }, ""},
		{"extra members", func(k map[string]any) { k["x5t"] = "abc"; k["x5c"] = []string{"MII..."} }, ""},
		{"8192-bit modulus", func(k map[string]any) { k["n"] = modulus(8192) }, ""},

		{"EC key", func(k map[string]any) { k["kty"] = "EC"; k["crv"] = "P-256" }, `"kty" is "EC", only "RSA" keys are supported`},
		{"oct key", func(k map[string]any) { k["kty"] = "oct" }, `only "RSA" keys`},
		{"kty in lower case", func(k map[string]any) { k["kty"] = "rsa" }, `only "RSA" keys`},
		{"no kty", func(k map[string]any) { delete(k, "kty") }, `"kty" is required`},
		{"1024-bit modulus", func(k map[string]any) { k["n"] = modulus(1024) }, "RSA modulus is 1024 bits, at least 2048 are required"},
		{"2047-bit modulus", func(k map[string]any) { k["n"] = modulus(2047) }, "RSA modulus is 2047 bits"},
		{"oversized modulus", func(k map[string]any) { k["n"] = modulus(8200) }, "at most 8192"},
		{"even modulus", func(k map[string]any) { k["n"] = b64(new(big.Int).Lsh(big.NewInt(1), 2047).Bytes()) }, "modulus is even"},
		{"no kid", func(k map[string]any) { delete(k, "kid") }, `key 0: "kid" is required`},
		{"empty kid", func(k map[string]any) { k["kid"] = "" }, `"kid" is required`},
		{"numeric kid", func(k map[string]any) { k["kid"] = 1 }, `"kid" must be a string`},
		{"use enc", func(k map[string]any) { k["use"] = "enc" }, `"use" is "enc", want "sig"`},
		{"alg RS512", func(k map[string]any) { k["alg"] = "RS512" }, `"alg" is "RS512", want "RS256"`},
		{"alg HS256", func(k map[string]any) { k["alg"] = "HS256" }, `want "RS256"`},
		{"key_ops without verify", func(k map[string]any) { k["key_ops"] = []string{"encrypt"} }, `"key_ops" does not allow "verify"`},
		{"key_ops not an array", func(k map[string]any) { k["key_ops"] = "verify" }, `"key_ops" must be an array`},
		{"private exponent", func(k map[string]any) { k["d"] = "AQAB" }, `private key material ("d")`},
		{"symmetric secret", func(k map[string]any) { k["k"] = "c2VjcmV0" }, `private key material ("k")`},
		{"no n", func(k map[string]any) { delete(k, "n") }, `"n" is required`},
		{"no e", func(k map[string]any) { delete(k, "e") }, `"e" is required`},
		{"n in standard base64", func(k map[string]any) { k["n"] = strings.NewReplacer("-", "+", "_", "/").Replace(n) + "+/" }, `"n" is not valid base64url`},
		{"n with spaces", func(k map[string]any) { k["n"] = n[:10] + " " + n[10:] }, `"n" is not valid base64url`},
		{"e bad base64", func(k map[string]any) { k["e"] = "A@AB" }, `"e" is not valid base64url`},
		{"n not a string", func(k map[string]any) { k["n"] = 12345 }, `"n" must be a string`},
		{"even exponent", func(k map[string]any) { k["e"] = b64([]byte{1, 0, 0}) }, "RSA exponent must be odd"},
		{"exponent 1", func(k map[string]any) { k["e"] = "AQ" }, "RSA exponent"},
		{"huge exponent", func(k map[string]any) { k["e"] = b64([]byte{1, 0, 0, 0, 1}) }, "RSA exponent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := jwk(t, iss)
			tt.mutate(k)
			data, err := json.Marshal(map[string]any{"keys": []any{k}})
			if err != nil {
				t.Fatal(err)
			}
			keys, err := auth.ParseJWKS(data)
			if tt.want == "" {
				if err != nil || keys.Len() != 1 {
					t.Fatalf("ParseJWKS: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseJWKS error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseJWKSDocument(t *testing.T) {
	a := authtest.NewIssuer(t, gw)
	var set struct{ Keys []json.RawMessage }
	if err := json.Unmarshal(a.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	key := string(set.Keys[0])
	tests := []struct {
		name, doc, want string
	}{
		{"empty input", ``, "not a JSON object"},
		{"not JSON", `keys`, "not a JSON object"},
		{"an array", `[` + key + `]`, "not a JSON object"},
		{"a single JWK", key, `missing "keys" array`},
		{"keys null", `{"keys":null}`, `missing "keys" array`},
		{"keys not an array", `{"keys":{}}`, "not a JSON object"},
		{"empty set", `{"keys":[]}`, "the key set is empty"},
		{"key not an object", `{"keys":["x"]}`, "not a JSON object"},
		{"trailing data", `{"keys":[` + key + `]} {}`, "not a JSON object"},
		{"duplicate kid", `{"keys":[` + key + `,` + key + `]}`, `key 1: duplicate kid "` + a.Kid() + `"`},
		{"second key bad", `{"keys":[` + key + `,{"kty":"EC","kid":"ec1"}]}`, `key 1 (kid "ec1"): "kty" is "EC"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.ParseJWKS([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseJWKS error = %v, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "jwks: ") {
				t.Errorf("error %q does not say it is about the JWKS", err)
			}
		})
	}
}
