package frontdoor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// testRegister: POST /register (RFC 7591; FRONTDOOR section 2).
func (fd *frontDoor) testRegister(t *testing.T) {
	// Registrations are rate-limited per caller IP (20 a minute): each group
	// of cases calls from a loopback address of its own.
	if !loopbackAliases() {
		t.Skip("needs the loopback addresses 127.0.0.2-127.0.0.9 to call from several IPs (on macOS: sudo ifconfig lo0 alias 127.0.0.2 up, and so on)")
	}
	t.Run("accepted", func(t *testing.T) {
		fd := fd.from(t, "127.0.0.3")
		for _, uris := range [][]string{
			{"http://127.0.0.1:33418/callback"},
			{"http://localhost/cb", "http://[::1]:8080/cb"},
			{"https://app.example.com/oauth/callback"},
			{"com.example.app:/oauth2redirect"},
			{"https://a.example/1", "https://a.example/2", "https://a.example/3", "https://a.example/4", "https://a.example/5"},
		} {
			r := fd.postJSON(t, "/register", map[string]any{
				"redirect_uris": uris, "client_name": "e2e", "client_uri": "https://app.example.com",
				// unsupported: answered as "none" (RFC 7591 section 3.2.1)
				"token_endpoint_auth_method": "client_secret_basic",
			})
			if r.Status != http.StatusCreated {
				t.Errorf("%v: %d %s", uris, r.Status, r.Body)
				continue
			}
			m := r.JSON(t)
			id, _ := m["client_id"].(string)
			if len(id) < 16 {
				t.Errorf("%v: client_id %q", uris, id)
			}
			got, _ := json.Marshal(m["redirect_uris"])
			want, _ := json.Marshal(uris)
			if string(got) != string(want) {
				t.Errorf("redirect_uris %s, want %s", got, want)
			}
			if m["token_endpoint_auth_method"] != "none" {
				t.Errorf("token_endpoint_auth_method %v, want none", m["token_endpoint_auth_method"])
			}
			if _, ok := m["client_secret"]; ok {
				t.Error("a client secret was issued")
			}
			for name, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "Access-Control-Allow-Origin": "*"} {
				if got := r.Header.Get(name); got != want {
					t.Errorf("%s %q, want %q", name, got, want)
				}
			}
			// The client really exists: the internal API knows it.
			if r := fd.internal(t, "GET", "clients/"+id, nil); r.Status != http.StatusOK {
				t.Errorf("internal API: client %s: %d", id, r.Status)
			}
		}
	})

	t.Run("refused redirect URIs", func(t *testing.T) {
		fd := fd.from(t, "127.0.0.4")
		for _, c := range []struct {
			name string
			uris []string
		}{
			{"http, not loopback", []string{"http://evil.example.com/cb"}},
			{"http on a private address", []string{"http://192.168.1.10/cb"}},
			{"javascript:", []string{"javascript:alert(document.cookie)"}},
			{"data:", []string{"data:text/html,<script>alert(1)</script>"}},
			{"file:", []string{"file:///etc/passwd"}},
			{"fragment", []string{"https://app.example.com/cb#frag"}},
			{"userinfo", []string{"https://user:secret@app.example.com/cb"}},
			{"wildcard host", []string{"https://*.example.com/cb"}},
			{"wildcard path", []string{"https://app.example.com/*"}},
			{"relative", []string{"/cb"}},
			{"too long", []string{"https://app.example.com/" + strings.Repeat("a", 600)}},
			{"more than five", []string{"https://a.example/1", "https://a.example/2", "https://a.example/3", "https://a.example/4", "https://a.example/5", "https://a.example/6"}},
			{"none", []string{}},
			{"one bad among good", []string{"https://app.example.com/cb", "http://evil.example.com/cb"}},
		} {
			r := fd.postJSON(t, "/register", map[string]any{"redirect_uris": c.uris, "client_name": "attacker"})
			t.Run(c.name, func(t *testing.T) { wantOAuthError(t, r, http.StatusBadRequest, "invalid_redirect_uri") })
		}
		// No redirect_uris at all.
		wantOAuthError(t, fd.postJSON(t, "/register", map[string]any{"client_name": "x"}), http.StatusBadRequest, "invalid_redirect_uri")
	})

	t.Run("refused bodies", func(t *testing.T) {
		fd := fd.from(t, "127.0.0.5")
		jsonCT := map[string]string{"Content-Type": "application/json"}
		for _, c := range []struct {
			name   string
			body   string
			hdr    map[string]string
			status int
		}{
			{"malformed JSON", `{"redirect_uris": ["https://app.example.com/cb"]`, jsonCT, 400},
			{"not an object", `["https://app.example.com/cb"]`, jsonCT, 400},
			{"two objects", `{"redirect_uris":["https://a.example/cb"]}{}`, jsonCT, 400},
			{"redirect_uris not an array", `{"redirect_uris":"https://app.example.com/cb"}`, jsonCT, 400},
			{"empty body", ``, jsonCT, 400},
			{"form body", `redirect_uris=https%3A%2F%2Fapp.example.com%2Fcb`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 400},
			{"text body", `{"redirect_uris":["https://app.example.com/cb"]}`, map[string]string{"Content-Type": "text/plain"}, 400},
			{"no content type", `{"redirect_uris":["https://app.example.com/cb"]}`, nil, 400},
			{"oversized", `{"redirect_uris":["https://app.example.com/cb"],"client_name":"` + strings.Repeat("x", 17<<10) + `"}`, jsonCT, 413},
			{"unsupported grant type", `{"redirect_uris":["https://app.example.com/cb"],"grant_types":["client_credentials"]}`, jsonCT, 400},
		} {
			t.Run(c.name, func(t *testing.T) {
				r := fd.do(t, "POST", "/register", []byte(c.body), c.hdr)
				wantOAuthError(t, r, c.status, "invalid_client_metadata")
			})
		}
	})

	// The rate limit per caller IP, from an address of its own (127.0.0.2)
	// so that the other scenarios' registrations do not count.
	t.Run("rate limit per IP", func(t *testing.T) {
		other := fd.from(t, "127.0.0.2")
		body := `{"redirect_uris":["http://127.0.0.1/cb"]}`
		var last response
		for i := 1; i <= 25; i++ {
			last = other.do(t, "POST", "/register", []byte(body), map[string]string{"Content-Type": "application/json"})
			if last.Status == http.StatusTooManyRequests {
				if i <= 20 {
					t.Fatalf("limited after %d registrations; the limit is 20 a minute", i)
				}
				break
			}
			if last.Status != http.StatusCreated {
				t.Fatalf("registration %d: %d %s", i, last.Status, last.Body)
			}
		}
		wantOAuthError(t, last, http.StatusTooManyRequests, "temporarily_unavailable")
		if ra := last.Header.Get("Retry-After"); ra == "" || ra == "0" {
			t.Errorf("Retry-After %q", ra)
		}
		// Other callers are not affected.
		if r := fd.postJSON(t, "/register", map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}}); r.Status != http.StatusCreated {
			t.Errorf("another caller: %d %s", r.Status, r.Body)
		}
	})
}

// from returns a copy of fd whose requests to the gateway come from the
// loopback address src (the gateway sees it as the caller's IP).
// Where those addresses cannot be used (macOS has only 127.0.0.1 unless
// told otherwise), it returns fd itself.
func (fd *frontDoor) from(t *testing.T, src string) *frontDoor {
	t.Helper()
	if !loopbackAliases() {
		return fd
	}
	_, port, err := net.SplitHostPort(strings.TrimPrefix(fd.gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "localhost:"+port {
			addr = "127.0.0.1:" + port
		}
		return d.DialContext(ctx, "tcp", addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	other := *fd
	other.http = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return &other
}

// loopbackAliases reports whether this machine can send from 127.0.0.2 (Linux
// routes all of 127.0.0.0/8 to the loopback interface).
var loopbackAliases = sync.OnceValue(func() bool {
	l, err := net.Listen("tcp", "127.0.0.9:0")
	if err != nil {
		return false
	}
	l.Close()
	return true
})
