package frontdoor

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// TestEntraTokensAreNotMCPTokens signs in for real, captures the tokens the
// Entra stand-in gives the gateway at /oauth-callback (which never leave the
// gateway), and presents them at the MCP API as a client that stole them
// would: both are refused, because only the gateway's own signing key makes
// an MCP access token (no token passthrough).
func TestEntraTokensAreNotMCPTokens(t *testing.T) {
	var mu sync.Mutex
	var entraTokens map[string]any
	var target *url.URL
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			mu.Lock()
			pr.SetURL(target)
			mu.Unlock()
		},
		ModifyResponse: func(resp *http.Response) error {
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			var m map[string]any
			if json.Unmarshal(b, &m) == nil && m["id_token"] != nil {
				mu.Lock()
				entraTokens = m
				mu.Unlock()
			}
			return nil
		},
	})
	t.Cleanup(proxy.Close)

	sys := testenv.StartSystem(t, testenv.SystemOptions{
		AllowedTenants: []string{testenv.LocalTenantID, authzTenantA},
		NamedValues:    map[string]string{"EntraTokenUrl": proxy.URL + "/organizations/oauth2/v2.0/token"},
	})
	mu.Lock()
	target, _ = url.Parse(sys.EntraURL)
	mu.Unlock()
	s := &authzSystem{System: sys, GW: sys.GatewayURL}

	redirect := "http://127.0.0.1:41234/callback"
	clientID := s.register(t, "stolen-token-test", redirect)
	q, _ := s.browser(t).signIn(t, s.newRequest(clientID, redirect))
	if q.Get("code") == "" {
		t.Fatalf("sign-in did not reach the client with a code: %v", q)
	}
	for k := range q {
		if strings.Contains(strings.ToLower(k), "token") {
			t.Fatalf("the client redirect carries %q: Entra tokens must stay in the gateway", k)
		}
	}
	mu.Lock()
	captured := entraTokens
	mu.Unlock()
	if captured == nil {
		t.Fatal("the token exchange with the Entra stand-in was not seen by the proxy")
	}

	for _, kind := range []string{"id_token", "access_token"} {
		tok, _ := captured[kind].(string)
		if tok == "" {
			t.Fatalf("Entra's answer has no %s", kind)
		}
		for _, path := range []string{"/mcp", "/mcp/sse"} {
			method, body := "POST", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)
			if path == "/mcp/sse" {
				method, body = "GET", strings.NewReader("")
			}
			req, _ := http.NewRequestWithContext(t.Context(), method, s.GW+path, body)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Errorf("Entra %s at %s: %d %q, want 401 invalid_token", kind, path, resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
}
