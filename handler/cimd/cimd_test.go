package cimd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
	"github.com/mcp-apim/remote-mcp/handler/storage"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// clock is testenv's fake clock.
type clock = testenv.Clock

func newClock() *clock { return testenv.NewClock() }

// server is a TLS document host on 127.0.0.1 that counts requests.
type server struct {
	*httptest.Server
	hits  atomic.Int32
	conns atomic.Int32
}

// newServer starts h on 127.0.0.1 only (httptest would fall back to ::1).
func newServer(t *testing.T, h http.HandlerFunc) *server {
	t.Helper()
	s := &server{}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ts.Listener.Close()
	ts.Listener = ln
	ts.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.conns.Add(1)
		}
	}
	ts.StartTLS()
	t.Cleanup(ts.Close)
	s.Server = ts
	return s
}

// url is the client_id of the document at path on s.
func (s *server) url(path string) string { return s.URL + path }

// resolver returns a Resolver that trusts s and may fetch from loopback.
func (s *server) resolver(o Options) *Resolver {
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	o.RootCAs = pool
	o.AllowPrivateAddresses = true
	return New(o)
}

// selfURL is the URL a request was made for, which a good document names.
func selfURL(r *http.Request) string { return "https://" + r.Host + r.URL.Path }

// document returns a good document for r, changed by edit.
func document(r *http.Request, edit func(map[string]any)) []byte {
	d := map[string]any{
		"client_id":     selfURL(r),
		"client_name":   "Example MCP Client",
		"client_uri":    "https://app.example.com",
		"redirect_uris": []string{"https://app.example.com/cb", "http://127.0.0.1/cb"},
		"grant_types":   []string{"authorization_code"},
	}
	if edit != nil {
		edit(d)
	}
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// serveJSON answers with status and body as application/json.
func serveJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// wantErr checks that err is of kind and its message contains msg.
func wantErr(t *testing.T, err, kind error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("err = nil; want %v containing %q", kind, msg)
	}
	var se *storage.Error
	if !errors.As(err, &se) || !errors.Is(err, kind) {
		t.Fatalf("err = %#v (%v); want a storage.Error of kind %v", err, err, kind)
	}
	if !strings.Contains(se.Msg, msg) {
		t.Fatalf("err = %q; want it to contain %q", se.Msg, msg)
	}
}

