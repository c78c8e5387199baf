package frontdoor

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

// testRefresh: grant_type=refresh_token, rotation with reuse detection
// (FRONTDOOR section 6).
func (fd *frontDoor) testRefresh(t *testing.T) {
	fd = fd.from(t, "127.0.0.7")

	t.Run("rotation and reuse", func(t *testing.T) {
		u := newUser()
		c, first := fd.login(t, u)
		_, firstClaims := jwtParts(t, first.AccessToken)

		second := decodeTokens(t, fd.refresh(t, c, first.RefreshToken))
		if second.RefreshToken == first.RefreshToken || second.AccessToken == first.AccessToken {
			t.Fatal("refresh returned the same tokens")
		}
		_, claims := jwtParts(t, second.AccessToken)
		if claims["fid"] != firstClaims["fid"] || claims["sub"] != u.TID+":"+u.OID || claims["client_id"] != c.ID || claims["aud"] != fd.gw+"/mcp" {
			t.Errorf("refreshed token claims %v", claims)
		}
		if claims["jti"] == firstClaims["jti"] {
			t.Error("the refreshed access token has the same jti")
		}
		if who := fd.callHello(t, "streamable", second.AccessToken); who["subject"] != u.TID+":"+u.OID {
			t.Errorf("hello with the refreshed token: %v", who)
		}

		// Until its successor is used, the old refresh token may be retried
		// (a lost response); the retry replaces the successor.
		retried := decodeTokens(t, fd.refresh(t, c, first.RefreshToken))
		third := decodeTokens(t, fd.refresh(t, c, retried.RefreshToken))
		if fd.mcpStatus(t, third.AccessToken) != http.StatusOK {
			t.Fatal("the newest access token does not work")
		}
		// The first refresh token again, after its successor was used: reuse.
		// The family is revoked: every token of it stops working.
		wantOAuthError(t, fd.refresh(t, c, first.RefreshToken), http.StatusBadRequest, "invalid_grant")
		fd.waitRefused(t, third.AccessToken, "refresh token reuse")
		for _, tok := range []string{second.AccessToken, retried.AccessToken} {
			if status := fd.mcpStatus(t, tok); status != http.StatusUnauthorized {
				t.Errorf("an access token of the revoked family: %d", status)
			}
		}
		wantOAuthError(t, fd.refresh(t, c, third.RefreshToken), http.StatusBadRequest, "invalid_grant")
	})

	t.Run("the replaced successor is dead", func(t *testing.T) {
		c, first := fd.login(t, newUser())
		second := decodeTokens(t, fd.refresh(t, c, first.RefreshToken))
		retried := decodeTokens(t, fd.refresh(t, c, first.RefreshToken))
		// second was replaced by retried: using it is reuse.
		wantOAuthError(t, fd.refresh(t, c, second.RefreshToken), http.StatusBadRequest, "invalid_grant")
		fd.waitRefused(t, retried.AccessToken, "dead successor")
	})

	t.Run("refused", func(t *testing.T) {
		c, tk := fd.login(t, newUser())
		other := fd.register(t)
		for _, tc := range []struct {
			name   string
			form   url.Values
			status int
			code   string
		}{
			{"another client", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}, "client_id": {other.ID}}, 400, "invalid_grant"},
			{"unknown token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {strings.Repeat("r", 43)}, "client_id": {c.ID}}, 400, "invalid_grant"},
			{"an access token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.AccessToken}, "client_id": {c.ID}}, 400, "invalid_grant"},
			{"no token", url.Values{"grant_type": {"refresh_token"}, "client_id": {c.ID}}, 400, "invalid_request"},
			{"no client_id", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}}, 401, "invalid_client"},
			{"other resource", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tk.RefreshToken}, "client_id": {c.ID}, "resource": {fd.gw + "/mcp/sse"}}, 400, "invalid_target"},
		} {
			t.Run(tc.name, func(t *testing.T) { wantOAuthError(t, fd.postForm(t, "/token", tc.form), tc.status, tc.code) })
		}
		// None of these used or harmed the token.
		decodeTokens(t, fd.refresh(t, c, tk.RefreshToken))
	})
}

