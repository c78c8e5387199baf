package frontdoor

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestFrontDoor starts one system and runs every scenario of the policies
// the token side of the front door is made of (FRONTDOOR sections 1, 2, 6,
// 7 and 8) against it; the scenarios are independent of each other (each
// registers its own clients and users), so they share the system.
func TestFrontDoor(t *testing.T) {
	fd := startFrontDoor(t)
	t.Run("discovery", fd.testDiscovery)
	t.Run("register", fd.testRegister)
	t.Run("token", fd.testToken)
	t.Run("refresh", fd.testRefresh)
	t.Run("revoke", fd.testRevoke)
	t.Run("mcp", fd.testMCP)
	t.Run("odd input", fd.testOddInput)
}

// testDiscovery: the RFC 9728 and RFC 8414 documents and the JWKS, exactly.
func (fd *frontDoor) testDiscovery(t *testing.T) {
	gw := fd.gw
	public := func(t *testing.T, r response) {
		t.Helper()
		if r.Status != http.StatusOK {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		for name, want := range map[string]string{
			"Content-Type":                "application/json",
			"Cache-Control":               "public, max-age=300",
			"Access-Control-Allow-Origin": "*",
		} {
			if got := r.Header.Get(name); got != want {
				t.Errorf("%s: %q, want %q", name, got, want)
			}
		}
	}
	exact := func(t *testing.T, r response, want map[string]any) {
		t.Helper()
		got := r.JSON(t)
		wantJSON, _ := json.Marshal(want)
		var norm map[string]any
		_ = json.Unmarshal(wantJSON, &norm)
		if !reflect.DeepEqual(got, norm) {
			t.Errorf("document\n got %s\nwant %s", r.Body, wantJSON)
		}
	}

	var issuer string
	t.Run("authorization server metadata", func(t *testing.T) {
		r := fd.do(t, "GET", "/.well-known/oauth-authorization-server", nil, map[string]string{"Origin": "http://localhost:6274"})
		public(t, r)
		exact(t, r, map[string]any{
			"issuer":                                         gw,
			"authorization_endpoint":                         gw + "/authorize",
			"token_endpoint":                                 gw + "/token",
			"registration_endpoint":                          gw + "/register",
			"revocation_endpoint":                            gw + "/revoke",
			"jwks_uri":                                       gw + "/.well-known/jwks.json",
			"response_types_supported":                       []string{"code"},
			"response_modes_supported":                       []string{"query"},
			"grant_types_supported":                          []string{"authorization_code", "refresh_token"},
			"code_challenge_methods_supported":               []string{"S256"},
			"token_endpoint_auth_methods_supported":          []string{"none"},
			"revocation_endpoint_auth_methods_supported":     []string{"none"},
			"scopes_supported":                               []string{"mcp.tools"},
			"authorization_response_iss_parameter_supported": true,
			"client_id_metadata_document_supported":          true,
		})
		var raw struct {
			Issuer json.RawMessage `json:"issuer"`
		}
		_ = json.Unmarshal(r.Body, &raw)
		issuer = string(raw.Issuer)
	})

	for _, c := range []struct{ path, resource string }{
		{"/.well-known/oauth-protected-resource", gw},
		{"/.well-known/oauth-protected-resource/mcp", gw + "/mcp"},
		{"/.well-known/oauth-protected-resource/mcp/sse", gw + "/mcp/sse"},
	} {
		t.Run("protected resource "+c.path, func(t *testing.T) {
			r := fd.do(t, "GET", c.path, nil, nil)
			public(t, r)
			exact(t, r, map[string]any{
				"resource":                 c.resource,
				"authorization_servers":    []string{gw},
				"scopes_supported":         []string{"mcp.tools"},
				"bearer_methods_supported": []string{"header"},
				"resource_name":            "Remote MCP server on Azure Functions",
			})
			// issuer == authorization_servers[0], byte for byte as served.
			var raw struct {
				Servers []json.RawMessage `json:"authorization_servers"`
			}
			_ = json.Unmarshal(r.Body, &raw)
			if len(raw.Servers) != 1 || issuer == "" || string(raw.Servers[0]) != issuer {
				t.Errorf("authorization_servers %s, issuer %s: not byte-identical", raw.Servers, issuer)
			}
		})
	}

	t.Run("jwks", func(t *testing.T) {
		r := fd.do(t, "GET", "/.well-known/jwks.json", nil, nil)
		public(t, r)
		if string(r.Body) != fd.sys.TokenJwks {
			t.Errorf("JWKS\n got %s\nwant %s", r.Body, fd.sys.TokenJwks)
		}
		pub := publicKeyFromJWKS(t, r.Body, fd.sys.TokenSigningKid)
		if !pub.Equal(&fd.sys.SigningKey.PublicKey) {
			t.Error("the served JWKS does not hold the signing key's public key")
		}
	})

	t.Run("preflight", func(t *testing.T) {
		for _, c := range []struct{ path, method string }{
			{"/.well-known/oauth-protected-resource/mcp", "GET"},
			{"/.well-known/oauth-authorization-server", "GET"},
			{"/register", "POST"},
			{"/token", "POST"},
			{"/revoke", "POST"},
		} {
			r := fd.do(t, "OPTIONS", c.path, nil, map[string]string{
				"Origin": "http://localhost:6274", "Access-Control-Request-Method": c.method,
				"Access-Control-Request-Headers": "content-type, mcp-protocol-version",
			})
			if r.Status != http.StatusNoContent {
				t.Errorf("OPTIONS %s: %d %s", c.path, r.Status, r.Body)
				continue
			}
			if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("OPTIONS %s: Access-Control-Allow-Origin %q", c.path, got)
			}
			if got := r.Header.Get("Access-Control-Allow-Methods"); !strings.Contains(got, c.method) {
				t.Errorf("OPTIONS %s: Access-Control-Allow-Methods %q lacks %s", c.path, got, c.method)
			}
			if got := strings.ToLower(r.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(got, "content-type") || !strings.Contains(got, "mcp-protocol-version") {
				t.Errorf("OPTIONS %s: Access-Control-Allow-Headers %q", c.path, got)
			}
		}
	})

	// The 401s of both the gateway and the handler name the gateway's
	// documents, and each document's resource is the endpoint's URL.
	t.Run("challenges name the gateway's documents", func(t *testing.T) {
		for _, c := range []struct{ method, path, doc string }{
			{"POST", "/mcp", "/mcp"},
			{"GET", "/mcp/sse", "/mcp/sse"},
			{"POST", "/mcp/message?sessionId=x", "/mcp/sse"},
		} {
			r := fd.do(t, c.method, c.path, []byte(initBody), map[string]string{"Content-Type": "application/json"})
			want := `Bearer resource_metadata="` + gw + `/.well-known/oauth-protected-resource` + c.doc + `", scope="mcp.tools"`
			if r.Status != http.StatusUnauthorized || r.Header.Get("WWW-Authenticate") != want {
				t.Errorf("%s %s without a token: %d, WWW-Authenticate %q, want %q", c.method, c.path, r.Status, r.Header.Get("WWW-Authenticate"), want)
			}
			doc := fd.do(t, "GET", "/.well-known/oauth-protected-resource"+c.doc, nil, nil).JSON(t)
			if doc["resource"] != gw+c.doc {
				t.Errorf("the document %s names resource %v, want %s", c.doc, doc["resource"], gw+c.doc)
			}
		}
		// A token the gateway accepts but the handler does not (its family
		// was never issued): the handler's own 401, through the gateway.
		token := fd.mint(t, nil)
		r := fd.do(t, "POST", "/mcp", []byte(initBody), map[string]string{
			"Content-Type": "application/json", "Accept": "application/json, text/event-stream", "Authorization": "Bearer " + token,
		})
		want := `Bearer resource_metadata="` + gw + `/.well-known/oauth-protected-resource/mcp", scope="mcp.tools", error="invalid_token"`
		if r.Status != http.StatusUnauthorized || !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), want) {
			t.Errorf("handler's 401: %d, WWW-Authenticate %q, want prefix %q", r.Status, r.Header.Get("WWW-Authenticate"), want)
		}
	})
}