func TestIsURL(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"https://app.example.com/client.json", true},
		{"https://", true},
		{"HTTPS://app.example.com/client.json", false},
		{"Https://app.example.com/client.json", false},
		{"http://app.example.com/client.json", false},
		{"c2VjcmV0LWlzaC1jbGllbnQtaWQ", false},
		{"", false},
		{" https://app.example.com/x", false},
	} {
		if got := IsURL(tc.id); got != tc.want {
			t.Errorf("IsURL(%q) = %v; want %v", tc.id, got, tc.want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	long := "https://app.example.com/" + strings.Repeat("a", MaxURLLength-len("https://app.example.com/"))
	accepted := []string{
		"https://app.example.com/client.json",
		"https://app.example.com:8443/oauth/client-metadata.json",
		"https://APP.example.com/x",
		"https://192.0.2.10/client",
		"https://[2001:db8::1]/client",
		"https://[2001:db8::1]:443/client",
		"https://app.example.com/a/b/c/",
		"https://app.example.com/p%20q",
		"https://app.example.com/a.b/..c/c../.../",
		"https://app.example.com/a%2Fb",
		"https://app.example.com//x",
		"https://localhost/client.json",
		long,
	}
	for _, u := range accepted {
		if err := CheckURL(u); err != nil {
			t.Errorf("CheckURL(%q) = %v; want accepted", u, err)
		}
	}

	refused := []struct{ id, msg string }{
		{long + "a", "at most 512"},
		{"", "must start with https://"},
		{"http://app.example.com/client.json", "must start with https://"},
		{"HTTPS://app.example.com/client.json", "must start with https://"},
		{"client-id-123", "must start with https://"},
		{"https://app.example.com/client.json#x", "fragment"},
		{"https://app.example.com/client.json#", "fragment"},
		{"https://app.example.com/client.json?v=1", "query"},
		{"https://app.example.com/client.json?", "query"},
		{"https://user@app.example.com/client.json", "user information"},
		{"https://user:pw@app.example.com/client.json", "user information"},
		{"https://app.example.com", "must have a path"},
		{"https://app.example.com/", "must have a path"},
		{"https://app.example.com:8443", "must have a path"},
		{"https:///client.json", "no host"},
		{"https://", "no host"},
		{"https://:443/client.json", "no host"},
		{"https://app.example.com/./client.json", `"." or ".."`},
		{"https://app.example.com/../client.json", `"." or ".."`},
		{"https://app.example.com/a/..", `"." or ".."`},
		{"https://app.example.com/a/.", `"." or ".."`},
		{"https://app.example.com/%2e/client.json", `"." or ".."`},
		{"https://app.example.com/%2E%2E/client.json", `"." or ".."`},
		{"https://app.example.com/.%2e/client.json", `"." or ".."`},
		{"https://app.example.com/a/%2e%2E", `"." or ".."`},
		{"https://app.example.com:/client.json", "empty port"},
		{"https://app.example.com:0/client.json", "invalid port"},
		{"https://app.example.com:65536/client.json", "invalid port"},
		{"https://app.example.com:0443/client.json", "invalid port"},
		{"https://app.example.com:x/client.json", "not a valid URL"},
		{"https://app..example.com/client.json", "malformed host name"},
		{"https://.example.com/client.json", "malformed host name"},
		{"https://example.com./client.json", "malformed host name"},
		{"https://app_x.example.com/client.json", "malformed host name"},
		{"https://%61pp.example.com/client.json", "not a valid URL"},
		{"https://0x7f.0.0.1/client.json", "malformed IPv4"},
		{"https://127.1/client.json", "malformed IPv4"},
		{"https://010.0.0.1/client.json", "malformed IPv4"},
		{"https://2130706433/client.json", "malformed IPv4"},
		{"https://[fe80::1%25eth0]/client.json", "malformed IPv6"},
		{"https://[127.0.0.1]/client.json", "not a valid URL"},
		{"https://[::ffff:zz]/client.json", "not a valid URL"},
		{"https://app.example.com/client json", "canonical"},
		{"https://app.example.com/clïent.json", "canonical"},
		{"https://app.example.com/a\\b", "canonical"},
		{"https://app.example.com\\@evil.example/x", "not a valid URL"},
		{"https://app.example.com/a\x00b", "not a valid URL"},
	}
	for _, tc := range refused {
		err := CheckURL(tc.id)
		if err == nil {
			t.Errorf("CheckURL(%q) = nil; want refused (%s)", tc.id, tc.msg)
			continue
		}
		if !errors.Is(err, storage.ErrNotFound) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("CheckURL(%q) = %v; want ErrNotFound containing %q", tc.id, err, tc.msg)
		}
		if strings.Contains(err.Error(), tc.id) && tc.id != "" {
			t.Errorf("CheckURL(%q) = %v; the message must not repeat the URL", tc.id, err)
		}
	}
}

func TestIsPublic(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1", false},
		{"127.255.0.9", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"172.31.255.254", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"100.127.255.254", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"192.0.0.8", false},
		{"192.0.2.1", false},
		{"::", false},
		{"::1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"::127.0.0.1", false},
		{"64:ff9b::a00:1", false},  // NAT64 of 10.0.0.1
		{"64:ff9b::7f00:1", false}, // NAT64 of 127.0.0.1
		{"2002:a00:1::1", false},   // 6to4
		{"2001::1", false},         // Teredo
		{"2001:db8::1", false},     // documentation
		{"fec0::1", false},         // site-local
		{"100::1", false},          // discard
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"100.63.255.255", true},
		{"100.128.0.0", true},
		{"172.32.0.1", true},
		{"198.20.0.1", true},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::808:808", true}, // NAT64 of 8.8.8.8
		{"2606:4700::1111", true},
		{"2a00:1450:4001:80b::200e", true},
	} {
		a := netip.MustParseAddr(tc.addr)
		if got := isPublic(a); got != tc.want {
			t.Errorf("isPublic(%s) = %v; want %v", tc.addr, got, tc.want)
		}
	}
	if isPublic(netip.Addr{}) {
		t.Error("isPublic(zero Addr) = true")
	}
}

