package auth_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/auth"
)

func TestMetadataHandler(t *testing.T) {
	h := auth.MetadataHandler(auth.ProtectedResource{
		Resource:             mcp,
		AuthorizationServers: []string{gw},
		ScopesSupported:      []string{"mcp.tools"},
		ResourceName:         "Remote MCP",
	})

	t.Run("GET", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/.well-known/oauth-protected-resource/mcp", nil))
		if w.Code != http.StatusOK {
			t.Fatalf("status = %d", w.Code)
		}
		checkHeaders(t, w.Header(), map[string]string{
			"Content-Type":                "application/json",
			"Cache-Control":               "public, max-age=300",
			"Access-Control-Allow-Origin": "*",
		})
		var doc map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"resource":                 mcp,
			"authorization_servers":    []any{gw},
			"scopes_supported":         []any{"mcp.tools"},
			"bearer_methods_supported": []any{"header"},
			"resource_name":            "Remote MCP",
		}
		if got, _ := json.Marshal(doc); string(got) != string(must(json.Marshal(want))) {
			t.Errorf("document = %s, want %s", got, must(json.Marshal(want)))
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodHead, "/", nil))
		if w.Code != http.StatusOK || w.Body.Len() != 0 {
			t.Fatalf("status = %d, body %q", w.Code, w.Body)
		}
		checkHeaders(t, w.Header(), map[string]string{"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"})
		if w.Header().Get("Content-Length") == "" {
			t.Error("HEAD has no Content-Length")
		}
	})

	t.Run("OPTIONS", func(t *testing.T) {
		r := httptest.NewRequest(http.MethodOptions, "/", nil)
		r.Header.Set("Origin", "http://localhost:6274")
		r.Header.Set("Access-Control-Request-Method", "GET")
		r.Header.Set("Access-Control-Request-Headers", "mcp-protocol-version\r\nx: y")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNoContent || w.Body.Len() != 0 {
			t.Fatalf("status = %d, body %q", w.Code, w.Body)
		}
		checkHeaders(t, w.Header(), map[string]string{
			"Access-Control-Allow-Origin":  "*",
			"Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
			"Access-Control-Allow-Headers": "mcp-protocol-versionx y",
		})
	})

	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		t.Run(method, func(t *testing.T) {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(method, "/", nil))
			if w.Code != http.StatusMethodNotAllowed {
				t.Fatalf("status = %d", w.Code)
			}
			checkHeaders(t, w.Header(), map[string]string{"Allow": "GET, HEAD, OPTIONS"})
		})
	}
}

// Scopes default to mcp.tools, resource_name is omitted when empty, and no
// list is ever null.
func TestMetadataHandlerDefaults(t *testing.T) {
	w := httptest.NewRecorder()
	auth.MetadataHandler(auth.ProtectedResource{Resource: gw}).
		ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	want := `{"resource":"https://gw.example","authorization_servers":[],"scopes_supported":["mcp.tools"],"bearer_methods_supported":["header"]}` + "\n"
	if w.Body.String() != want {
		t.Errorf("document = %s, want %s", w.Body, want)
	}
}

func checkHeaders(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
