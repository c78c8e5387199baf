package frontdoor

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

// testMCP: the MCP API (FRONTDOOR section 8): validate-jwt and its 401s,
// header stripping, the function key, CORS and unbuffered SSE.
func (fd *frontDoor) testMCP(t *testing.T) {
	fd = fd.from(t, "127.0.0.9")
	challenge := func(doc string) string {
		return `Bearer resource_metadata="` + fd.gw + `/.well-known/oauth-protected-resource` + doc + `", scope="mcp.tools"`
	}
	post := func(t *testing.T, path, authz string, extra map[string]string) response {
		t.Helper()
		hdr := map[string]string{"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
		if authz != "" {
			hdr["Authorization"] = authz
		}
		for k, v := range extra {
			hdr[k] = v
		}
		return fd.do(t, "POST", path, []byte(initBody), hdr)
	}

	t.Run("no token", func(t *testing.T) {
		for _, c := range []struct{ method, path, doc string }{
			{"POST", "/mcp", "/mcp"},
			{"GET", "/mcp", "/mcp"},
			{"DELETE", "/mcp", "/mcp"},
			{"GET", "/mcp/sse", "/mcp/sse"},
			{"POST", "/mcp/message?sessionId=abc", "/mcp/sse"},
		} {
			for _, authz := range []string{"", "Basic dXNlcjpwYXNz", "Bearer"} {
				r := fd.do(t, c.method, c.path, []byte(initBody), map[string]string{
					"Content-Type": "application/json", "Authorization": authz, "Origin": "http://localhost:6274",
				})
				if r.Status != http.StatusUnauthorized {
					t.Errorf("%s %s (Authorization %q): %d %s", c.method, c.path, authz, r.Status, r.Body)
					continue
				}
				if got := r.Header.Get("WWW-Authenticate"); got != challenge(c.doc) {
					t.Errorf("%s %s (Authorization %q): WWW-Authenticate\n got %s\nwant %s", c.method, c.path, authz, got, challenge(c.doc))
				}
				if r.Header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.Header.Get("Access-Control-Expose-Headers"), "WWW-Authenticate") {
					t.Errorf("%s %s: a browser could not read the challenge: %v", c.method, c.path, r.Header)
				}
				if r.JSON(t)["error"] == "invalid_token" {
					t.Errorf("%s %s: no token was sent, but the body says invalid_token", c.method, c.path)
				}
			}
		}
	})

	t.Run("bad tokens", func(t *testing.T) {
		other := authtest.NewKey(t)
		hour := time.Hour
		for _, c := range []struct {
			name   string
			mutate func(*authtest.Claims)
		}{
			{"wrong audience", func(c *authtest.Claims) { c.Audience = []string{"https://other.example/mcp"} }},
			{"audience with a trailing slash", func(c *authtest.Claims) { c.Audience = []string{fd.gw + "/mcp/"} }},
			{"gateway origin as audience", func(c *authtest.Claims) { c.Audience = []string{fd.gw} }},
			{"wrong issuer", func(c *authtest.Claims) { c.Issuer = "https://login.microsoftonline.com/common/v2.0" }},
			{"issuer with a trailing slash", func(c *authtest.Claims) { c.Issuer = fd.gw + "/" }},
			{"no issuer", func(c *authtest.Claims) { c.Issuer = "" }},
			{"other key, same kid", func(c *authtest.Claims) { c.SigningKey = other }},
			{"unknown kid", func(c *authtest.Claims) { c.SigningKey = other; c.Kid = authtest.Thumbprint(&other.PublicKey) }},
			{"alg none", func(c *authtest.Claims) { c.Alg = "none" }},
			{"HS256 with the public key", func(c *authtest.Claims) {
				c.Alg = "HS256"
				c.HMACSecret = []byte(mustN(fd))
			}},
			{"expired", func(c *authtest.Claims) {
				c.IssuedAt, c.NotBefore, c.ExpiresAt = c.IssuedAt.Add(-3*hour), c.NotBefore.Add(-3*hour), c.ExpiresAt.Add(-3*hour)
			}},
			{"not yet valid", func(c *authtest.Claims) { c.NotBefore = c.NotBefore.Add(hour) }},
			{"no exp", func(c *authtest.Claims) { c.ExpiresAt = time.Time{} }},
		} {
			t.Run(c.name, func(t *testing.T) {
				token := fd.mint(t, c.mutate)
				id := newTestID()
				for _, p := range []struct{ path, doc string }{{"/mcp", "/mcp"}, {"/mcp/message?sessionId=x", "/mcp/sse"}} {
					r := post(t, p.path, "Bearer "+token, map[string]string{headerTestID: id})
					if r.Status != http.StatusUnauthorized {
						t.Fatalf("%s: %d %s", p.path, r.Status, r.Body)
					}
					got := r.Header.Get("WWW-Authenticate")
					if want := challenge(p.doc) + `, error="invalid_token", error_description="`; !strings.HasPrefix(got, want) {
						t.Errorf("%s: WWW-Authenticate\n got %s\nwant %s...", p.path, got, want)
					}
					if m := r.JSON(t); m["error"] != "invalid_token" {
						t.Errorf("%s: body %s", p.path, r.Body)
					}
				}
				for _, got := range fd.proxy.requests(id) {
					t.Errorf("the gateway forwarded %s %s with a bad token", got.Method, got.Path)
				}
			})
		}
		t.Run("garbage", func(t *testing.T) {
			for _, tok := range []string{"abc", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30.", strings.Repeat("x", 5000)} {
				r := post(t, "/mcp", "Bearer "+tok, nil)
				if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
					t.Errorf("%.20q: %d %q", tok, r.Status, r.Header.Get("WWW-Authenticate"))
				}
			}
		})
	})

	_, tk := fd.login(t, newUser())

	t.Run("reserved headers never reach the handler", func(t *testing.T) {
		id := newTestID()
		r := post(t, "/mcp", "Bearer "+tk.AccessToken, map[string]string{
			headerTestID:                   id,
			"x-functions-key":              "client-chosen-function-key",
			"X-Internal-Key":               fd.sys.InternalKey,
			"x-ms-client-principal":        "eyJhdXRoX3R5cCI6ImFhZCJ9",
			"x-ms-client-principal-name":   "admin@contoso.com",
			"X-MS-CLIENT-PRINCIPAL-ID":     "00000000-0000-0000-0000-000000000000",
			"x-ms-client-principal-idp":    "aad",
			"x-mcp-foo":                    "bar",
			"X-Mcp-User":                   "someone-else",
			"X-MCP-Tenant":                 "other-tenant",
			"x-ms-client-principal-claims": "e30",
			"Cookie":                       "__Host-mcp-browser=abc",
			"X-Forwarded-Unrelated-Header": "kept",
		})
		if r.Status != http.StatusOK {
			t.Fatalf("/mcp: %d %s", r.Status, r.Body)
		}
		got := fd.proxy.requests(id)
		if len(got) != 1 {
			t.Fatalf("the handler received %d requests, want 1", len(got))
		}
		h := got[0].Header
		if got[0].Path != "/mcp" {
			t.Errorf("backend path %q, want /mcp", got[0].Path)
		}
		if v := h.Values("X-Functions-Key"); len(v) != 1 || v[0] != fd.sys.FunctionKey {
			t.Errorf("x-functions-key at the backend: %q, want only the gateway's", v)
		}
		for name := range h {
			n := strings.ToLower(name)
			if n == "x-internal-key" || n == "cookie" || strings.HasPrefix(n, "x-ms-client-principal") || strings.HasPrefix(n, "x-mcp-") {
				t.Errorf("the handler received %s: %q", name, h.Values(name))
			}
		}
		if h.Get("Authorization") != "Bearer "+tk.AccessToken {
			t.Error("the handler did not receive the access token (it validates it again)")
		}
		if h.Get("X-Forwarded-Unrelated-Header") != "kept" {
			t.Error("an ordinary header was dropped")
		}

		// More reserved headers than the policy strips one by one: refused.
		many := map[string]string{headerTestID: id}
		for i := range 12 {
			many["x-mcp-h"+string(rune('a'+i))] = "v"
		}
		if r := post(t, "/mcp", "Bearer "+tk.AccessToken, many); r.Status != http.StatusBadRequest {
			t.Errorf("12 x-mcp-* headers: %d %s", r.Status, r.Body)
		}
		if n := len(fd.proxy.requests(id)); n != 1 {
			t.Errorf("a request with 12 reserved headers was forwarded (%d requests)", n)
		}

		// The gateway's internal API calls carry both keys.
		calls := fd.proxy.internalCalls()
		if len(calls) == 0 {
			t.Fatal("no internal API calls were recorded")
		}
		for _, h := range calls {
			if h.Get("X-Internal-Key") != fd.sys.InternalKey || h.Get("X-Functions-Key") != fd.sys.FunctionKey {
				t.Fatalf("an internal API call lacks the internal or the function key")
			}
		}
	})

	t.Run("cors", func(t *testing.T) {
		r := fd.do(t, "OPTIONS", "/mcp", nil, map[string]string{
			"Origin": "http://localhost:6274", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization, content-type, mcp-protocol-version",
		})
		if r.Status != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("preflight: %d %v", r.Status, r.Header)
		}
		if m := r.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(m, "POST") || !strings.Contains(m, "DELETE") {
			t.Errorf("Access-Control-Allow-Methods %q", m)
		}
		if h := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") || !strings.Contains(h, "mcp-protocol-version") {
			t.Errorf("Access-Control-Allow-Headers %q", h)
		}
		r = post(t, "/mcp", "Bearer "+tk.AccessToken, map[string]string{"Origin": "http://localhost:6274"})
		if r.Status != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("cross-origin POST: %d %v", r.Status, r.Header)
		}
		if e := r.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(e, "Mcp-Session-Id") || !strings.Contains(e, "WWW-Authenticate") {
			t.Errorf("Access-Control-Expose-Headers %q", e)
		}
	})

	t.Run("sse", func(t *testing.T) {
		// An mcp-go SSE client through the gateway, with a token for /mcp
		// (both resource identifiers name the one server).
		who := fd.callHello(t, "sse", tk.AccessToken)
		if who["auth_mode"] != "token" || who["client_id"] == "" {
			t.Errorf("hello over SSE: %v", who)
		}
		// The stream is not buffered: the endpoint event arrives while the
		// stream stays open.
		req, _ := http.NewRequestWithContext(t.Context(), "GET", fd.gw+"/mcp/sse", nil)
		req.Header.Set("Authorization", "Bearer "+tk.AccessToken)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := fd.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("GET /mcp/sse: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		lines := make(chan string)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("the stream ended before the endpoint event")
				}
				if rest, ok := strings.CutPrefix(l, "data: "); ok {
					// Relative (resolved against the gateway the client
					// connected to) or absolute on the gateway.
					if !strings.HasPrefix(rest, "/mcp/message?") && !strings.HasPrefix(rest, fd.gw+"/mcp/message?") {
						t.Errorf("endpoint event %q is not a URL through the gateway", rest)
					}
					return
				}
			case <-timeout:
				t.Fatal("no endpoint event within 10 s: the gateway buffers the stream?")
			}
		}
	})
}

// newTestID returns a random marker for headerTestID.
func newTestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// mustN returns the signing key's modulus as it is published (base64url),
// the "secret" of a key-confusion attack.
func mustN(fd *frontDoor) string {
	return base64.RawURLEncoding.EncodeToString(fd.sys.SigningKey.N.Bytes())
}