func TestResolveGoodDocument(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Accept"); got != "application/json" {
			t.Errorf("Accept = %q", got)
		}
		if got := r.Header.Get("User-Agent"); got != "remote-mcp-authorization-server" {
			t.Errorf("User-Agent = %q", got)
		}
		if r.Method != http.MethodGet {
			t.Errorf("method = %s", r.Method)
		}
		serveJSON(w, http.StatusOK, document(r, func(d map[string]any) {
			d["token_endpoint_auth_method"] = "none"
			d["redirect_uris"] = []string{"https://app.example.com/cb", "https://app.example.com/cb", "http://127.0.0.1/cb"}
			d["logo_uri"] = "https://app.example.com/logo.png" // unknown members are ignored
		}))
	})
	res := s.resolver(Options{})
	m, err := res.Resolve(t.Context(), s.url("/client.json"))
	if err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	want := oauthstore.ClientMetadata{
		RedirectURIs:            []string{"https://app.example.com/cb", "http://127.0.0.1/cb"},
		ClientName:              "Example MCP Client",
		ClientURI:               "https://app.example.com",
		TokenEndpointAuthMethod: "none",
		GrantTypes:              []string{"authorization_code", "refresh_token"},
		ResponseTypes:           []string{"code"},
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Fatalf("Resolve = %+v; want %+v", m, want)
	}

	// The result is a copy: editing it does not change the cached one.
	m.RedirectURIs[0] = "https://evil.example/cb"
	again, err := res.Resolve(t.Context(), s.url("/client.json"))
	if err != nil || again.RedirectURIs[0] != "https://app.example.com/cb" {
		t.Fatalf("second Resolve = %+v, %v; want the original redirect URIs", again, err)
	}
	if n := s.hits.Load(); n != 1 {
		t.Fatalf("server hits = %d; want 1", n)
	}
}