// testRevoke: POST /revoke (RFC 7009; FRONTDOOR section 7).
func (fd *frontDoor) testRevoke(t *testing.T) {
	fd = fd.from(t, "127.0.0.8")
	revoke := func(t *testing.T, form url.Values) response {
		t.Helper()
		return fd.postForm(t, "/revoke", form)
	}
	ok := func(t *testing.T, r response) {
		t.Helper()
		if r.Status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.Status, r.Body)
		}
		if r.Header.Get("Access-Control-Allow-Origin") != "*" || r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("revoke headers %v", r.Header)
		}
	}

	t.Run("refresh token", func(t *testing.T) {
		c, tk := fd.login(t, newUser())
		ok(t, revoke(t, url.Values{"token": {tk.RefreshToken}, "token_type_hint": {"refresh_token"}, "client_id": {c.ID}}))
		fd.waitRefused(t, tk.AccessToken, "revoked refresh token")
		wantOAuthError(t, fd.refresh(t, c, tk.RefreshToken), http.StatusBadRequest, "invalid_grant")
		// Revoking it again is fine.
		ok(t, revoke(t, url.Values{"token": {tk.RefreshToken}}))
	})

	t.Run("access token", func(t *testing.T) {
		c, tk := fd.login(t, newUser())
		if fd.mcpStatus(t, tk.AccessToken) != http.StatusOK {
			t.Fatal("the access token does not work before revocation")
		}
		// No hint: the server tells the kinds apart.
		ok(t, revoke(t, url.Values{"token": {tk.AccessToken}, "client_id": {c.ID}}))
		fd.waitRefused(t, tk.AccessToken, "revoked access token")
		wantOAuthError(t, fd.refresh(t, c, tk.RefreshToken), http.StatusBadRequest, "invalid_grant")
	})

	t.Run("unknown and invalid tokens", func(t *testing.T) {
		_, tk := fd.login(t, newUser())
		for name, token := range map[string]string{
			"unknown refresh token": strings.Repeat("z", 43),
			"garbage":               "not a token at all",
			// a real token's header and signature over changed claims
			"tampered access token": authtest.Tamper(t, tk.AccessToken, map[string]any{
				"iss": fd.gw, "aud": fd.gw + "/mcp", "fid": mustFid(t, tk.AccessToken), "exp": 4102444800,
			}),
			"foreign key": fd.mint(t, func(c *authtest.Claims) {
				c.SigningKey = fd.signer.PrivateKey()
				c.FamilyID = mustFid(t, tk.AccessToken)
			}),
		} {
			t.Run(name, func(t *testing.T) { ok(t, revoke(t, url.Values{"token": {token}})) })
		}
		// None of these revoked the family.
		if status := fd.mcpStatus(t, tk.AccessToken); status != http.StatusOK {
			t.Errorf("the access token stopped working: %d", status)
		}
	})

	t.Run("refused", func(t *testing.T) {
		wantOAuthError(t, revoke(t, url.Values{"token_type_hint": {"refresh_token"}}), http.StatusBadRequest, "invalid_request")
		wantOAuthError(t, revoke(t, url.Values{"token": {"a", "b"}}), http.StatusBadRequest, "invalid_request")
		wantOAuthError(t, fd.postJSON(t, "/revoke", map[string]string{"token": "x"}), http.StatusBadRequest, "invalid_request")
		big := url.Values{"token": {strings.Repeat("x", 17<<10)}}
		wantOAuthError(t, revoke(t, big), http.StatusRequestEntityTooLarge, "invalid_request")
	})
}

// mustFid returns the fid claim of an access token.
func mustFid(t *testing.T, token string) string {
	t.Helper()
	_, claims := jwtParts(t, token)
	fid, _ := claims["fid"].(string)
	if fid == "" {
		t.Fatal("token has no fid")
	}
	return fid
}
