package frontdoor

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// testToken: POST /token with grant_type=authorization_code (FRONTDOOR
// section 6 and "Access token").
func (fd *frontDoor) testToken(t *testing.T) {
	fd = fd.from(t, "127.0.0.6")

	t.Run("code exchange", func(t *testing.T) {
		u := newUser()
		c := fd.register(t)
		code, verifier := fd.newCode(t, c, codeOptions{User: u})
		before := time.Now().Unix()
		r := fd.exchange(t, c, code, verifier)
		after := time.Now().Unix()
		tk := decodeTokens(t, r)
		for name, want := range map[string]string{
			"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache", "Access-Control-Allow-Origin": "*",
		} {
			if got := r.Header.Get(name); got != want {
				t.Errorf("%s %q, want %q", name, got, want)
			}
		}
		if tk.TokenType != "Bearer" || tk.ExpiresIn != 3600 || tk.Scope != "mcp.tools" || len(tk.RefreshToken) < 43 || tk.AccessToken == "" {
			t.Errorf("token response %s", r.Body)
		}
		var fields map[string]any
		_ = json.Unmarshal(r.Body, &fields)
		if len(fields) != 5 {
			t.Errorf("the token response has %d fields, want access_token, token_type, expires_in, refresh_token, scope: %s", len(fields), r.Body)
		}

		header, claims := jwtParts(t, tk.AccessToken)
		wantHeader := map[string]any{"alg": "RS256", "typ": "at+jwt", "kid": fd.sys.TokenSigningKid}
		if len(header) != 3 || header["alg"] != wantHeader["alg"] || header["typ"] != wantHeader["typ"] || header["kid"] != wantHeader["kid"] {
			t.Errorf("JOSE header %v, want %v", header, wantHeader)
		}
		if err := verifyRS256(tk.AccessToken, &fd.sys.SigningKey.PublicKey); err != nil {
			t.Errorf("signature: %v", err)
		}
		// It also verifies with the key the gateway publishes.
		jwks := fd.do(t, "GET", "/.well-known/jwks.json", nil, nil)
		if err := verifyRS256(tk.AccessToken, publicKeyFromJWKS(t, jwks.Body, fd.sys.TokenSigningKid)); err != nil {
			t.Errorf("signature with the published JWKS: %v", err)
		}
		for name, want := range map[string]string{
			"iss": fd.gw, "aud": fd.gw + "/mcp", "sub": u.TID + ":" + u.OID, "tid": u.TID, "oid": u.OID,
			"name": u.Name, "preferred_username": u.PreferredUsername, "client_id": c.ID, "scope": "mcp.tools",
		} {
			if claims[name] != want {
				t.Errorf("claim %s = %v, want %q", name, claims[name], want)
			}
		}
		fid, _ := claims["fid"].(string)
		jti, _ := claims["jti"].(string)
		if len(fid) < 16 || len(jti) < 16 {
			t.Errorf("fid %q, jti %q", fid, jti)
		}
		num := func(name string) int64 {
			n, err := claims[name].(json.Number).Int64()
			if err != nil {
				t.Fatalf("claim %s = %v is not an integer", name, claims[name])
			}
			return n
		}
		iat, nbf, exp := num("iat"), num("nbf"), num("exp")
		if iat < before-1 || iat > after+1 || nbf != iat || exp != iat+3600 {
			t.Errorf("iat %d nbf %d exp %d (request between %d and %d)", iat, nbf, exp, before, after)
		}
		if len(claims) != 14 {
			t.Errorf("%d claims, want the 14 of FRONTDOOR: %v", len(claims), claims)
		}

		// The handler accepts it: tools through the gateway.
		who := fd.callHello(t, "streamable", tk.AccessToken)
		for name, want := range map[string]string{
			"subject": u.TID + ":" + u.OID, "tenant_id": u.TID, "object_id": u.OID, "name": u.Name,
			"client_id": c.ID, "scope": "mcp.tools", "resource": fd.gw + "/mcp", "auth_mode": "token",
		} {
			if who[name] != want {
				t.Errorf("hello: %s = %v, want %q", name, who[name], want)
			}
		}
		// A second token of the same code: refused, and the family of the
		// first is revoked, so the first access token stops working.
		wantOAuthError(t, fd.exchange(t, c, code, verifier), http.StatusBadRequest, "invalid_grant")
		fd.waitRefused(t, tk.AccessToken, "replayed code")
		wantOAuthError(t, fd.refresh(t, c, tk.RefreshToken), http.StatusBadRequest, "invalid_grant")
	})

	t.Run("resource /mcp/sse", func(t *testing.T) {
		c := fd.register(t)
		code, verifier := fd.newCode(t, c, codeOptions{Resource: fd.gw + "/mcp/sse"})
		r := fd.postForm(t, "/token", url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURI},
			"client_id": {c.ID}, "code_verifier": {verifier}, "resource": {fd.gw + "/mcp/sse"},
		})
		tk := decodeTokens(t, r)
		if _, claims := jwtParts(t, tk.AccessToken); claims["aud"] != fd.gw+"/mcp/sse" {
			t.Errorf("aud %v", claims["aud"])
		}
		if who := fd.callHello(t, "sse", tk.AccessToken); who["resource"] != fd.gw+"/mcp/sse" {
			t.Errorf("hello over SSE: resource %v", who["resource"])
		}
	})

	t.Run("refused", func(t *testing.T) {
		c := fd.register(t)
		other := fd.register(t)
		exchange := func(mutate func(url.Values)) (response, func() response) {
			code, verifier := fd.newCode(t, c, codeOptions{})
			form := url.Values{
				"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURI},
				"client_id": {c.ID}, "code_verifier": {verifier},
			}
			mutate(form)
			first := fd.postForm(t, "/token", form)
			// The correct request afterwards: a failed check burns the code.
			correct := func() response { return fd.exchange(t, c, code, verifier) }
			return first, correct
		}
		for _, tc := range []struct {
			name   string
			mutate func(url.Values)
			status int
			code   string
		}{
			{"wrong verifier", func(f url.Values) { f.Set("code_verifier", strings.Repeat("A", 43)) }, 400, "invalid_grant"},
			{"plain PKCE (verifier = challenge)", func(f url.Values) {
				_, challenge := pkceFor(f.Get("code_verifier"))
				f.Set("code_verifier", challenge)
			}, 400, "invalid_grant"},
			{"no verifier", func(f url.Values) { f.Del("code_verifier") }, 400, "invalid_request"},
			{"short verifier", func(f url.Values) { f.Set("code_verifier", "abc") }, 400, "invalid_grant"},
			{"another client's code", func(f url.Values) { f.Set("client_id", other.ID) }, 400, "invalid_grant"},
			{"redirect_uri differs", func(f url.Values) { f.Set("redirect_uri", "http://127.0.0.1:33418/other") }, 400, "invalid_grant"},
			{"redirect_uri missing", func(f url.Values) { f.Del("redirect_uri") }, 400, "invalid_request"},
			{"resource differs", func(f url.Values) { f.Set("resource", fd.gw+"/mcp/sse") }, 400, "invalid_target"},
			{"unknown code", func(f url.Values) { f.Set("code", strings.Repeat("x", 43)) }, 400, "invalid_grant"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				first, correct := exchange(tc.mutate)
				wantOAuthError(t, first, tc.status, tc.code)
				if first.Header.Get("Pragma") != "no-cache" {
					t.Errorf("Pragma %q", first.Header.Get("Pragma"))
				}
				if tc.name != "unknown code" {
					wantOAuthError(t, correct(), http.StatusBadRequest, "invalid_grant")
				}
			})
		}

		code, verifier := fd.newCode(t, c, codeOptions{})
		good := url.Values{
			"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURI},
			"client_id": {c.ID}, "code_verifier": {verifier},
		}
		with := func(k, v string) url.Values {
			f := url.Values{}
			for key, vals := range good {
				f[key] = append([]string(nil), vals...)
			}
			if v == "" {
				f.Del(k)
			} else {
				f.Set(k, v)
			}
			return f
		}
		form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
		for _, tc := range []struct {
			name   string
			r      func() response
			status int
			code   string
		}{
			{"unsupported grant_type", func() response { return fd.postForm(t, "/token", with("grant_type", "password")) }, 400, "unsupported_grant_type"},
			{"client_credentials", func() response { return fd.postForm(t, "/token", with("grant_type", "client_credentials")) }, 400, "unsupported_grant_type"},
			{"no grant_type", func() response { return fd.postForm(t, "/token", with("grant_type", "")) }, 400, "invalid_request"},
			{"no client_id", func() response { return fd.postForm(t, "/token", with("client_id", "")) }, 401, "invalid_client"},
			{"unknown client_id", func() response { return fd.postForm(t, "/token", with("client_id", "notaregisteredclient0001")) }, 401, "invalid_client"},
			{"client_id with a path", func() response { return fd.postForm(t, "/token", with("client_id", "../codes")) }, 401, "invalid_client"},
			{"parameter twice", func() response {
				f := with("code", "")
				f["code"] = []string{code, code}
				return fd.postForm(t, "/token", f)
			}, 400, "invalid_request"},
			{"JSON body", func() response {
				b, _ := json.Marshal(map[string]string{"grant_type": "authorization_code", "code": code, "client_id": c.ID})
				return fd.do(t, "POST", "/token", b, map[string]string{"Content-Type": "application/json"})
			}, 400, "invalid_request"},
			{"no content type", func() response { return fd.do(t, "POST", "/token", []byte(good.Encode()), nil) }, 400, "invalid_request"},
			{"empty body", func() response { return fd.do(t, "POST", "/token", []byte{}, form) }, 400, "invalid_request"},
			{"oversized body", func() response {
				return fd.do(t, "POST", "/token", []byte(with("state", strings.Repeat("x", 17<<10)).Encode()), form)
			}, 413, "invalid_request"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := tc.r()
				wantOAuthError(t, r, tc.status, tc.code)
			})
		}
		// None of these touched the code: it still works.
		decodeTokens(t, fd.postForm(t, "/token", good))
	})
}

// pkceFor returns the verifier and its S256 challenge.
func pkceFor(verifier string) (string, string) {
	sum := sha256Sum(verifier)
	return verifier, sum
}