func TestResolveRefusals(t *testing.T) {
	type handler = func(w http.ResponseWriter, r *http.Request)
	withDoc := func(edit func(map[string]any)) handler {
		return func(w http.ResponseWriter, r *http.Request) { serveJSON(w, http.StatusOK, document(r, edit)) }
	}
	raw := func(status int, ctype, body string) handler {
		return func(w http.ResponseWriter, r *http.Request) {
			if ctype != "" {
				w.Header().Set("Content-Type", ctype)
			}
			w.WriteHeader(status)
			fmt.Fprint(w, strings.ReplaceAll(body, "SELF", selfURL(r)))
		}
	}
	ok := `{"client_id":"SELF","redirect_uris":["https://app.example.com/cb"]}`
	for _, tc := range []struct {
		name string
		h    handler
		kind error
		msg  string
	}{
		{"client_id mismatch", withDoc(func(d map[string]any) { d["client_id"] = "https://evil.example/client.json" }),
			storage.ErrNotFound, `names client_id "https://evil.example/client.json", not its own URL`},
		{"client_id trailing slash", withDoc(func(d map[string]any) { d["client_id"] = d["client_id"].(string) + "/" }),
			storage.ErrNotFound, "not its own URL"},
		{"client_id missing", withDoc(func(d map[string]any) { delete(d, "client_id") }), storage.ErrNotFound, "has no client_id"},
		{"client_id not a string", withDoc(func(d map[string]any) { d["client_id"] = 42 }), storage.ErrNotFound, "client_id that is not a string"},
		{"client_id null", withDoc(func(d map[string]any) { d["client_id"] = nil }), storage.ErrNotFound, "client_id that is not a string"},
		{"client_secret", withDoc(func(d map[string]any) { d["client_secret"] = "s3cret" }), storage.ErrNotFound, "must not contain client_secret"},
		{"client_secret_expires_at", withDoc(func(d map[string]any) { d["client_secret_expires_at"] = 0 }), storage.ErrNotFound, "must not contain client_secret_expires_at"},
		{"private_key_jwt", withDoc(func(d map[string]any) { d["token_endpoint_auth_method"] = "private_key_jwt" }),
			storage.ErrNotFound, "only public clients are supported: token_endpoint_auth_method must be none"},
		{"client_secret_basic", withDoc(func(d map[string]any) { d["token_endpoint_auth_method"] = "client_secret_basic" }),
			storage.ErrNotFound, "token_endpoint_auth_method must be none"},
		{"auth method null", withDoc(func(d map[string]any) { d["token_endpoint_auth_method"] = nil }), storage.ErrNotFound, "not a string"},
		{"redirect_uris missing", withDoc(func(d map[string]any) { delete(d, "redirect_uris") }), storage.ErrNotFound, "has no redirect_uris"},
		{"redirect_uris empty", withDoc(func(d map[string]any) { d["redirect_uris"] = []string{} }), storage.ErrNotFound, "redirect_uris is required"},
		{"redirect_uris not strings", withDoc(func(d map[string]any) { d["redirect_uris"] = []any{"https://app.example.com/cb", 7} }),
			storage.ErrNotFound, "redirect_uris that is not an array of strings"},
		{"redirect_uris a string", withDoc(func(d map[string]any) { d["redirect_uris"] = "https://app.example.com/cb" }),
			storage.ErrNotFound, "redirect_uris that is not an array of strings"},
		{"bad redirect URI", withDoc(func(d map[string]any) {
			d["redirect_uris"] = []string{"https://app.example.com/cb", "http://evil.example/cb"}
		}),
			storage.ErrNotFound, "is not acceptable: redirect_uris[1]: may use http only on a loopback address"},
		{"bad client_name", withDoc(func(d map[string]any) { d["client_name"] = "Good\u202eevil" }), storage.ErrNotFound, "client_name contains the control or format character"},
		{"grant types without code", withDoc(func(d map[string]any) { d["grant_types"] = []string{"client_credentials"} }), storage.ErrNotFound, "grant_types must include"},
		{"wrong content type", raw(200, "text/html", ok), storage.ErrNotFound, `must be served as application/json, not "text/html"`},
		{"no content type", raw(200, "", ok), storage.ErrNotFound, "must be served as application/json"},
		{"json-ish content type", raw(200, "application/jsonp", ok), storage.ErrNotFound, "must be served as application/json"},
		{"trailing data", raw(200, "application/json", ok+`{"x":1}`), storage.ErrNotFound, "has data after the JSON object"},
		{"trailing garbage", raw(200, "application/json", ok+"x"), storage.ErrNotFound, "has data after the JSON object"},
		{"array", raw(200, "application/json", "["+ok+"]"), storage.ErrNotFound, "is not a JSON object"},
		{"null", raw(200, "application/json", "null"), storage.ErrNotFound, "is not a JSON object"},
		{"empty", raw(200, "application/json", ""), storage.ErrNotFound, "is not a JSON object"},
		{"truncated", raw(200, "application/json", ok[:len(ok)-1]), storage.ErrNotFound, "is not valid JSON"},
		{"duplicate member", raw(200, "application/json", `{"client_id":"https://evil.example/x","client_id":"SELF","redirect_uris":["https://app.example.com/cb"]}`),
			storage.ErrNotFound, `names the member "client_id" more than once`},
		{"invalid UTF-8", raw(200, "application/json", `{"client_id":"SELF","client_name":"a`+"\xff"+`","redirect_uris":["https://app.example.com/cb"]}`),
			storage.ErrNotFound, "is not valid UTF-8"},
		{"302", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "https://127.0.0.1:1/elsewhere.json", http.StatusFound)
		}, storage.ErrNotFound, "redirects are not followed"},
		{"301", raw(301, "application/json", ok), storage.ErrNotFound, "redirects are not followed"},
		{"404", raw(404, "text/plain", "no"), storage.ErrNotFound, "does not exist (HTTP 404)"},
		{"410", raw(410, "text/plain", "gone"), storage.ErrNotFound, "does not exist (HTTP 410)"},
		{"403", raw(403, "text/plain", "no"), storage.ErrNotFound, "refused the request (HTTP 403)"},
		{"204", raw(204, "application/json", ""), storage.ErrNotFound, "answered HTTP 204, not 200"},
		{"500", raw(500, "application/json", ok), storage.ErrUnavailable, "(HTTP 500)"},
		{"503", raw(503, "text/plain", "later"), storage.ErrUnavailable, "(HTTP 503)"},
		{"429", raw(429, "text/plain", "slow down"), storage.ErrUnavailable, "(HTTP 429)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, tc.h)
			_, err := s.resolver(Options{}).Resolve(t.Context(), s.url("/client.json"))
			wantErr(t, err, tc.kind, tc.msg)
		})
	}
}

