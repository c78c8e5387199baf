package httpapi

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

func TestHostGuard(t *testing.T) {
	public, _ := url.Parse("https://gw.example.net/mcp")
	g := newHostGuard(public, []string{"myfunc.azurewebsites.net", ""})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) })
	h := g.wrap(ok)
	cases := []struct {
		host, origin string
		want         int
	}{
		{"gw.example.net", "", 204},
		{"GW.Example.Net:443", "", 204},
		{"myfunc.azurewebsites.net", "", 204},
		{"localhost:7071", "", 204},
		{"127.0.0.1:7071", "", 204},
		{"[::1]:7071", "", 204},
		{"127.1.2.3", "", 204},
		{"evil.example.com", "", 403},
		{"gw.example.net.evil.com", "", 403},
		{"", "", 403},
		{"localhost", "https://gw.example.net", 204},
		{"localhost", "http://localhost:6274", 204},
		{"localhost", "http://127.0.0.1:3000", 204},
		{"localhost", "http://[::1]:3000", 204},
		{"localhost", "https://gw.example.net:8443", 403},
		{"localhost", "http://gw.example.net", 403},
		{"localhost", "https://evil.example.com", 403},
		{"localhost", "null", 403},
		{"localhost", "http://localhost.evil.com", 403},
		{"localhost", "file://localhost", 403},
		{"gw.example.net", "http://localhost:1/path", 403},
	}
	for _, c := range cases {
		r := httptest.NewRequest("POST", "/mcp", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.want {
			t.Errorf("Host %q Origin %q: %d, want %d", c.host, c.origin, w.Code, c.want)
		}
	}
}
