package frontdoor

// End-to-end tests of the browser half of the OAuth front door (FRONTDOOR.md
// sections 3 to 5: /authorize, /consent, /oauth-callback; owner policies-B),
// through the local API Management gateway executing the real bundle
// (apim-policies/apis.json), against the real handler (internal API) on a
// real Azurite, all started by testenv.StartSystem. Every request and
// response goes through the gateway.
//
// TestAuthorizeFrontDoor uses the system's Entra stand-in
// (scripts/entra-standin.mjs). TestAuthorizeIDToken points the Entra named
// values at a stand-in written here instead, which implements the same
// contract (Entra v2 endpoints, login_hint "<tid>:<oid>:<name>", PKCE S256,
// a client assertion verified against the gateway's managed-identity JWKS,
// no secret) and can be told per user (oid) to issue a doctored id_token or
// to fail the code redemption: the id_token checks of /oauth-callback need
// tokens no honest Entra issues. TestAuthorizePoliciesCheck runs the
// gateway's `check` on the bundle.

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mcp-apim/remote-mcp/apim-policies/keyset"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

const (
	authzMIIssuer   = "https://local-gateway/managed-identity"
	authzMIAudience = "api://AzureADTokenExchange"
)

// Tenants: the local one and A are allowed, B is allowed too (listed in upper
// case, to check the comparison ignores case), Other is not.
var (
	authzTenantA     = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	authzTenantB     = "a1b2c3d4-e5f6-4711-8899-aabbccddeeff"
	authzTenantOther = "0f0e0d0c-0b0a-4909-8807-060504030201"
)

// ---- the system ----

type authzSystem struct {
	*testenv.System
	GW    string      // the gateway origin, named value GatewayUrl
	Entra *authzEntra // the stand-in of this file, or nil (the system's own)
}

// authzStart starts the whole system; with ownEntra, the Entra named values
// point at a stand-in of this file.
func authzStart(t *testing.T, ownEntra bool) *authzSystem {
	t.Helper()
	opts := testenv.SystemOptions{
		AllowedTenants: []string{testenv.LocalTenantID, authzTenantA, strings.ToUpper(authzTenantB)},
	}
	keys, err := keyset.Generate()
	if err != nil {
		t.Fatal(err)
	}
	opts.Keys = keys
	opts.NamedValues = map[string]string{}
	var entra *authzEntra
	if ownEntra {
		entra = authzNewEntra(t)
		opts.NamedValues["EntraAuthorizeUrl"] = entra.URL + "/oauth2/v2.0/authorize"
		opts.NamedValues["EntraTokenUrl"] = entra.URL + "/oauth2/v2.0/token"
		opts.NamedValues["EntraIssuerPrefix"] = entra.URL + "/"
	}
	sys := testenv.StartSystem(t, opts)
	s := &authzSystem{System: sys, GW: sys.GatewayURL, Entra: entra}
	if entra != nil {
		entra.setGateway(s.GW, sys.NamedValues["EntraClientId"])
		t.Cleanup(func() {
			if p := entra.Problems(); len(p) > 0 {
				t.Errorf("the Entra stand-in saw protocol errors:\n%s", strings.Join(p, "\n"))
			}
		})
	}
	return s
}

// TestAuthorizePoliciesCheck: `gateway.exe check` reports no problem in the
// authorize, consent and callback policies or their fragments (problems of
// other files are logged, for their owners).
func TestAuthorizePoliciesCheck(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"mono", "mcs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(testenv.EnvRequireMono) == "1" {
				t.Fatalf("%s is required (%s=1)", tool, testenv.EnvRequireMono)
			}
			t.Skipf("%s not found: the local gateway needs Mono (scripts/mono.sh)", tool)
		}
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := exec.Command("bash", filepath.Join(root, "apim-policies", "gateway", "build.sh"), dir).CombinedOutput(); err != nil {
		t.Fatalf("building the gateway: %v\n%s", err, out)
	}
	keys, err := keyset.Generate()
	if err != nil {
		t.Fatal(err)
	}
	nv := map[string]string{
		"GatewayUrl": "http://localhost:8000", "FunctionAppUrl": "http://127.0.0.1:7071", "FunctionKey": "local",
		"EntraAuthorizeUrl": "http://127.0.0.1:8400/organizations/oauth2/v2.0/authorize",
		"EntraTokenUrl":     "http://127.0.0.1:8400/organizations/oauth2/v2.0/token",
		"EntraClientId":     testenv.LocalEntraClientID, "EntraIssuerPrefix": "http://127.0.0.1:8400/",
		"EntraAllowedTenants": testenv.LocalTenantID, "ManagedIdentityClientId": testenv.LocalManagedIdentityClientID,
	}
	for _, k := range keyset.Names() {
		nv[k] = keys[k]
	}
	b, _ := json.Marshal(nv)
	nvFile := filepath.Join(dir, "named-values.json")
	if err := os.WriteFile(nvFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// The whole bundle, not just this file's policies: every file parses,
	// every expression compiles and passes the allow-list, every named
	// value is defined, every manifest entry has its file.
	out, err := exec.Command("mono", filepath.Join(dir, "gateway.exe"), "check",
		"--manifest", filepath.Join(root, "apim-policies", "apis.json"), "--named-values", nvFile).CombinedOutput()
	if err != nil {
		t.Fatalf("gateway check reports problems in the bundle: %v\n%s", err, out)
	}
}

// ---- the internal API and registration ----