func TestResolveAcceptedVariants(t *testing.T) {
	for _, tc := range []struct{ name, ctype, body string }{
		{"charset parameter", "application/json; charset=utf-8", `{"client_id":"SELF","redirect_uris":["https://app.example.com/cb"]}`},
		{"+json type", "application/oauth-client-metadata+json", `{"client_id":"SELF","redirect_uris":["https://app.example.com/cb"]}`},
		{"upper-case type", "Application/JSON", `{"client_id":"SELF","redirect_uris":["https://app.example.com/cb"]}`},
		{"whitespace", "application/json", "\n { \"client_id\" : \"SELF\" ,\n \"redirect_uris\" : [ \"https://app.example.com/cb\" ] }\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				fmt.Fprint(w, strings.ReplaceAll(tc.body, "SELF", selfURL(r)))
			})
			m, err := s.resolver(Options{}).Resolve(t.Context(), s.url("/client.json"))
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if !slices.Equal(m.RedirectURIs, []string{"https://app.example.com/cb"}) {
				t.Fatalf("RedirectURIs = %q", m.RedirectURIs)
			}
		})
	}
}

func TestResolveSize(t *testing.T) {
	const maxBytes = 5120 // the default
	// padded returns a good document for r of exactly n bytes.
	padded := func(r *http.Request, n int) []byte {
		b := document(r, func(d map[string]any) { d["pad"] = "" })
		return document(r, func(d map[string]any) { d["pad"] = strings.Repeat("x", n-len(b)) })
	}
	for _, tc := range []struct {
		name    string
		size    int
		chunked bool // no Content-Length: the limit must hold while reading
		ok      bool
	}{
		{"exactly MaxBytes", maxBytes, false, true},
		{"exactly MaxBytes, chunked", maxBytes, true, true},
		{"MaxBytes+1", maxBytes + 1, false, false},
		{"MaxBytes+1, chunked", maxBytes + 1, true, false},
		{"1 MB, chunked", 1 << 20, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				b := padded(r, tc.size)
				if len(b) != tc.size {
					t.Errorf("document has %d bytes; want %d", len(b), tc.size)
				}
				w.Header().Set("Content-Type", "application/json")
				if tc.chunked {
					w.(http.Flusher).Flush()
				}
				w.Write(b)
			})
			_, err := s.resolver(Options{}).Resolve(t.Context(), s.url("/client.json"))
			if tc.ok {
				if err != nil {
					t.Fatalf("Resolve: %v", err)
				}
				return
			}
			wantErr(t, err, storage.ErrNotFound, "larger than 5120 bytes")
		})
	}
}

func TestResolveTimeout(t *testing.T) {
	release := make(chan struct{})
	// The handler waits for release only, not for the client to hang up:
	// a server that answered when the client's close_notify arrived could
	// race a complete response in under the deadline, which net/http
	// rightly accepts.
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { <-release })
	t.Cleanup(func() { close(release) }) // runs before the server closes
	start := time.Now()
	_, err := s.resolver(Options{Timeout: 200 * time.Millisecond}).Resolve(t.Context(), s.url("/client.json"))
	wantErr(t, err, storage.ErrUnavailable, "did not answer in time")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Resolve took %v with a 200ms timeout", d)
	}
}

