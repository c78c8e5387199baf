package frontdoor

// Client ID Metadata Documents: a client whose client_id is the HTTPS URL
// of a JSON document describing it, which the handler fetches (through the
// internal API, for /authorize and /token) instead of a registration.
//
// The documents are served over TLS on 127.0.0.1 by this test; the handler
// trusts the test server's certificate (SSL_CERT_FILE) and may fetch from
// a loopback address (MCP_CIMD_PRIVATE_ADDRESSES=allow), which production
// refuses (see handler/cimd).

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// cimdClientName is the client_name of the good test document.
const cimdClientName = "go-sdk e2e (metadata document)"

// cimdServer serves client metadata documents over TLS and counts fetches.
type cimdServer struct {
	ts     *httptest.Server
	caFile string

	mu   sync.Mutex
	docs map[string]func(self string) (status int, contentType, body string)
	hits map[string]int
}

func newCIMDServer(t *testing.T) *cimdServer {
	t.Helper()
	s := &cimdServer{docs: map[string]func(string) (int, string, string){}, hits: map[string]int{}}
	s.ts = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		doc := s.docs[r.URL.Path]
		s.hits[r.URL.Path]++
		s.mu.Unlock()
		if doc == nil {
			http.NotFound(w, r)
			return
		}
		status, ct, body := doc(s.ts.URL + r.URL.Path)
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "max-age=3600")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(s.ts.Close)
	s.caFile = filepath.Join(t.TempDir(), "cimd-ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ts.Certificate().Raw})
	if err := os.WriteFile(s.caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// json serves a document built from fields; "client_id": "" stands for the
// document's own URL.
func (s *cimdServer) json(path string, fields map[string]any) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[path] = func(self string) (int, string, string) {
		doc := map[string]any{}
		for k, v := range fields {
			if k == "client_id" && v == "" {
				v = self
			}
			doc[k] = v
		}
		b, _ := json.Marshal(doc)
		return http.StatusOK, "application/json", string(b)
	}
	return s.ts.URL + path
}

func (s *cimdServer) fetches(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func TestClientIDMetadataDocument(t *testing.T) {
	t.Parallel()
	docs := newCIMDServer(t)
	good := docs.json("/clients/go-sdk.json", map[string]any{
		"client_id":                  "",
		"client_name":                cimdClientName,
		"redirect_uris":              []string{"http://127.0.0.1/callback"}, // any loopback port (RFC 8252)
		"token_endpoint_auth_method": "none",
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
	})
	inspector := docs.json("/clients/inspector.json", map[string]any{
		"client_id":     "",
		"client_name":   "MCP Inspector e2e (metadata document)",
		"redirect_uris": []string{"http://localhost/oauth/callback"}, // any port on localhost
	})
	sys := testenv.StartSystem(t, testenv.SystemOptions{
		AllowedTenants: []string{testenv.LocalTenantID, cliOtherTenant},
		HandlerEnv:     map[string]string{"SSL_CERT_FILE": docs.caFile, "MCP_CIMD_PRIVATE_ADDRESSES": "allow"},
	})

	t.Run("go-sdk", func(t *testing.T) {
		var consent string
		cliScenario(t, sys, func(t *testing.T, ctx context.Context, u cliUser) cliConn {
			c := cliConnectGoSDK(t, ctx, sys, u, good)
			if c.SignIn().Authorize.Get("client_id") != good {
				t.Errorf("the client did not use its document URL as client_id: %q", c.SignIn().Authorize.Get("client_id"))
			}
			consent = c.SignIn().Consent
			return c
		})
		if host := html.EscapeString(strings.TrimPrefix(docs.ts.URL, "https://")); !strings.Contains(consent, host) {
			t.Errorf("the consent page does not name the document's host %s", host)
		}
		// Two users signed in, refreshed and called tools; the document was
		// fetched once (max-age 3600) or at most once per instance cache.
		if n := docs.fetches("/clients/go-sdk.json"); n < 1 || n > 2 {
			t.Errorf("the document was fetched %d times, want 1 (cached)", n)
		}
	})

	t.Run("inspector-cli", func(t *testing.T) {
		cliScenario(t, sys, func(t *testing.T, ctx context.Context, u cliUser) cliConn {
			c := cliConnectInspector(t, ctx, sys, u, inspector)
			if got := c.SignIn().Authorize.Get("client_id"); got != inspector {
				t.Errorf("the Inspector did not use its document URL as client_id: %q", got)
			}
			if !strings.Contains(c.SignIn().Consent, "MCP Inspector e2e (metadata document)") {
				t.Error("the consent page does not show the document's client_name")
			}
			return c
		})
	})

	// Unusable documents: an error page that says why, never a redirect to
	// the redirect_uri the request names.
	redirect := "http://127.0.0.1:4999/callback"
	bad := map[string]string{
		"another client_id": docs.json("/bad/other-id.json", map[string]any{
			"client_id": good, "redirect_uris": []string{redirect},
		}),
		"a client secret": docs.json("/bad/secret.json", map[string]any{
			"client_id": "", "redirect_uris": []string{redirect}, "client_secret": "s3cret",
		}),
		"a confidential client": docs.json("/bad/jwt.json", map[string]any{
			"client_id": "", "redirect_uris": []string{redirect}, "token_endpoint_auth_method": "private_key_jwt",
		}),
		"no redirect_uris": docs.json("/bad/no-redirects.json", map[string]any{"client_id": ""}),
		"missing":          docs.ts.URL + "/bad/missing.json",
	}
	noFollow := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for name, clientID := range bad {
		t.Run("unusable document: "+name, func(t *testing.T) {
			q := url.Values{
				"client_id": {clientID}, "redirect_uri": {redirect}, "response_type": {"code"},
				"state": {"s1"}, "code_challenge": {strings.Repeat("A", 43)}, "code_challenge_method": {"S256"},
			}
			resp, err := noFollow.Get(sys.GatewayURL + "/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d, Location %q; want 400 and no redirect", resp.StatusCode, resp.Header.Get("Location"))
			}
			if !strings.Contains(string(body), "metadata document cannot be used") {
				t.Errorf("the error page does not say why:\n%s", body)
			}
		})
	}
	// Not a URL this server takes as a document.
	for _, clientID := range []string{"http://127.0.0.1/c.json", docs.ts.URL + "/", docs.ts.URL + "/a/../c.json", docs.ts.URL + "/c.json#x"} {
		q := url.Values{"client_id": {clientID}, "redirect_uri": {redirect}, "response_type": {"code"}, "state": {"s"},
			"code_challenge": {strings.Repeat("A", 43)}, "code_challenge_method": {"S256"}}
		resp, err := noFollow.Get(sys.GatewayURL + "/authorize?" + q.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Errorf("client_id %q: status %d, Location %q; want 400 and no redirect", clientID, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	// Each document URL the gateway has not cached makes the handler fetch
	// it, so one caller gets at most 30 such lookups a minute.
	t.Run("document lookups are rate-limited per caller", func(t *testing.T) {
		limited := 0
		for i := range 40 {
			q := url.Values{"client_id": {docs.ts.URL + "/flood/" + strconv.Itoa(i) + ".json"}, "redirect_uri": {redirect},
				"response_type": {"code"}, "state": {"s"}, "code_challenge": {strings.Repeat("A", 43)}, "code_challenge_method": {"S256"}}
			resp, err := noFollow.Get(sys.GatewayURL + "/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusTooManyRequests:
				limited++
				if !strings.Contains(string(body), "Too many sign-ins") {
					t.Errorf("429 page without the reason:\n%s", body)
				}
			case http.StatusBadRequest:
			default:
				t.Fatalf("lookup %d: status %d", i, resp.StatusCode)
			}
		}
		if limited == 0 {
			t.Error("40 lookups of uncached document URLs from one caller within a minute were all served")
		}
		if n := docs.fetches("/flood/39.json"); limited > 0 && n != 0 {
			t.Errorf("a rate-limited lookup still reached the document host (%d fetches)", n)
		}
	})
}
