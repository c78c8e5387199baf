// Package smoke is the post-deployment smoke suite. After `azd up`:
//
//	go test ./e2e/smoke -gateway https://<name>.azure-api.net
//
// (azd env get-value MCP_GATEWAY_URL, or the MCP endpoint azd prints without
// /mcp). It checks, without secrets or a browser sign-in: the discovery
// documents, the JWKS, the 401 challenge of /mcp and /mcp/sse, dynamic
// registration of a loopback client, and /authorize with PKCE answering
// with the consent page. Each run registers one client.
//
// Without -gateway the same suite runs against the local system
// (testenv.StartSystem: the policies on the local gateway, the handler on
// Azurite, the Entra stand-in), so .ci/run keeps it passing; there it also
// posts the consent form and checks the redirect to Entra (the stand-in).
package smoke

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

var gatewayFlag = flag.String("gateway", "", "the deployed gateway origin, e.g. https://<name>.azure-api.net (empty: start the local system)")

// target is what the suite runs against.
type target struct {
	gw    string // origin, no trailing slash
	local *testenv.System
	c     *http.Client
}

// newClient is the suite's HTTP client: cookies kept (the consent flow
// needs the browser cookie), redirects not followed (the suite checks them).
func newClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{
		Jar:           jar,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func start(t *testing.T) *target {
	t.Helper()
	c := newClient()
	if g := strings.TrimSpace(*gatewayFlag); g != "" {
		u, err := url.Parse(g)
		if err != nil || u.Scheme == "" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			t.Fatalf("-gateway %q: want the gateway origin, such as https://<name>.azure-api.net", g)
		}
		return &target{gw: u.Scheme + "://" + u.Host, c: c}
	}
	sys := testenv.StartSystem(t, testenv.SystemOptions{})
	t.Logf("no -gateway: running against the local system at %s", sys.GatewayURL)
	return &target{gw: sys.GatewayURL, local: sys, c: c}
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (tg *target) do(t *testing.T, method, path string, body []byte, hdr map[string]string) answer {
	t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = tg.gw + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := tg.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, u, err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

// jsonDoc expects 200 with a JSON object.
func jsonDoc(t *testing.T, a answer, what string) map[string]any {
	t.Helper()
	if a.status != http.StatusOK {
		t.Fatalf("%s: status %d: %s", what, a.status, a.body)
	}
	var m map[string]any
	if err := json.Unmarshal(a.body, &m); err != nil {
		t.Fatalf("%s is not a JSON object (%v): %s", what, err, a.body)
	}
	return m
}

// same compares a member with want through JSON, so []string and []any agree.
func same(t *testing.T, what string, doc map[string]any, key string, want any) {
	t.Helper()
	w, _ := json.Marshal(want)
	var wv any
	_ = json.Unmarshal(w, &wv)
	if !reflect.DeepEqual(doc[key], wv) {
		t.Errorf("%s: %s = %v, want %v", what, key, doc[key], wv)
	}
}

const scope = "mcp.tools"

func TestSmoke(t *testing.T) {
	smoke(t, start(t))
}

// smoke runs the suite against tg.
func smoke(t *testing.T, tg *target) {
	gw := tg.gw

	// The issuer as served, byte for byte.
	var issuerRaw string
	t.Run("authorization server metadata", func(t *testing.T) {
		a := tg.do(t, "GET", "/.well-known/oauth-authorization-server", nil, nil)
		doc := jsonDoc(t, a, "AS metadata")
		var raw struct {
			Issuer json.RawMessage `json:"issuer"`
		}
		_ = json.Unmarshal(a.body, &raw)
		issuerRaw = string(raw.Issuer)
		if want, _ := json.Marshal(gw); issuerRaw != string(want) {
			t.Errorf("issuer %s, want %s (byte-identical: clients compare it exactly; a trailing slash or another host breaks sign-in)", issuerRaw, want)
		}
		for key, want := range map[string]any{
			"authorization_endpoint":                gw + "/authorize",
			"token_endpoint":                        gw + "/token",
			"registration_endpoint":                 gw + "/register",
			"revocation_endpoint":                   gw + "/revoke",
			"jwks_uri":                              gw + "/.well-known/jwks.json",
			"response_types_supported":              []string{"code"},
			"grant_types_supported":                 []string{"authorization_code", "refresh_token"},
			"code_challenge_methods_supported":      []string{"S256"},
			"token_endpoint_auth_methods_supported": []string{"none"},
			"scopes_supported":                      []string{scope},
			"client_id_metadata_document_supported": true,
		} {
			same(t, "AS metadata", doc, key, want)
		}
	})

	for _, c := range []struct{ path, resource string }{
		{"/.well-known/oauth-protected-resource", gw},
		{"/.well-known/oauth-protected-resource/mcp", gw + "/mcp"},
		{"/.well-known/oauth-protected-resource/mcp/sse", gw + "/mcp/sse"},
	} {
		t.Run("protected resource metadata "+c.path, func(t *testing.T) {
			a := tg.do(t, "GET", c.path, nil, nil)
			doc := jsonDoc(t, a, c.path)
			same(t, c.path, doc, "resource", c.resource)
			same(t, c.path, doc, "authorization_servers", []string{gw})
			same(t, c.path, doc, "scopes_supported", []string{scope})
			var raw struct {
				Servers []json.RawMessage `json:"authorization_servers"`
			}
			_ = json.Unmarshal(a.body, &raw)
			if issuerRaw != "" && (len(raw.Servers) != 1 || string(raw.Servers[0]) != issuerRaw) {
				t.Errorf("authorization_servers %s and the issuer %s are not byte-identical", raw.Servers, issuerRaw)
			}
		})
	}

	t.Run("jwks", func(t *testing.T) {
		a := tg.do(t, "GET", "/.well-known/jwks.json", nil, nil)
		if a.status != http.StatusOK {
			t.Fatalf("status %d: %s", a.status, a.body)
		}
		var set struct {
			Keys []struct {
				Kty, Kid, Alg, Use, N, E string
				D                        string `json:"d"`
			} `json:"keys"`
		}
		if err := json.Unmarshal(a.body, &set); err != nil || len(set.Keys) == 0 {
			t.Fatalf("not a JSON Web Key Set with keys (%v): %s", err, a.body)
		}
		for _, k := range set.Keys {
			if k.Kty != "RSA" || k.Kid == "" || k.N == "" || k.E == "" {
				t.Errorf("key %q: kty %q, n/e present %v: want an RSA public key with a kid", k.Kid, k.Kty, k.N != "" && k.E != "")
			}
			if k.D != "" {
				t.Errorf("key %q: the JWKS publishes a private key", k.Kid)
			}
		}
		if tg.local != nil && string(a.body) != tg.local.TokenJwks {
			t.Errorf("JWKS\n got %s\nwant %s", a.body, tg.local.TokenJwks)
		}
	})

	t.Run("401 challenge", func(t *testing.T) {
		const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"smoke","version":"0"}}}`
		for _, c := range []struct{ method, path, doc string }{
			{"POST", "/mcp", "/mcp"},
			{"GET", "/mcp/sse", "/mcp/sse"},
		} {
			a := tg.do(t, c.method, c.path, []byte(initBody), map[string]string{
				"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
			})
			want := `Bearer resource_metadata="` + gw + `/.well-known/oauth-protected-resource` + c.doc + `", scope="` + scope + `"`
			if a.status != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d %s, want 401", c.method, c.path, a.status, a.body)
				continue
			}
			if got := a.header.Get("WWW-Authenticate"); got != want {
				t.Errorf("%s %s: WWW-Authenticate\n got %s\nwant %s", c.method, c.path, got, want)
			}
		}
	})

	// Registration and /authorize of a loopback client (as MCP Inspector
	// and VS Code register).
	redirect := "http://127.0.0.1:33418/callback"
	var clientID string
	t.Run("register", func(t *testing.T) {
		body, _ := json.Marshal(map[string]any{
			"redirect_uris": []string{redirect}, "client_name": "azd smoke test",
			"token_endpoint_auth_method": "none", "grant_types": []string{"authorization_code", "refresh_token"},
			"response_types": []string{"code"},
		})
		a := tg.do(t, "POST", "/register", body, map[string]string{"Content-Type": "application/json"})
		if a.status != http.StatusCreated {
			t.Fatalf("POST /register: %d %s, want 201", a.status, a.body)
		}
		var m map[string]any
		if err := json.Unmarshal(a.body, &m); err != nil {
			t.Fatalf("registration response: %v: %s", err, a.body)
		}
		clientID, _ = m["client_id"].(string)
		if clientID == "" {
			t.Fatalf("no client_id: %s", a.body)
		}
		if _, ok := m["client_secret"]; ok {
			t.Error("a public client was given a client_secret")
		}
		same(t, "registration", m, "redirect_uris", []string{redirect})
	})

	t.Run("authorize", func(t *testing.T) {
		if clientID == "" {
			t.Skip("registration failed")
		}
		verifier := random()
		sum := sha256.Sum256([]byte(verifier))
		q := url.Values{
			"response_type":         {"code"},
			"client_id":             {clientID},
			"redirect_uri":          {redirect},
			"code_challenge":        {base64.RawURLEncoding.EncodeToString(sum[:])},
			"code_challenge_method": {"S256"},
			"state":                 {random()[:16]},
			"scope":                 {scope},
			"resource":              {gw + "/mcp"},
		}
		a := tg.do(t, "GET", "/authorize?"+q.Encode(), nil, nil)
		if a.status != http.StatusFound {
			t.Fatalf("/authorize: %d %s, want 302 to the consent page", a.status, a.body)
		}
		loc, err := url.Parse(a.header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		if loc.Scheme+"://"+loc.Host+loc.Path != gw+"/consent" || loc.Query().Get("txn") == "" {
			t.Fatalf("/authorize redirected to %s, want %s/consent?txn=… (first sign-in of this client)", loc, gw)
		}
		page := tg.do(t, "GET", loc.String(), nil, nil)
		if page.status != http.StatusOK || !strings.Contains(string(page.body), "azd smoke test") {
			t.Fatalf("consent page: %d, want 200 naming the client:\n%s", page.status, page.body)
		}
		if tg.local == nil {
			return // consenting would need the deployment's Entra sign-in
		}
		form := url.Values{}
		for _, name := range []string{"txn", "csrf"} {
			m := regexp.MustCompile(`name="` + name + `" value="([^"]*)"`).FindSubmatch(page.body)
			if m == nil {
				t.Fatalf("consent page has no %s field:\n%s", name, page.body)
			}
			form.Set(name, string(m[1]))
		}
		form.Set("decision", "allow")
		post := tg.do(t, "POST", "/consent", []byte(form.Encode()), map[string]string{
			"Content-Type": "application/x-www-form-urlencoded", "Origin": gw, "Sec-Fetch-Site": "same-origin",
		})
		if post.status != http.StatusFound {
			t.Fatalf("POST /consent: %d %s, want 302 to Entra", post.status, post.body)
		}
		entra, err := url.Parse(post.header.Get("Location"))
		if err != nil {
			t.Fatal(err)
		}
		want := tg.local.NamedValues["EntraAuthorizeUrl"]
		if got := entra.Scheme + "://" + entra.Host + entra.Path; want == "" || got != want || !strings.HasPrefix(got, tg.local.EntraURL+"/") {
			t.Fatalf("consent redirected to %s, want Entra's authorize endpoint %s", entra, want)
		}
		eq := entra.Query()
		if eq.Get("redirect_uri") != gw+"/oauth-callback" || eq.Get("code_challenge_method") != "S256" || eq.Get("client_id") == "" {
			t.Errorf("the Entra request lacks the gateway callback, PKCE S256 or the client id: %s", entra.RawQuery)
		}
	})
}

func random() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