func (s *authzSystem) internal(t *testing.T, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.HandlerURL+"/internal/oauth/"+path, rd)
	req.Header.Set("x-internal-key", s.InternalKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// register registers a client through the gateway's /register, or, when that
// does not answer 201 (it is rate-limited per caller IP; another part of the
// front door), through the internal API, which stores the same record.
func (s *authzSystem) register(t *testing.T, name string, redirectURIs ...string) string {
	t.Helper()
	reg := map[string]any{"redirect_uris": redirectURIs, "client_name": name, "token_endpoint_auth_method": "none"}
	b, _ := json.Marshal(reg)
	resp, err := http.Post(s.GW+"/register", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if id, _ := m["client_id"].(string); resp.StatusCode == http.StatusCreated && id != "" {
		return id
	}
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Logf("POST /register through the gateway answered %d %v; registering through the internal API", resp.StatusCode, m)
	}
	code, m := s.internal(t, "POST", "clients", reg)
	id, _ := m["client_id"].(string)
	if code != http.StatusCreated || id == "" {
		t.Fatalf("registering %v: %d %v", redirectURIs, code, m)
	}
	return id
}

// redeem redeems a code through the internal API (as /token would) and returns the grant.
func (s *authzSystem) redeem(t *testing.T, code, clientID, redirectURI, verifier string) map[string]any {
	t.Helper()
	status, grant := s.internal(t, "POST", "token/authorization_code", map[string]any{
		"code": code, "client_id": clientID, "redirect_uri": redirectURI, "code_verifier": verifier,
	})
	if status != http.StatusOK {
		t.Fatalf("redeeming the code: %d %v", status, grant)
	}
	return grant
}

// ---- a browser ----

type authzBrowser struct {
	sys *authzSystem
	jar *cookiejar.Jar
	c   *http.Client
}

func (s *authzSystem) browser(t *testing.T) *authzBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &authzBrowser{sys: s, jar: jar, c: &http.Client{
		Jar:           jar,
		Timeout:       60 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type authzResponse struct {
	Status int
	Header http.Header
	Body   string
}

// Location is the parsed Location header ("" when there is none).
func (r authzResponse) Location(t *testing.T) *url.URL {
	t.Helper()
	loc := r.Header.Get("Location")
	if loc == "" {
		t.Fatalf("no Location (status %d): %s", r.Status, r.Body)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q: %v", loc, err)
	}
	return u
}

func (b *authzBrowser) do(t *testing.T, req *http.Request) authzResponse {
	t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return authzResponse{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

func (b *authzBrowser) get(t *testing.T, u string) authzResponse {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b.do(t, req)
}

// postConsent posts the consent form as a browser would from the consent page,
// with the given headers on top (an empty value removes a header).
func (b *authzBrowser) postConsent(t *testing.T, form url.Values, hdr map[string]string) authzResponse {
	t.Helper()
	req, _ := http.NewRequest("POST", b.sys.GW+"/consent", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.sys.GW)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return b.do(t, req)
}

func (b *authzBrowser) cookie(name string) *http.Cookie {
	u, _ := url.Parse(b.sys.GW)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func (b *authzBrowser) setCookie(name, value string) {
	u, _ := url.Parse(b.sys.GW)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/", Secure: true, HttpOnly: true}})
}

// ---- an authorization request ----

type authzRequest struct {
	GW                                     string // the gateway origin (the expected iss)
	ClientID, RedirectURI, State, Verifier string
	Params                                 url.Values // sent to /authorize
}

func authzRandom() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func authzGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func authzS256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// newRequest is a valid authorization request with PKCE S256 and a fresh
// user (login_hint), so that stand-in behaviours are per test.
func (s *authzSystem) newRequest(clientID, redirectURI string) *authzRequest {
	r := &authzRequest{GW: s.GW, ClientID: clientID, RedirectURI: redirectURI, State: "st-" + authzRandom()[:12], Verifier: authzRandom()}
	r.Params = url.Values{
		"response_type":         {"code"},
		"client_id":             {clientID},
		"redirect_uri":          {redirectURI},
		"code_challenge":        {authzS256(r.Verifier)},
		"code_challenge_method": {"S256"},
		"state":                 {r.State},
		"scope":                 {"mcp.tools"},
		"login_hint":            {authzTenantA + ":" + authzGUID() + ":Test User"},
	}
	return r
}

// User is the (tid, oid, name) of the request's login_hint.
func (r *authzRequest) User() (tid, oid, name string) {
	parts := strings.SplitN(r.Params.Get("login_hint"), ":", 3)
	return parts[0], parts[1], parts[2]
}

func (b *authzBrowser) authorize(t *testing.T, r *authzRequest) authzResponse {
	t.Helper()
	return b.get(t, b.sys.GW+"/authorize?"+r.Params.Encode())
}

// consentForm reads txn and csrf from a consent page.
func authzConsentForm(t *testing.T, page authzResponse) url.Values {
	t.Helper()
	if page.Status != http.StatusOK {
		t.Fatalf("consent page: %d %s", page.Status, page.Body)
	}
	form := url.Values{}
	for _, name := range []string{"txn", "csrf"} {
		m := regexp.MustCompile(`<input type="hidden" name="` + name + `" value="([^"]*)">`).FindStringSubmatch(page.Body)
		if m == nil {
			t.Fatalf("consent page has no %s field:\n%s", name, page.Body)
		}
		form.Set(name, m[1])
	}
	return form
}

// toConsent follows /authorize to the consent page and returns its form.
func (b *authzBrowser) toConsent(t *testing.T, r *authzRequest) (url.Values, authzResponse) {
	t.Helper()
	resp := b.authorize(t, r)
	if resp.Status != http.StatusFound {
		t.Fatalf("/authorize: %d %s", resp.Status, resp.Body)
	}
	loc := resp.Location(t)
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != b.sys.GW+"/consent" {
		t.Fatalf("/authorize redirected to %s, want the consent page", loc)
	}
	page := b.get(t, loc.String())
	return authzConsentForm(t, page), page
}

// toEntra asserts resp redirects to the stand-in's authorize endpoint and returns the URL.
func (b *authzBrowser) toEntra(t *testing.T, resp authzResponse) *url.URL {
	t.Helper()
	if resp.Status != http.StatusFound {
		t.Fatalf("want a redirect to Entra, got %d %s", resp.Status, resp.Body)
	}
	loc := resp.Location(t)
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != b.sys.NamedValues["EntraAuthorizeUrl"] {
		t.Fatalf("redirected to %s, want Entra's authorize endpoint", loc)
	}
	return loc
}

// throughEntra visits Entra's authorize URL and returns the gateway callback URL it redirects to.
func (b *authzBrowser) throughEntra(t *testing.T, entra *url.URL) string {
	t.Helper()
	resp := b.get(t, entra.String())
	if resp.Status != http.StatusFound {
		t.Fatalf("the Entra stand-in refused the authorize request: %d %s", resp.Status, resp.Body)
	}
	loc := resp.Location(t)
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != b.sys.GW+"/oauth-callback" {
		t.Fatalf("Entra redirected to %s, want the gateway's callback", loc)
	}
	return loc.String()
}

// toClient asserts resp redirects to r's redirect URI and returns its query.
func authzToClient(t *testing.T, resp authzResponse, r *authzRequest) url.Values {
	t.Helper()
	if resp.Status != http.StatusFound {
		t.Fatalf("want a redirect to the client, got %d %s", resp.Status, resp.Body)
	}
	loc := resp.Header.Get("Location")
	base, query, _ := strings.Cut(loc, "?")
	want, wantQuery, _ := strings.Cut(r.RedirectURI, "?")
	if base != want {
		t.Fatalf("redirected to %s, want the client's %s", loc, r.RedirectURI)
	}
	if wantQuery != "" {
		if !strings.HasPrefix(query, wantQuery+"&") {
			t.Fatalf("redirect %s does not keep the redirect URI's query %q", loc, wantQuery)
		}
		query = strings.TrimPrefix(query, wantQuery+"&")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		t.Fatalf("redirect %s: %v", loc, err)
	}
	if got := q.Get("iss"); got != r.GW {
		t.Errorf("iss = %q, want %q", got, r.GW)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q on the redirect to the client", cc)
	}
	return q
}

// wantClientError asserts a redirect to the client carrying error (and state unless stateless).
func authzWantClientError(t *testing.T, resp authzResponse, r *authzRequest, wantErr string, withState bool) {
	t.Helper()
	q := authzToClient(t, resp, r)
	if q.Get("error") != wantErr {
		t.Errorf("error = %q (%s), want %q", q.Get("error"), q.Get("error_description"), wantErr)
	}
	if q.Get("error_description") == "" {
		t.Errorf("no error_description")
	}
	if q.Has("code") {
		t.Errorf("an error response carries a code")
	}
	if withState && q.Get("state") != r.State {
		t.Errorf("state = %q, want %q", q.Get("state"), r.State)
	}
	if !withState && q.Has("state") {
		t.Errorf("state %q echoed although the request had no single state", q.Get("state"))
	}
}

// wantErrorPage asserts an HTML error page with status, and no redirect.
func authzWantErrorPage(t *testing.T, resp authzResponse, status int) {
	t.Helper()
	if resp.Status != status {
		t.Fatalf("status %d, want an error page with %d; Location %q; body %s", resp.Status, status, resp.Header.Get("Location"), resp.Body)
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		t.Errorf("an error page must not redirect; Location %q", loc)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q, want text/html", ct)
	}
	authzWantPageHeaders(t, resp)
	if strings.Contains(strings.ToLower(resp.Body), "<script") {
		t.Errorf("the error page has a script")
	}
}

func authzWantPageHeaders(t *testing.T, resp authzResponse) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
		"X-Frame-Options":         "DENY",
		"Cache-Control":           "no-store",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
}

// signIn runs a whole flow from /authorize to the client's redirect, through
// the consent page if it is shown, and returns the client's query.
func (b *authzBrowser) signIn(t *testing.T, r *authzRequest) (q url.Values, consentShown bool) {
	t.Helper()
	resp := b.authorize(t, r)
	if resp.Status != http.StatusFound {
		t.Fatalf("/authorize: %d %s", resp.Status, resp.Body)
	}
	if strings.HasPrefix(resp.Header.Get("Location"), b.sys.GW+"/consent?") {
		consentShown = true
		form := authzConsentForm(t, b.get(t, resp.Header.Get("Location")))
		form.Set("decision", "allow")
		resp = b.postConsent(t, form, nil)
	}
	callback := b.throughEntra(t, b.toEntra(t, resp))
	return authzToClient(t, b.get(t, callback), r), consentShown
}

// ---- the Entra stand-in of TestAuthorizeIDToken ----

type authzEntraCode struct {
	challenge, redirectURI, nonce string
	tid, oid, name                string
}

type authzEntra struct {
	URL string
	key *rsa.PrivateKey
	kid string

	mu        sync.Mutex
	gw        string // the gateway origin
	clientID  string // the Entra app's client id
	codes     map[string]authzEntraCode
	problems  []string
	failToken map[string]bool                        // by oid: /token answers invalid_grant
	doctor    map[string]func(claims map[string]any) // by oid: changes the id_token's claims
}

func authzNewEntra(t *testing.T) *authzEntra {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := &authzEntra{key: key, kid: "standin-" + authzRandom()[:8], codes: map[string]authzEntraCode{},
		failToken: map[string]bool{}, doctor: map[string]func(map[string]any){}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /oauth2/v2.0/authorize", e.handleAuthorize)
	mux.HandleFunc("POST /oauth2/v2.0/token", e.handleToken)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e.URL = srv.URL
	return e
}

// setGateway tells the stand-in the gateway's origin (the redirect URI and the
// assertion JWKS derive from it) and the Entra client id, once StartSystem
// has picked them.
func (e *authzEntra) setGateway(gw, clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gw, e.clientID = gw, clientID
}

func (e *authzEntra) config() (gw, clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gw, e.clientID
}

func (e *authzEntra) problem(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.problems = append(e.problems, fmt.Sprintf(format, args...))
}

func (e *authzEntra) Problems() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.problems)
}

// FailToken makes the code redemption of user oid fail.
func (e *authzEntra) FailToken(oid string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.failToken[oid] = true
}

// Doctor changes the claims of user oid's id_token before it is signed.
func (e *authzEntra) Doctor(oid string, f func(map[string]any)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.doctor[oid] = f
}

func (e *authzEntra) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	gw, clientID := e.config()
	q := r.URL.Query()
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		e.problem("authorize: %s (query %s)", msg, r.URL.RawQuery)
		http.Error(w, msg, http.StatusBadRequest)
	}
	for k, v := range q {
		if len(v) != 1 {
			fail("parameter %s repeated", k)
			return
		}
	}
	if q.Has("resource") {
		fail("AADSTS901002: the 'resource' request parameter is not supported")
		return
	}
	want := map[string]string{
		"client_id": clientID, "response_type": "code", "redirect_uri": gw + "/oauth-callback",
		"scope": "openid profile", "code_challenge_method": "S256", "response_mode": "query",
	}
	for k, v := range want {
		if q.Get(k) != v {
			fail("%s = %q, want %q", k, q.Get(k), v)
			return
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if q.Get(k) == "" {
			fail("%s is missing", k)
			return
		}
	}
	tid, oid, name := testenv.LocalTenantID, testenv.LocalObjectID, testenv.LocalUserName
	if hint := q.Get("login_hint"); hint != "" {
		parts := strings.SplitN(hint, ":", 3)
		if len(parts) != 3 {
			fail("login_hint %q is not <tid>:<oid>:<name>", hint)
			return
		}
		tid, oid, name = parts[0], parts[1], parts[2]
	}
	code := authzRandom()
	e.mu.Lock()
	e.codes[code] = authzEntraCode{challenge: q.Get("code_challenge"), redirectURI: q.Get("redirect_uri"), nonce: q.Get("nonce"),
		tid: tid, oid: oid, name: name}
	e.mu.Unlock()
	target, _ := url.Parse(q.Get("redirect_uri"))
	target.RawQuery = url.Values{"code": {code}, "state": {q.Get("state")}}.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

func (e *authzEntra) handleToken(w http.ResponseWriter, r *http.Request) {
	gw, clientID := e.config()
	oauthErr := func(status int, code, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		e.problem("token: %s", msg)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": msg})
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		oauthErr(400, "invalid_request", "Content-Type %q", ct)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthErr(400, "invalid_request", "form: %v", err)
		return
	}
	f := r.PostForm
	if f.Has("client_secret") || r.Header.Get("Authorization") != "" {
		oauthErr(401, "invalid_client", "a client secret was sent")
		return
	}
	if f.Has("resource") {
		oauthErr(400, "invalid_request", "a resource parameter was sent")
		return
	}
	if f.Get("grant_type") != "authorization_code" || f.Get("client_id") != clientID {
		oauthErr(400, "invalid_request", "grant_type %q client_id %q", f.Get("grant_type"), f.Get("client_id"))
		return
	}
	if f.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		oauthErr(401, "invalid_client", "client_assertion_type %q", f.Get("client_assertion_type"))
		return
	}
	if err := authzVerifyAssertion(gw, f.Get("client_assertion")); err != nil {
		oauthErr(401, "invalid_client", "client assertion: %v", err)
		return
	}
	e.mu.Lock()
	c, ok := e.codes[f.Get("code")]
	delete(e.codes, f.Get("code"))
	fails := e.failToken[c.oid]
	doctor := e.doctor[c.oid]
	e.mu.Unlock()
	if !ok {
		oauthErr(400, "invalid_grant", "unknown or used code")
		return
	}
	if f.Get("redirect_uri") != c.redirectURI {
		oauthErr(400, "invalid_grant", "redirect_uri %q, the code was issued for %q", f.Get("redirect_uri"), c.redirectURI)
		return
	}
	if authzS256(f.Get("code_verifier")) != c.challenge {
		oauthErr(400, "invalid_grant", "AADSTS501481: the code_verifier does not match the code_challenge")
		return
	}
	if fails {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"AADSTS70008: the code has expired."}`)
		return
	}
	now := time.Now()
	claims := map[string]any{
		"aud": clientID, "iss": e.URL + "/" + c.tid + "/v2.0", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "tid": c.tid, "oid": c.oid, "sub": "pairwise-" + c.oid[:8], "name": c.name,
		"preferred_username": strings.ReplaceAll(strings.ToLower(c.name), " ", ".") + "@example.com",
		"nonce":              c.nonce, "ver": "2.0",
	}
	if doctor != nil {
		doctor(claims)
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(claims))
	tok.Header["kid"] = e.kid
	idToken, err := tok.SignedString(e.key)
	if err != nil {
		oauthErr(500, "server_error", "signing: %v", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token_type": "Bearer", "scope": "openid profile", "expires_in": 3600,
		"access_token": "entra-access-" + authzRandom(), "id_token": idToken,
	})
}

// authzVerifyAssertion checks a client assertion as Entra checks a federated
// credential: RS256 against the gateway's managed-identity JWKS, its issuer,
// the audience api://AzureADTokenExchange and the identity as subject.
func authzVerifyAssertion(gw, assertion string) error {
	if assertion == "" {
		return fmt.Errorf("missing")
	}
	resp, err := http.Get(gw + testenv.ManagedIdentityJWKSPath)
	if err != nil {
		return fmt.Errorf("fetching the gateway's JWKS: %w", err)
	}
	defer resp.Body.Close()
	var set struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		return fmt.Errorf("the gateway's JWKS: %w", err)
	}
	_, err = jwt.Parse(assertion, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		for _, k := range set.Keys {
			if k.Kid != kid {
				continue
			}
			n, err1 := base64.RawURLEncoding.DecodeString(k.N)
			ex, err2 := base64.RawURLEncoding.DecodeString(k.E)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("bad key %s", kid)
			}
			return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(ex).Int64())}, nil
		}
		return nil, fmt.Errorf("unknown kid %q", kid)
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithIssuer(authzMIIssuer), jwt.WithAudience(authzMIAudience),
		jwt.WithSubject(testenv.GatewayManagedIdentityPrincipalID), jwt.WithExpirationRequired())
	return err
}

// ---- the tests ----

// TestAuthorizeFrontDoor: /authorize, /consent and /oauth-callback, the happy
// path and the attacks, against the system's Entra stand-in.
func TestAuthorizeFrontDoor(t *testing.T) {
	t.Parallel()
	sys := authzStart(t, false)

	// One client of each kind; tests that change state register their own.
	web := "https://app.example.com/cb"
	webQuery := "https://app.example.com/cb?tenant=contoso"
	loopback := "http://127.0.0.1:4000/cb"
	loopbackNoPort := "http://127.0.0.1/callback"
	loopback6 := "http://[::1]:4100/cb"
	localhost := "http://localhost:5000/cb"
	localhostNoPort := "http://localhost/any" // stands for any port
	native := "com.example.app:/oauth"
	shared := sys.register(t, "Shared test client", web, webQuery, loopback, loopbackNoPort, loopback6)
	apps := sys.register(t, "Native and localhost client", localhost, native, web, localhostNoPort)

	t.Run("HappyPathThenRememberedConsent", func(t *testing.T) {
		t.Parallel()
		name := `Evil <script>alert("x")</script> & Co`
		client := sys.register(t, name, web, loopback)
		b := sys.browser(t)
		r := sys.newRequest(client, loopback)
		tid, oid, userName := r.User()

		resp := b.authorize(t, r)
		if resp.Status != http.StatusFound {
			t.Fatalf("/authorize: %d %s", resp.Status, resp.Body)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("/authorize Cache-Control %q", cc)
		}
		authzWantCookie(t, resp, "__Host-mcp-browser")
		loc := resp.Location(t)
		if loc.Scheme+"://"+loc.Host+loc.Path != sys.GW+"/consent" || !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(loc.Query().Get("txn")) {
			t.Fatalf("/authorize redirected to %s, want %s/consent?txn=<43 characters>", loc, sys.GW)
		}
		if b.cookie("__Host-mcp-browser") == nil {
			t.Fatalf("the browser cookie did not reach the jar")
		}

		page := b.get(t, loc.String())
		if page.Status != http.StatusOK {
			t.Fatalf("consent page: %d %s", page.Status, page.Body)
		}
		authzWantPageHeaders(t, page)
		if ct := page.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Errorf("consent page Content-Type %q", ct)
		}
		low := strings.ToLower(page.Body)
		if strings.Contains(low, "<script") {
			t.Errorf("the consent page has a script (or an unencoded client name):\n%s", page.Body)
		}
		for _, want := range []string{"Evil &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; Co", "127.0.0.1:4000", "mcp.tools",
			`<form method="post" action="/consent">`, `name="decision" value="allow"`, `name="decision" value="deny"`} {
			if !strings.Contains(page.Body, want) {
				t.Errorf("the consent page lacks %q:\n%s", want, page.Body)
			}
		}
		if strings.Contains(page.Body, `class="warn"`) {
			t.Errorf("a loopback redirect URI got the not-this-computer warning")
		}
		form := authzConsentForm(t, page)
		if form.Get("txn") != loc.Query().Get("txn") {
			t.Errorf("the form's txn %q is not the page's %q", form.Get("txn"), loc.Query().Get("txn"))
		}

		form.Set("decision", "allow")
		resp = b.postConsent(t, form, nil)
		authzWantCookie(t, resp, "__Host-mcp-consent")
		entra := b.toEntra(t, resp)
		callback := b.throughEntra(t, entra)

		// What Entra receives: exactly these parameters, the gateway's own state, PKCE and nonce.
		sent := entra.Query()
		wantSent := map[string]string{
			"client_id": sys.NamedValues["EntraClientId"], "response_type": "code", "redirect_uri": sys.GW + "/oauth-callback",
			"scope": "openid profile", "code_challenge_method": "S256", "response_mode": "query",
			"login_hint": r.Params.Get("login_hint"),
		}
		for k, v := range wantSent {
			if sent.Get(k) != v {
				t.Errorf("Entra %s = %q, want %q", k, sent.Get(k), v)
			}
		}
		for k, v := range sent {
			if _, known := wantSent[k]; !known && k != "state" && k != "code_challenge" && k != "nonce" {
				t.Errorf("unexpected parameter %s=%v in the Entra redirect", k, v)
			}
			if len(v) != 1 {
				t.Errorf("Entra parameter %s repeated", k)
			}
		}
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`).MatchString(sent.Get("code_challenge")) || len(sent.Get("nonce")) < 22 {
			t.Errorf("Entra code_challenge %q / nonce %q", sent.Get("code_challenge"), sent.Get("nonce"))
		}
		if sent.Get("state") != form.Get("txn") {
			t.Errorf("Entra state = %q, want the txn id %q (never the client's state)", sent.Get("state"), form.Get("txn"))
		}
		if sent.Get("code_challenge") == r.Params.Get("code_challenge") {
			t.Errorf("the client's code_challenge was passed to Entra; the gateway must use its own")
		}
		if strings.Contains(entra.RawQuery, "resource") {
			t.Errorf("the Entra redirect carries a resource parameter: %s", entra.RawQuery)
		}

		q := authzToClient(t, b.get(t, callback), r)
		if q.Get("state") != r.State || q.Get("code") == "" || q.Has("error") {
			t.Fatalf("client redirect query %v, want code, state %q and iss", q, r.State)
		}
		for k := range q {
			if k != "code" && k != "state" && k != "iss" {
				t.Errorf("unexpected parameter %s in the client redirect", k)
			}
		}
		grant := sys.redeem(t, q.Get("code"), client, loopback, r.Verifier)
		for k, want := range map[string]string{"tid": tid, "oid": oid, "name": userName, "sub": tid + ":" + oid,
			"resource": sys.GW + "/mcp", "scope": "mcp.tools", "client_id": client,
			"preferred_username": "test.user@t-" + tid[:8] + ".example"} {
			if got, _ := grant[k].(string); got != want {
				t.Errorf("grant %s = %q, want %q", k, got, want)
			}
		}

		// Same client and redirect URI in this browser: no consent page.
		r2 := sys.newRequest(client, loopback)
		resp = b.authorize(t, r2)
		entra = b.toEntra(t, resp)
		q = authzToClient(t, b.get(t, b.throughEntra(t, entra)), r2)
		if q.Get("code") == "" || q.Get("state") != r2.State {
			t.Fatalf("second sign-in: %v", q)
		}
		// The other registered URI was not approved.
		if _, shown := b.signIn(t, sys.newRequest(client, web)); !shown {
			t.Errorf("approval of %s skipped consent for %s", loopback, web)
		}
		// Another browser is asked.
		if _, shown := sys.browser(t).signIn(t, sys.newRequest(client, loopback)); !shown {
			t.Errorf("another browser skipped consent")
		}
		// The second code belongs to the second request's PKCE, and is single use.
		if status, _ := sys.internal(t, "POST", "token/authorization_code", map[string]any{
			"code": q.Get("code"), "client_id": client, "redirect_uri": loopback, "code_verifier": r.Verifier}); status != http.StatusBadRequest {
			t.Errorf("a code redeemed with another request's verifier: %d", status)
		}
		if status, _ := sys.internal(t, "POST", "token/authorization_code", map[string]any{
			"code": q.Get("code"), "client_id": client, "redirect_uri": loopback, "code_verifier": r2.Verifier}); status != http.StatusBadRequest {
			t.Errorf("a code burnt by a failed redeem was accepted: %d", status)
		}
	})

	t.Run("ResourceScopeAndNoLoginHint", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		r := sys.newRequest(shared, webQuery)
		r.Params.Set("resource", sys.GW+"/mcp/sse")
		r.Params.Del("scope")
		r.Params.Del("login_hint")
		q, _ := b.signIn(t, r)
		grant := sys.redeem(t, q.Get("code"), shared, webQuery, r.Verifier)
		if grant["resource"] != sys.GW+"/mcp/sse" || grant["scope"] != "mcp.tools" {
			t.Errorf("grant resource %v scope %v, want %s/mcp/sse and mcp.tools", grant["resource"], grant["scope"], sys.GW)
		}
		if grant["oid"] != testenv.LocalObjectID || grant["tid"] != testenv.LocalTenantID {
			t.Errorf("without login_hint the stand-in's default user should sign in; got oid %v", grant["oid"])
		}
	})

	t.Run("ErrorsGoToTheClient", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name      string
			edit      func(v url.Values)
			err       string
			withState bool
		}{
			{"NoPKCE", func(v url.Values) { v.Del("code_challenge"); v.Del("code_challenge_method") }, "invalid_request", true},
			{"NoChallenge", func(v url.Values) { v.Del("code_challenge") }, "invalid_request", true},
			{"PlainMethod", func(v url.Values) { v.Set("code_challenge_method", "plain") }, "invalid_request", true},
			{"PlainChallengeOfVerifier", func(v url.Values) {
				v.Set("code_challenge", strings.Repeat("a", 43))
				v.Set("code_challenge_method", "plain")
			}, "invalid_request", true},
			{"MethodAbsent", func(v url.Values) { v.Del("code_challenge_method") }, "invalid_request", true},
			{"MethodLowerCase", func(v url.Values) { v.Set("code_challenge_method", "s256") }, "invalid_request", true},
			{"Challenge42", func(v url.Values) { v.Set("code_challenge", strings.Repeat("A", 42)) }, "invalid_request", true},
			{"Challenge129", func(v url.Values) { v.Set("code_challenge", strings.Repeat("A", 129)) }, "invalid_request", true},
			{"ChallengeNotBase64url", func(v url.Values) { v.Set("code_challenge", strings.Repeat("A", 42)+"+") }, "invalid_request", true},
			{"ChallengePadded", func(v url.Values) { v.Set("code_challenge", strings.Repeat("A", 43)+"=") }, "invalid_request", true},
			{"ChallengeRepeated", func(v url.Values) { v.Add("code_challenge", strings.Repeat("B", 43)) }, "invalid_request", true},
			{"NoState", func(v url.Values) { v.Del("state") }, "invalid_request", false},
			{"EmptyState", func(v url.Values) { v.Set("state", "") }, "invalid_request", false},
			{"StateRepeated", func(v url.Values) { v.Add("state", "other") }, "invalid_request", false},
			{"BadResource", func(v url.Values) { v.Set("resource", "https://evil.example/mcp") }, "invalid_target", true},
			{"ResourceTrailingSlash", func(v url.Values) { v.Set("resource", sys.GW+"/mcp/") }, "invalid_target", true},
			{"ResourceGatewayRoot", func(v url.Values) { v.Set("resource", sys.GW) }, "invalid_target", true},
			{"ResourceRepeated", func(v url.Values) { v["resource"] = []string{sys.GW + "/mcp", sys.GW + "/mcp/sse"} }, "invalid_request", true},
			{"UnknownScope", func(v url.Values) { v.Set("scope", "mcp.tools offline_access") }, "invalid_scope", true},
			{"TokenResponseType", func(v url.Values) { v.Set("response_type", "token") }, "unsupported_response_type", true},
			{"NoResponseType", func(v url.Values) { v.Del("response_type") }, "invalid_request", true},
		}
		for _, c := range cases {
			for _, redirect := range []string{web, webQuery} {
				t.Run(c.name+map[bool]string{true: "QueryURI", false: ""}[redirect == webQuery], func(t *testing.T) {
					t.Parallel()
					r := sys.newRequest(shared, redirect)
					c.edit(r.Params)
					resp := sys.browser(t).authorize(t, r)
					authzWantClientError(t, resp, r, c.err, c.withState)
					if resp.Header.Get("Set-Cookie") != "" {
						t.Errorf("an error redirect set a cookie: %q", resp.Header.Get("Set-Cookie"))
					}
				})
			}
		}
	})

	t.Run("ErrorPagesNeverRedirect", func(t *testing.T) {
		t.Parallel()
		cases := []struct {
			name string
			edit func(v url.Values)
		}{
			{"UnregisteredClient", func(v url.Values) { v.Set("client_id", "AAAAAAAAAAAAAAAAAAAAAA") }},
			{"MalformedClientID", func(v url.Values) { v.Set("client_id", "../clients/x") }},
			{"NoClientID", func(v url.Values) { v.Del("client_id") }},
			{"ClientIDRepeated", func(v url.Values) { v.Add("client_id", shared) }},
			{"NoRedirectURI", func(v url.Values) { v.Del("redirect_uri") }},
			{"RedirectURIRepeated", func(v url.Values) { v.Add("redirect_uri", "https://evil.example/cb") }},
			{"OtherHost", func(v url.Values) { v.Set("redirect_uri", "https://evil.example/cb") }},
			{"PathDiffers", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com/cb2") }},
			{"PathPrefix", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com/c") }},
			{"PathEncoded", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com/%63b") }},
			{"DotSegment", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com/x/../cb") }},
			{"TrailingSlash", func(v url.Values) { v.Set("redirect_uri", web+"/") }},
			{"QueryAdded", func(v url.Values) { v.Set("redirect_uri", web+"?x=1") }},
			{"QueryDiffers", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com/cb?tenant=fabrikam") }},
			{"QueryDropped", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com/cb?") }},
			{"Fragment", func(v url.Values) { v.Set("redirect_uri", web+"#x") }},
			{"PortAdded", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com:8443/cb") }},
			{"DefaultPortSpelledOut", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com:443/cb") }},
			{"SchemeHTTP", func(v url.Values) { v.Set("redirect_uri", "http://app.example.com/cb") }},
			{"UpperCaseHost", func(v url.Values) { v.Set("redirect_uri", "https://APP.example.com/cb") }},
			{"Userinfo", func(v url.Values) { v.Set("redirect_uri", "https://user@app.example.com/cb") }},
			{"UserinfoHostTrick", func(v url.Values) { v.Set("redirect_uri", "https://app.example.com@evil.example/cb") }},
			{"LocalhostPortDiffers", func(v url.Values) { v.Set("client_id", apps); v.Set("redirect_uri", "http://localhost:5001/cb") }},
			{"LocalhostPortDropped", func(v url.Values) { v.Set("client_id", apps); v.Set("redirect_uri", "http://localhost/cb") }},
			{"PortlessLocalhostOtherPath", func(v url.Values) { v.Set("client_id", apps); v.Set("redirect_uri", "http://localhost:5999/any/") }},
			{"PortlessLocalhostAsLoopbackIP", func(v url.Values) { v.Set("client_id", apps); v.Set("redirect_uri", "http://127.0.0.1:5999/any") }},
			{"LoopbackUserinfo", func(v url.Values) { v.Set("redirect_uri", "http://user@127.0.0.1:4000/cb") }},
			{"LoopbackTrailingSlash", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:4001/cb/") }},
			{"LoopbackPathCase", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:4001/CB") }},
			{"LoopbackOtherIP", func(v url.Values) { v.Set("redirect_uri", "http://[::1]:4000/callback") }},
			{"LoopbackHTTPS", func(v url.Values) { v.Set("redirect_uri", "https://127.0.0.1:4000/cb") }},
			{"LoopbackBadPort", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:65536/cb") }},
			{"LoopbackZeroPort", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:04000/cb") }},
			{"LoopbackEmptyPort", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:/cb") }},
			{"LoopbackLookalike", func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1.evil.example:4000/cb") }},
			{"NativeOtherPath", func(v url.Values) { v.Set("client_id", apps); v.Set("redirect_uri", "com.example.app:/oauth2") }},
			{"NativeOtherScheme", func(v url.Values) { v.Set("client_id", apps); v.Set("redirect_uri", "com.example.evil:/oauth") }},
			{"OtherClientsURI", func(v url.Values) { v.Set("redirect_uri", native) }},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := sys.newRequest(shared, web)
				c.edit(r.Params)
				authzWantErrorPage(t, sys.browser(t).authorize(t, r), http.StatusBadRequest)
			})
		}
		// A broken request is still refused on the error page when the client is unknown.
		t.Run("UnknownClientWithoutPKCE", func(t *testing.T) {
			t.Parallel()
			r := sys.newRequest("BBBBBBBBBBBBBBBBBBBBBB", "https://evil.example/cb")
			r.Params.Del("code_challenge")
			authzWantErrorPage(t, sys.browser(t).authorize(t, r), http.StatusBadRequest)
		})
	})

	t.Run("RedirectURIsThatMatch", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct{ name, client, redirect string }{
			{"Exact", shared, web}, {"ExactWithQuery", shared, webQuery}, {"Native", apps, native}, {"Localhost", apps, localhost},
			{"LoopbackOtherPort", shared, "http://127.0.0.1:54321/cb"},
			{"LoopbackNoPort", shared, "http://127.0.0.1/cb"},
			{"LoopbackPortWhereNoneRegistered", shared, "http://127.0.0.1:61000/callback"},
			{"LoopbackIPv6OtherPort", shared, "http://[::1]:61001/cb"},
			{"LoopbackIPv6NoPort", shared, "http://[::1]/cb"},
			{"PortlessLocalhostAnyPort", apps, "http://localhost:5999/any"},
			{"PortlessLocalhostNoPort", apps, localhostNoPort},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := sys.newRequest(c.client, c.redirect)
				resp := sys.browser(t).authorize(t, r)
				if resp.Status != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), sys.GW+"/consent?txn=") {
					t.Fatalf("%s: %d %q %s", c.redirect, resp.Status, resp.Header.Get("Location"), resp.Body)
				}
			})
		}
		// The whole flow with a loopback port other than the registered one: the code goes to
		// the port the client asked for, and redeems with that redirect_uri.
		t.Run("LoopbackPortFlow", func(t *testing.T) {
			t.Parallel()
			r := sys.newRequest(shared, "http://127.0.0.1:49152/cb")
			q, _ := sys.browser(t).signIn(t, r)
			sys.redeem(t, q.Get("code"), shared, "http://127.0.0.1:49152/cb", r.Verifier)
		})
	})

	t.Run("ConsentPageWarnsAboutRemoteHosts", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		_, page := b.toConsent(t, sys.newRequest(shared, web))
		if !strings.Contains(page.Body, `class="warn"`) || !strings.Contains(page.Body, "app.example.com") {
			t.Errorf("no warning naming app.example.com on the consent page of a remote redirect URI:\n%s", page.Body)
		}
		_, page = b.toConsent(t, sys.newRequest(apps, native))
		if !strings.Contains(page.Body, `class="warn"`) {
			t.Errorf("no warning on the consent page of a native app's private-use scheme")
		}
	})

	t.Run("ConsentPostAttacks", func(t *testing.T) {
		t.Parallel()
		a := sys.browser(t)
		r := sys.newRequest(shared, loopback)
		form, _ := a.toConsent(t, r)
		form.Set("decision", "allow")
		other := sys.browser(t)
		otherForm, _ := other.toConsent(t, sys.newRequest(shared, loopback))
		// A's second transaction, to swap CSRF tokens between transactions.
		secondForm, _ := a.toConsent(t, sys.newRequest(shared, loopback))
		noCookie := sys.browser(t)

		with := func(k, v string) url.Values {
			f := url.Values{}
			for key, vals := range form {
				f[key] = slices.Clone(vals)
			}
			if v == "" {
				f.Del(k)
			} else {
				f.Set(k, v)
			}
			return f
		}
		flip := func(s string) string {
			if s[0] == 'A' {
				return "B" + s[1:]
			}
			return "A" + s[1:]
		}
		cases := []struct {
			name string
			b    *authzBrowser
			form url.Values
			hdr  map[string]string
		}{
			{"NoCSRF", a, with("csrf", ""), nil},
			{"WrongCSRF", a, with("csrf", flip(form.Get("csrf"))), nil},
			{"ShortCSRF", a, with("csrf", form.Get("csrf")[:20]), nil},
			{"CSRFOfAnotherTransaction", a, with("csrf", secondForm.Get("csrf")), nil},
			{"CSRFOfAnotherBrowser", a, with("csrf", otherForm.Get("csrf")), nil},
			{"RepeatedCSRF", a, func() url.Values { f := with("csrf", form.Get("csrf")); f.Add("csrf", form.Get("csrf")); return f }(), nil},
			{"UnknownTxn", a, with("txn", authzRandom()), nil},
			{"NoTxn", a, with("txn", ""), nil},
			{"OtherOrigin", a, form, map[string]string{"Origin": "https://evil.example"}},
			{"NullOrigin", a, form, map[string]string{"Origin": "null"}},
			{"OriginPrefix", a, form, map[string]string{"Origin": sys.GW + ".evil.example"}},
			{"NoOriginNoReferer", a, form, map[string]string{"Origin": ""}},
			{"NoOriginOtherReferer", a, form, map[string]string{"Origin": "", "Referer": "https://evil.example/consent"}},
			{"NoOriginRefererPrefix", a, form, map[string]string{"Origin": "", "Referer": sys.GW + ".evil.example/consent"}},
			{"CrossSite", a, form, map[string]string{"Sec-Fetch-Site": "cross-site"}},
			{"SameSite", a, form, map[string]string{"Sec-Fetch-Site": "same-site"}},
			{"OtherBrowserCookie", other, form, nil},
			{"NoBrowserCookie", noCookie, form, nil},
		}
		for _, c := range cases {
			resp := c.b.postConsent(t, c.form, c.hdr)
			if resp.Status != http.StatusForbidden {
				t.Errorf("%s: %d %q, want 403", c.name, resp.Status, resp.Header.Get("Location"))
				continue
			}
			authzWantErrorPage(t, resp, http.StatusForbidden)
			if resp.Header.Get("Set-Cookie") != "" {
				t.Errorf("%s: a refused decision set a cookie", c.name)
			}
		}
		// Not a form.
		req, _ := http.NewRequest("POST", sys.GW+"/consent", strings.NewReader(`{"txn":"`+form.Get("txn")+`","csrf":"`+form.Get("csrf")+`","decision":"allow"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", sys.GW)
		if resp := a.do(t, req); resp.Status != http.StatusForbidden {
			t.Errorf("JSON body: %d, want 403", resp.Status)
		}
		// A decision that is neither allow nor deny.
		if resp := a.postConsent(t, with("decision", "maybe"), nil); resp.Status != http.StatusBadRequest {
			t.Errorf("decision=maybe: %d, want 400", resp.Status)
		}
		// None of that burnt the transaction: the real decision still works, also with a Referer instead of Origin.
		callback := a.throughEntra(t, a.toEntra(t, a.postConsent(t, form, map[string]string{"Origin": "", "Referer": sys.GW + "/consent?txn=" + form.Get("txn")})))
		q := authzToClient(t, a.get(t, callback), r)
		if q.Get("code") == "" {
			t.Fatalf("after the refused attempts the real decision failed: %v", q)
		}
	})

	t.Run("ConsentUnknownTxn", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		authzWantErrorPage(t, b.get(t, sys.GW+"/consent?txn="+authzRandom()), http.StatusBadRequest)
		authzWantErrorPage(t, b.get(t, sys.GW+"/consent"), http.StatusBadRequest)
		authzWantErrorPage(t, b.get(t, sys.GW+"/consent?txn=client:x"), http.StatusBadRequest)
		// Another browser gets no consent page (and so no CSRF token) for someone else's transaction.
		form, _ := b.toConsent(t, sys.newRequest(shared, loopback))
		authzWantErrorPage(t, sys.browser(t).get(t, sys.GW+"/consent?txn="+form.Get("txn")), http.StatusForbidden)
		other := sys.browser(t)
		other.authorize(t, sys.newRequest(shared, loopback)) // a valid cookie of its own
		authzWantErrorPage(t, other.get(t, sys.GW+"/consent?txn="+form.Get("txn")), http.StatusForbidden)
		// The owner still gets the page.
		if page := b.get(t, sys.GW+"/consent?txn="+form.Get("txn")); page.Status != http.StatusOK {
			t.Errorf("the owner's consent page: %d", page.Status)
		}
	})

	t.Run("ConsentDeny", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		r := sys.newRequest(shared, webQuery)
		form, _ := b.toConsent(t, r)
		form.Set("decision", "deny")
		resp := b.postConsent(t, form, nil)
		authzWantClientError(t, resp, r, "access_denied", true)
		if c := b.cookie("__Host-mcp-consent"); c != nil {
			t.Errorf("deny recorded an approval")
		}
		// The transaction is gone.
		form.Set("decision", "allow")
		if resp := b.postConsent(t, form, nil); resp.Status != http.StatusForbidden {
			t.Errorf("allow after deny: %d, want 403", resp.Status)
		}
	})

	t.Run("TamperedCookies", func(t *testing.T) {
		t.Parallel()
		client := sys.register(t, "Tamper", loopback)
		b := sys.browser(t)
		if _, shown := b.signIn(t, sys.newRequest(client, loopback)); !shown {
			t.Fatalf("first sign-in skipped consent")
		}
		good := b.cookie("__Host-mcp-consent").Value
		list, mac, _ := strings.Cut(good, ".")
		flip := func(s string, i int) string {
			c := byte('A')
			if s[i] == 'A' {
				c = 'B'
			}
			return s[:i] + string(c) + s[i+1:]
		}
		for name, v := range map[string]string{
			"EntryChanged":  flip(list, 5) + "." + mac,
			"MACChanged":    list + "." + flip(mac, 5),
			"MACMissing":    list,
			"EntryAppended": list + "~" + list + "." + mac,
			"Garbage":       "x",
		} {
			b.setCookie("__Host-mcp-consent", v)
			resp := b.authorize(t, sys.newRequest(client, loopback))
			if !strings.HasPrefix(resp.Header.Get("Location"), sys.GW+"/consent?") {
				t.Errorf("%s: a tampered approval cookie skipped consent (%d %q)", name, resp.Status, resp.Header.Get("Location"))
			}
		}
		b.setCookie("__Host-mcp-consent", good)
		if resp := b.authorize(t, sys.newRequest(client, loopback)); !strings.HasPrefix(resp.Header.Get("Location"), sys.NamedValues["EntraAuthorizeUrl"]+"?") {
			t.Errorf("the untouched approval cookie no longer skips consent: %q", resp.Header.Get("Location"))
		}
		// A tampered browser cookie is replaced by a new one.
		old := b.cookie("__Host-mcp-browser").Value
		id, bmac, _ := strings.Cut(old, ".")
		b.setCookie("__Host-mcp-browser", id+"."+flip(bmac, 3))
		resp := b.authorize(t, sys.newRequest(client, loopback))
		if resp.Status != http.StatusFound {
			t.Fatalf("/authorize: %d", resp.Status)
		}
		if now := b.cookie("__Host-mcp-browser").Value; now == old || strings.HasPrefix(now, id) {
			t.Errorf("a browser cookie with a bad MAC was kept (%q)", now)
		}
	})

	t.Run("ApprovalCookieKeepsNewest20", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		var clients []string
		for i := 0; i < 21; i++ {
			c := sys.register(t, "Client "+strconv.Itoa(i), loopback)
			clients = append(clients, c)
			form, _ := b.toConsent(t, sys.newRequest(c, loopback))
			form.Set("decision", "allow")
			b.toEntra(t, b.postConsent(t, form, nil))
		}
		entries, _, _ := strings.Cut(b.cookie("__Host-mcp-consent").Value, ".")
		if n := len(strings.Split(entries, "~")); n != 20 {
			t.Errorf("the approval cookie lists %d entries, want 20", n)
		}
		if resp := b.authorize(t, sys.newRequest(clients[0], loopback)); !strings.HasPrefix(resp.Header.Get("Location"), sys.GW+"/consent?") {
			t.Errorf("the oldest approval was not dropped")
		}
		for _, c := range []string{clients[1], clients[20]} {
			if resp := b.authorize(t, sys.newRequest(c, loopback)); !strings.HasPrefix(resp.Header.Get("Location"), sys.NamedValues["EntraAuthorizeUrl"]+"?") {
				t.Errorf("a recent approval was dropped")
			}
		}
	})

	t.Run("CallbackUnknownTxn", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		b.authorize(t, sys.newRequest(shared, loopback)) // a valid browser cookie
		for _, q := range []string{"state=" + authzRandom() + "&code=abc", "code=abc", "state=&code=abc", "state=client:x&code=abc",
			"state=" + authzRandom() + "&error=access_denied"} {
			authzWantErrorPage(t, b.get(t, sys.GW+"/oauth-callback?"+q), http.StatusBadRequest)
		}
	})

	t.Run("CallbackReplay", func(t *testing.T) {
		t.Parallel()
		b := sys.browser(t)
		r := sys.newRequest(shared, loopback)
		form, _ := b.toConsent(t, r)
		form.Set("decision", "allow")
		callback := b.throughEntra(t, b.toEntra(t, b.postConsent(t, form, nil)))
		authzToClient(t, b.get(t, callback), r)
		authzWantErrorPage(t, b.get(t, callback), http.StatusBadRequest)
	})

	t.Run("CallbackFromAnotherBrowser", func(t *testing.T) {
		t.Parallel()
		a := sys.browser(t)
		r := sys.newRequest(shared, loopback)
		form, _ := a.toConsent(t, r)
		form.Set("decision", "allow")
		callback := a.throughEntra(t, a.toEntra(t, a.postConsent(t, form, nil)))
		other := sys.browser(t)
		other.authorize(t, sys.newRequest(shared, loopback)) // B has a valid cookie of its own
		authzWantErrorPage(t, other.get(t, callback), http.StatusForbidden)
		authzWantErrorPage(t, sys.browser(t).get(t, callback), http.StatusBadRequest) // consumed
		// The transaction was consumed by the refused attempt: A must start again.
		authzWantErrorPage(t, a.get(t, callback), http.StatusBadRequest)
	})

	t.Run("Tenants", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			name, tid, err string
		}{
			{"NotAllowed", authzTenantOther, "access_denied"},
			{"AllowedListedInUpperCase", authzTenantB, ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := sys.newRequest(shared, loopback)
				r.Params.Set("login_hint", c.tid+":"+authzGUID()+":Tenant User")
				q, _ := sys.browser(t).signIn(t, r)
				if c.err == "" {
					if grant := sys.redeem(t, q.Get("code"), shared, loopback, r.Verifier); grant["tid"] != c.tid {
						t.Errorf("grant tid %v, want %s", grant["tid"], c.tid)
					}
					return
				}
				if q.Get("error") != c.err || q.Has("code") || q.Get("state") != r.State {
					t.Errorf("client got %v, want error=%s with state and no code", q, c.err)
				}
			})
		}
	})

	t.Run("EntraErrors", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct{ name, entraErr, want string }{
			{"AccessDenied", "access_denied", "access_denied"},
			{"ConsentRequired", "consent_required", "access_denied"},
			{"TemporarilyUnavailable", "temporarily_unavailable", "server_error"},
			{"Other", "invalid_request", "server_error"},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				r := sys.newRequest(shared, webQuery)
				// The system's stand-in answers login_hint "!<error>" with that error.
				r.Params.Set("login_hint", "!"+c.entraErr)
				q, _ := sys.browser(t).signIn(t, r)
				if q.Get("error") != c.want || q.Get("state") != r.State || q.Has("code") {
					t.Errorf("client got %v, want error=%s with state", q, c.want)
				}
			})
		}
	})

	t.Run("ClientCacheIsPerClient", func(t *testing.T) {
		t.Parallel()
		// Two clients looked up one after the other: each keeps its own redirect URIs.
		c1 := sys.register(t, "One", "https://one.example/cb")
		c2 := sys.register(t, "Two", "https://two.example/cb")
		b := sys.browser(t)
		for i := 0; i < 2; i++ {
			if resp := b.authorize(t, sys.newRequest(c1, "https://one.example/cb")); resp.Status != http.StatusFound {
				t.Fatalf("client one: %d", resp.Status)
			}
			authzWantErrorPage(t, b.authorize(t, sys.newRequest(c2, "https://one.example/cb")), http.StatusBadRequest)
			authzWantErrorPage(t, b.authorize(t, sys.newRequest(c1, "https://two.example/cb")), http.StatusBadRequest)
		}
	})
}

// TestAuthorizeIDToken: /oauth-callback refuses id_tokens that are not for
// this app, this sign-in or an allowed tenant, and a failed code redemption,
// each with an error to the client (FRONTDOOR.md section 5). Entra is the
// stand-in of this file, which can doctor the tokens.
func TestAuthorizeIDToken(t *testing.T) {
	t.Parallel()
	sys := authzStart(t, true)
	loopback := "http://127.0.0.1:4000/cb"
	client := sys.register(t, "ID token checks", loopback)
	clientID := sys.NamedValues["EntraClientId"]
	cases := []struct {
		name   string
		tid    string
		doctor func(map[string]any)
		err    string
	}{
		{"Honest", authzTenantA, nil, ""},
		{"WrongNonce", authzTenantA, func(c map[string]any) { c["nonce"] = authzRandom() }, "server_error"},
		{"NoNonce", authzTenantA, func(c map[string]any) { delete(c, "nonce") }, "server_error"},
		{"WrongAudience", authzTenantA, func(c map[string]any) { c["aud"] = authzGUID() }, "server_error"},
		{"TwoAudiences", authzTenantA, func(c map[string]any) { c["aud"] = []string{clientID, authzGUID()} }, "server_error"},
		{"IssuerOfAnotherTenant", authzTenantA, func(c map[string]any) { c["iss"] = sys.Entra.URL + "/" + authzTenantB + "/v2.0" }, "server_error"},
		{"IssuerOtherHost", authzTenantA, func(c map[string]any) { c["iss"] = "https://evil.example/" + authzTenantA + "/v2.0" }, "server_error"},
		{"IssuerV1", authzTenantA, func(c map[string]any) { c["iss"] = sys.Entra.URL + "/" + authzTenantA + "/" }, "server_error"},
		{"TenantNotAllowed", authzTenantOther, nil, "access_denied"},
		{"TidOfAllowedTenantIssuerNot", authzTenantOther, func(c map[string]any) { c["tid"] = authzTenantA }, "server_error"},
		{"OidNotGUID", authzTenantA, func(c map[string]any) { c["oid"] = "not-a-guid" }, "server_error"},
		{"NoTid", authzTenantA, func(c map[string]any) { delete(c, "tid") }, "server_error"},
		{"Expired", authzTenantA, func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, "server_error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := sys.newRequest(client, loopback)
			oid := authzGUID()
			r.Params.Set("login_hint", c.tid+":"+oid+":Doctored User")
			if c.doctor != nil {
				sys.Entra.Doctor(oid, c.doctor)
			}
			q, _ := sys.browser(t).signIn(t, r)
			if c.err == "" {
				grant := sys.redeem(t, q.Get("code"), client, loopback, r.Verifier)
				if grant["tid"] != c.tid || grant["oid"] != oid || grant["name"] != "Doctored User" || grant["preferred_username"] != "doctored.user@example.com" {
					t.Errorf("grant %v, want the stand-in's user", grant)
				}
				return
			}
			if q.Get("error") != c.err || q.Has("code") || q.Get("state") != r.State {
				t.Errorf("client got %v, want error=%s with state and no code", q, c.err)
			}
		})
	}
	t.Run("TokenEndpointFails", func(t *testing.T) {
		t.Parallel()
		r := sys.newRequest(client, loopback)
		_, oid, _ := r.User()
		sys.Entra.FailToken(oid)
		q, _ := sys.browser(t).signIn(t, r)
		if q.Get("error") != "server_error" || q.Get("state") != r.State || q.Has("code") {
			t.Errorf("client got %v, want error=server_error with state", q)
		}
	})
}

// wantCookie asserts resp sets name with the attributes FRONTDOOR requires.
func authzWantCookie(t *testing.T, resp authzResponse, name string) {
	t.Helper()
	for _, line := range resp.Header.Values("Set-Cookie") {
		if !strings.HasPrefix(line, name+"=") {
			continue
		}
		attrs := map[string]bool{}
		for _, a := range strings.Split(line, ";")[1:] {
			attrs[strings.ToLower(strings.TrimSpace(a))] = true
		}
		for _, want := range []string{"path=/", "secure", "httponly", "samesite=lax"} {
			if !attrs[want] {
				t.Errorf("Set-Cookie %s lacks %s: %q", name, want, line)
			}
		}
		for a := range attrs {
			if strings.HasPrefix(a, "domain=") {
				t.Errorf("Set-Cookie %s has a Domain (not allowed for __Host-): %q", name, line)
			}
		}
		return
	}
	t.Errorf("no Set-Cookie %s in %q", name, resp.Header.Values("Set-Cookie"))
}