func TestResolveSlowBody(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"client_id":`))
		w.(http.Flusher).Flush()
		<-release
	})
	t.Cleanup(func() { close(release) })
	_, err := s.resolver(Options{Timeout: 200 * time.Millisecond}).Resolve(t.Context(), s.url("/client.json"))
	wantErr(t, err, storage.ErrUnavailable, "did not answer in time")
}

func TestResolveConnectionRefused(t *testing.T) {
	s := newServer(t, func(http.ResponseWriter, *http.Request) {})
	id := s.url("/client.json")
	res := s.resolver(Options{})
	s.Close()
	_, err := res.Resolve(t.Context(), id)
	wantErr(t, err, storage.ErrUnavailable, "cannot be reached")
}

func TestResolveUntrustedCertificate(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { serveJSON(w, 200, document(r, nil)) })
	res := New(Options{AllowPrivateAddresses: true, RootCAs: x509.NewCertPool()})
	_, err := res.Resolve(t.Context(), s.url("/client.json"))
	wantErr(t, err, storage.ErrNotFound, "certificate that is not valid")
}

func TestResolveCacheMaxAge(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=600")
		serveJSON(w, http.StatusOK, document(r, nil))
	})
	c := newClock()
	res := s.resolver(Options{Now: c.Now})
	id := s.url("/client.json")
	resolve := func(wantHits int32) {
		t.Helper()
		if _, err := res.Resolve(t.Context(), id); err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		if n := s.hits.Load(); n != wantHits {
			t.Fatalf("server hits = %d; want %d", n, wantHits)
		}
	}
	resolve(1)
	c.Advance(599 * time.Second)
	resolve(1)
	c.Advance(time.Second)
	resolve(2)
	c.Advance(300 * time.Second)
	resolve(2)
}

func TestTTL(t *testing.T) {
	f := newFetcher(New(Options{MinTTL: time.Minute, MaxTTL: time.Hour, DefaultTTL: 10 * time.Minute}).o)
	for _, tc := range []struct {
		cc   []string
		want time.Duration
	}{
		{nil, 10 * time.Minute},
		{[]string{"max-age=120"}, 2 * time.Minute},
		{[]string{"public, max-age=120"}, 2 * time.Minute},
		{[]string{`max-age="120"`}, 2 * time.Minute},
		{[]string{"Max-Age=120"}, 2 * time.Minute},
		{[]string{"max-age=1"}, time.Minute},
		{[]string{"max-age=0"}, time.Minute},
		{[]string{"max-age=86400"}, time.Hour},
		{[]string{"max-age=99999999999999999999999"}, time.Hour},
		{[]string{"max-age=-5"}, 10 * time.Minute},
		{[]string{"max-age=soon"}, 10 * time.Minute},
		{[]string{"no-store"}, 10 * time.Minute},
		{[]string{"no-cache, max-age=120"}, 10 * time.Minute},
		{[]string{"max-age=120", "no-store"}, 10 * time.Minute},
	} {
		h := http.Header{}
		for _, v := range tc.cc {
			h.Add("Cache-Control", v)
		}
		if got := f.ttl(h); got != tc.want {
			t.Errorf("ttl(Cache-Control: %q) = %v; want %v", tc.cc, got, tc.want)
		}
	}
}

func TestResolveTTLClamp(t *testing.T) {
	for _, tc := range []struct {
		name, cacheControl string
		ttl                time.Duration
	}{
		{"below MinTTL", "max-age=1", 5 * time.Minute},
		{"above MaxTTL", "max-age=31536000", 24 * time.Hour},
		{"no-store", "no-store", time.Hour},
		{"absent", "", time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
				if tc.cacheControl != "" {
					w.Header().Set("Cache-Control", tc.cacheControl)
				}
				serveJSON(w, http.StatusOK, document(r, nil))
			})
			c := newClock()
			res := s.resolver(Options{Now: c.Now}) // defaults: 5 min, 24 h, 1 h
			id := s.url("/client.json")
			for i, step := range []struct {
				advance time.Duration
				hits    int32
			}{{0, 1}, {tc.ttl - time.Second, 1}, {time.Second, 2}} {
				c.Advance(step.advance)
				if _, err := res.Resolve(t.Context(), id); err != nil {
					t.Fatalf("step %d: Resolve: %v", i, err)
				}
				if n := s.hits.Load(); n != step.hits {
					t.Fatalf("step %d: server hits = %d; want %d", i, n, step.hits)
				}
			}
		})
	}
}

func TestResolveNegativeCache(t *testing.T) {
	t.Run("404 is remembered", func(t *testing.T) {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
		c := newClock()
		res := s.resolver(Options{Now: c.Now, NegativeTTL: 30 * time.Second})
		id := s.url("/client.json")
		for i, step := range []struct {
			advance time.Duration
			hits    int32
		}{{0, 1}, {29 * time.Second, 1}, {time.Second, 2}, {0, 2}} {
			c.Advance(step.advance)
			_, err := res.Resolve(t.Context(), id)
			wantErr(t, err, storage.ErrNotFound, "does not exist (HTTP 404)")
			if n := s.hits.Load(); n != step.hits {
				t.Fatalf("step %d: server hits = %d; want %d", i, n, step.hits)
			}
		}
	})
	t.Run("500 is not", func(t *testing.T) {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) })
		c := newClock()
		res := s.resolver(Options{Now: c.Now})
		id := s.url("/client.json")
		for i := range 3 {
			_, err := res.Resolve(t.Context(), id)
			wantErr(t, err, storage.ErrUnavailable, "(HTTP 500)")
			if n := s.hits.Load(); n != int32(i+1) {
				t.Fatalf("call %d: server hits = %d; want %d", i, n, i+1)
			}
		}
	})
	t.Run("an invalid document is remembered", func(t *testing.T) {
		s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
			serveJSON(w, 200, document(r, func(d map[string]any) { d["client_secret"] = "x" }))
		})
		res := s.resolver(Options{Now: newClock().Now})
		for range 3 {
			_, err := res.Resolve(t.Context(), s.url("/client.json"))
			wantErr(t, err, storage.ErrNotFound, "client_secret")
		}
		if n := s.hits.Load(); n != 1 {
			t.Fatalf("server hits = %d; want 1", n)
		}
	})
}

// waiting reports how many Resolve calls wait for the fetch of clientID.
func (r *Resolver) waiting(clientID string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c, ok := r.inflight[clientID]; ok {
		return c.waiters
	}
	return 0
}

// cacheLen is the number of cache entries.
func (r *Resolver) cacheLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

// waitFor polls cond until it holds or the test has waited too long.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestResolveSingleflight(t *testing.T) {
	const callers = 20
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		serveJSON(w, http.StatusOK, document(r, nil))
	})
	res := s.resolver(Options{})
	id := s.url("/client.json")

	errs := make(chan error, callers)
	for range callers {
		go func() {
			m, err := res.Resolve(t.Context(), id)
			if err == nil && len(m.RedirectURIs) != 2 {
				err = fmt.Errorf("RedirectURIs = %q", m.RedirectURIs)
			}
			errs <- err
		}()
	}
	waitFor(t, "all callers to wait", func() bool { return res.waiting(id) == callers })
	close(release)
	for range callers {
		if err := <-errs; err != nil {
			t.Errorf("Resolve: %v", err)
		}
	}
	if n := s.hits.Load(); n != 1 {
		t.Fatalf("server hits = %d; want 1", n)
	}
}

func TestResolveCallerGivesUp(t *testing.T) {
	release := make(chan struct{})
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		serveJSON(w, http.StatusOK, document(r, nil))
	})
	res := s.resolver(Options{})
	id := s.url("/client.json")

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := res.Resolve(ctx, id)
		done <- err
	}()
	waitFor(t, "the caller to wait", func() bool { return res.waiting(id) == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Resolve after cancel = %v; want context.Canceled", err)
	}

	// The fetch carries on and its result is cached for the next caller.
	close(release)
	waitFor(t, "the fetch to finish", func() bool {
		res.mu.Lock()
		defer res.mu.Unlock()
		return len(res.inflight) == 0
	})
	if _, err := res.Resolve(t.Context(), id); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if n := s.hits.Load(); n != 1 {
		t.Fatalf("server hits = %d; want 1", n)
	}

	deadline, cancel2 := context.WithTimeout(t.Context(), -time.Second)
	defer cancel2()
	_, err := res.Resolve(deadline, id)
	wantErr(t, err, storage.ErrUnavailable, "did not arrive in time")
}

func TestResolvePrivateAddressRefused(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) { serveJSON(w, 200, document(r, nil)) })
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	res := New(Options{RootCAs: pool}) // AllowPrivateAddresses off
	for _, id := range []string{s.url("/client.json"), strings.Replace(s.url("/client.json"), "127.0.0.1", "localhost", 1)} {
		_, err := res.Resolve(t.Context(), id)
		wantErr(t, err, storage.ErrNotFound, "the client_id's host resolves to a non-public address")
	}
	if h, c := s.hits.Load(), s.conns.Load(); h != 0 || c != 0 {
		t.Fatalf("server saw %d requests and %d connections; want none", h, c)
	}
}

// TestTransport checks the fetch client's configuration directly: a proxy
// from the environment cannot be tested end to end, since net/http never
// proxies the loopback addresses test servers use.
func TestTransport(t *testing.T) {
	f := newFetcher(New(Options{}).o)
	tr, ok := f.client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("Transport is %T; want *http.Transport", f.client.Transport)
	}
	if tr.Proxy != nil {
		t.Error("Transport.Proxy is set; environment proxies would bypass the address check")
	}
	if tr.TLSClientConfig == nil || tr.TLSClientConfig.MinVersion != tls.VersionTLS12 || tr.TLSClientConfig.InsecureSkipVerify {
		t.Errorf("TLS config = %+v; want TLS 1.2+ with verification", tr.TLSClientConfig)
	}
	if f.client.CheckRedirect == nil || f.client.CheckRedirect(nil, nil) != http.ErrUseLastResponse {
		t.Error("CheckRedirect does not stop at the first response")
	}
	if f.client.Timeout != 5*time.Second || f.maxBytes != 5120 {
		t.Errorf("Timeout, MaxBytes = %v, %d; want the defaults 5s, 5120", f.client.Timeout, f.maxBytes)
	}
}

func TestResolveInvalidURL(t *testing.T) {
	res := New(Options{})
	for _, id := range []string{"not-a-url", "https://app.example.com/client.json?x=1", "https://app.example.com"} {
		_, err := res.Resolve(t.Context(), id)
		if !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Resolve(%q) = %v; want ErrNotFound", id, err)
		}
	}
	if n := res.cacheLen(); n != 0 {
		t.Errorf("cache has %d entries after invalid URLs; want 0", n)
	}
}

func TestCacheBound(t *testing.T) {
	s := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/gone") {
			http.NotFound(w, r)
			return
		}
		serveJSON(w, 200, document(r, nil))
	})
	c := newClock()
	res := s.resolver(Options{Now: c.Now, MaxEntries: 3, NegativeTTL: time.Minute})
	ctx := t.Context()
	for i := range 2 {
		res.Resolve(ctx, s.url(fmt.Sprintf("/gone%d", i)))
	}
	res.Resolve(ctx, s.url("/keep"))
	c.Advance(2 * time.Minute) // the two negative entries expire; /keep does not
	for i := range 2 {
		if _, err := res.Resolve(ctx, s.url(fmt.Sprintf("/new%d", i))); err != nil {
			t.Fatalf("Resolve: %v", err)
		}
	}
	hits := s.hits.Load()
	if _, err := res.Resolve(ctx, s.url("/keep")); err != nil || s.hits.Load() != hits {
		t.Fatalf("/keep was evicted before expired entries (err %v)", err)
	}
	for i := range 10 {
		res.Resolve(ctx, s.url(fmt.Sprintf("/more%d", i)))
		if n := res.cacheLen(); n > 3 {
			t.Fatalf("cache has %d entries; MaxEntries is 3", n)
		}
	}
}

var urlSeeds = []string{
	"https://app.example.com/client.json",
	"https://app.example.com:8443/a/b",
	"https://[2001:db8::1]/c",
	"https://192.0.2.1/c",
	"https://app.example.com/",
	"https://app.example.com/%2e%2E/x",
	"https://app.example.com/./x",
	"https://app.example.com/x?q",
	"https://app.example.com/x#f",
	"https://u:p@app.example.com/x",
	"https://app.example.com:/x",
	"https://[fe80::1%25en0]/x",
	"https://0x7f.1/x",
	"https://app.example.com/a b",
	"https://app.example.com\\@evil/x",
	"HTTPS://app.example.com/x",
	"http://app.example.com/x",
	"",
}

// FuzzCheckURL checks that CheckURL never panics and that whatever it
// accepts is an https URL that reads back exactly as written and has none
// of the forbidden parts.
func FuzzCheckURL(f *testing.F) {
	for _, s := range urlSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if CheckURL(raw) != nil {
			return
		}
		if !IsURL(raw) || len(raw) > MaxURLLength {
			t.Fatalf("accepted %q: not https or too long", raw)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q, which net/url cannot parse: %v", raw, err)
		}
		if u.String() != raw {
			t.Fatalf("accepted %q, which reads back as %q", raw, u.String())
		}
		if u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.ContainsAny(raw, "?#") {
			t.Fatalf("accepted %q with user info, query or fragment", raw)
		}
		if u.Hostname() == "" || u.Path == "" || u.Path == "/" {
			t.Fatalf("accepted %q without a host or a path", raw)
		}
		for _, seg := range strings.Split(u.Path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q with a dot segment", raw)
			}
		}
	})
}
