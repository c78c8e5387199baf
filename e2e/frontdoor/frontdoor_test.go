// Package frontdoor tests the OAuth front door end to end: the real policy
// bundle (apim-policies/apis.json) executed by the local API Management
// gateway, in front of the real handler binary on Azurite, started by
// testenv.StartSystem. Requests go through the gateway exactly as MCP
// clients send them; where a test needs state that another front-door step
// would create (an authorization code, as /oauth-callback creates it), it
// calls the handler's internal API directly with the internal key, as the
// callback policy does.
//
// Between the gateway and the handler sits a small recording proxy of this
// package, so tests can see what the gateway really sends to the backend
// (headers it must strip, the function key it must add).
package frontdoor

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mcpgoclient "github.com/mark3labs/mcp-go/client"
	mcpgotransport "github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// frontDoor is a running system plus what the tests need to drive it.
type frontDoor struct {
	sys *testenv.System
	// gw is the gateway origin, named value GatewayUrl.
	gw    string
	proxy *recordingProxy
	http  *http.Client
	// signer mints tokens with the gateway's signing key (and kid) for the
	// attack cases; the key and kid are set per token through Claims.
	signer *authtest.Issuer
}

// headerTestID marks a request so the recording proxy can file what the
// backend received under it.
const headerTestID = "X-Frontdoor-Test-Id"

// startFrontDoor starts the whole system with the handler behind the
// recording proxy: named value FunctionAppUrl is the proxy, which forwards
// to the handler once StartSystem has told us where it is.
func startFrontDoor(t *testing.T) *frontDoor {
	t.Helper()
	proxy := newRecordingProxy(t)
	sys := testenv.StartSystem(t, testenv.SystemOptions{
		// FRONTDOOR_MANIFEST runs the suite against another bundle (a
		// modified copy, to see that the tests catch a broken policy).
		Manifest:    os.Getenv("FRONTDOOR_MANIFEST"),
		NamedValues: map[string]string{"FunctionAppUrl": proxy.URL()},
	})
	proxy.setTarget(t, sys.HandlerURL)
	t.Logf("system started in %v: gateway %s, handler %s (behind %s)", sys.StartUp.Round(time.Millisecond), sys.GatewayURL, sys.HandlerURL, proxy.URL())
	return &frontDoor{
		sys:    sys,
		gw:     sys.GatewayURL,
		proxy:  proxy,
		http:   &http.Client{Timeout: 30 * time.Second},
		signer: authtest.NewIssuer(t, sys.GatewayURL),
	}
}

// jwkNE returns n and e of the key kid in the JWKS.
func jwkNE(t *testing.T, jwks, kid string) (string, string) {
	t.Helper()
	var set struct {
		Keys []struct{ Kid, N, E string } `json:"keys"`
	}
	if err := json.Unmarshal([]byte(jwks), &set); err != nil {
		t.Fatalf("TokenJwks: %v", err)
	}
	for _, k := range set.Keys {
		if k.Kid == kid {
			return k.N, k.E
		}
	}
	t.Fatalf("TokenJwks has no key %q", kid)
	return "", ""
}

// --- the recording proxy between the gateway and the handler ---

type recordingProxy struct {
	srv    *httptest.Server
	target atomic.Pointer[url.URL]

	mu   sync.Mutex
	seen map[string][]recorded // by X-Frontdoor-Test-Id
	// internal holds the headers of the gateway's internal API calls.
	internal []http.Header
}

type recorded struct {
	Method, Path string
	Header       http.Header
}

func newRecordingProxy(t *testing.T) *recordingProxy {
	p := &recordingProxy{seen: map[string][]recorded{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.target.Load())
			pr.Out.Host = pr.In.Host
		},
		FlushInterval: -1, // SSE: pass every write on at once
		ErrorLog:      nil,
	}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.target.Load() == nil {
			http.Error(w, "the test has not set the proxy target yet", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		if id := r.Header.Get(headerTestID); id != "" {
			p.seen[id] = append(p.seen[id], recorded{r.Method, r.URL.Path, r.Header.Clone()})
		}
		if strings.HasPrefix(r.URL.Path, "/internal/oauth/") {
			p.internal = append(p.internal, r.Header.Clone())
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	// Registered before StartSystem: cleanups run last-in first-out, so
	// the system is gone (and its streams with it) before this closes.
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
	})
	return p
}

func (p *recordingProxy) URL() string { return p.srv.URL }

func (p *recordingProxy) setTarget(t *testing.T, raw string) {
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	p.target.Store(u)
}

// requests returns what the backend received for the test id.
func (p *recordingProxy) requests(id string) []recorded {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]recorded(nil), p.seen[id]...)
}

func (p *recordingProxy) internalCalls() []http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]http.Header(nil), p.internal...)
}

// --- HTTP helpers ---

// response is an answer with its body read.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as a JSON object; it fails the test if it is not one.
func (r response) JSON(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object (%v): %q", err, r.Body)
	}
	return m
}

func (fd *frontDoor) do(t *testing.T, method, path string, body []byte, hdr map[string]string) response {
	t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = fd.gw + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := fd.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func (fd *frontDoor) postJSON(t *testing.T, path string, v any) response {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return fd.do(t, "POST", path, b, map[string]string{"Content-Type": "application/json"})
}

func (fd *frontDoor) postForm(t *testing.T, path string, form url.Values) response {
	t.Helper()
	return fd.do(t, "POST", path, []byte(form.Encode()), map[string]string{"Content-Type": "application/x-www-form-urlencoded"})
}

// internal calls the handler's internal OAuth API directly, as the
// gateway's policies do.
func (fd *frontDoor) internal(t *testing.T, method, path string, v any) response {
	t.Helper()
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	return fd.do(t, method, fd.sys.HandlerURL+"/internal/oauth/"+path, body, map[string]string{
		"Content-Type":   "application/json",
		"x-internal-key": fd.sys.InternalKey,
	})
}

// wantOAuthError checks an OAuth error answer: status, error code, a
// description, JSON, and no caching.
func wantOAuthError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d; body %s", r.Status, status, r.Body)
	}
	m := r.JSON(t)
	if m["error"] != code {
		t.Fatalf("error %v, want %q; body %s", m["error"], code, r.Body)
	}
	if d, _ := m["error_description"].(string); d == "" {
		t.Errorf("no error_description: %s", r.Body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	if ao := r.Header.Get("Access-Control-Allow-Origin"); ao != "*" {
		t.Errorf("Access-Control-Allow-Origin %q, want *", ao)
	}
}

// --- clients, codes and tokens ---

// user is a signed-in Entra user as /oauth-callback would record it.
type user struct{ TID, OID, Name, PreferredUsername string }

func newUser() user {
	tid, oid := authtest.GUID(), authtest.GUID()
	return user{tid, oid, "Front Door " + oid[:8], "fd-" + oid[:8] + "@example.com"}
}

// client is a registered public client.
type client struct {
	ID          string
	RedirectURI string
}

// register registers a client through the gateway.
func (fd *frontDoor) register(t *testing.T) client {
	t.Helper()
	redirect := "http://127.0.0.1:33418/callback"
	r := fd.postJSON(t, "/register", map[string]any{"redirect_uris": []string{redirect}, "client_name": "front door e2e"})
	if r.Status != http.StatusCreated {
		t.Fatalf("register: %d %s", r.Status, r.Body)
	}
	id, _ := r.JSON(t)["client_id"].(string)
	if id == "" {
		t.Fatalf("register: no client_id: %s", r.Body)
	}
	return client{id, redirect}
}

// pkce returns a fresh verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	return verifier, sha256Sum(verifier)
}

// sha256Sum is base64url(SHA-256(s)), the S256 code challenge of s.
func sha256Sum(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// codeOptions describes an authorization code to create.
type codeOptions struct {
	Resource string // "" means <gw>/mcp
	User     user
}

// newCode stores an authorization code through the internal API, as
// /oauth-callback does, and returns it with its PKCE verifier.
func (fd *frontDoor) newCode(t *testing.T, c client, o codeOptions) (code, verifier string) {
	t.Helper()
	verifier, challenge := pkce()
	if o.Resource == "" {
		o.Resource = fd.gw + "/mcp"
	}
	if o.User.TID == "" {
		o.User = newUser()
	}
	r := fd.internal(t, "POST", "codes", map[string]any{
		"client_id": c.ID, "redirect_uri": c.RedirectURI,
		"code_challenge": challenge, "code_challenge_method": "S256",
		"resource": o.Resource, "scope": "mcp.tools",
		"tid": o.User.TID, "oid": o.User.OID, "name": o.User.Name, "preferred_username": o.User.PreferredUsername,
	})
	if r.Status != http.StatusCreated {
		t.Fatalf("internal API: creating a code: %d %s", r.Status, r.Body)
	}
	code, _ = r.JSON(t)["code"].(string)
	return code, verifier
}

// tokens is a successful /token answer.
type tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

func decodeTokens(t *testing.T, r response) tokens {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("token endpoint: %d %s", r.Status, r.Body)
	}
	var tk tokens
	if err := json.Unmarshal(r.Body, &tk); err != nil {
		t.Fatalf("token response: %v: %s", err, r.Body)
	}
	return tk
}

func (fd *frontDoor) exchange(t *testing.T, c client, code, verifier string) response {
	t.Helper()
	return fd.postForm(t, "/token", url.Values{
		"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {c.RedirectURI},
		"client_id": {c.ID}, "code_verifier": {verifier},
	})
}

func (fd *frontDoor) refresh(t *testing.T, c client, refreshToken string) response {
	t.Helper()
	return fd.postForm(t, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}, "client_id": {c.ID}})
}

// login registers a client and signs a user in up to tokens.
func (fd *frontDoor) login(t *testing.T, u user) (client, tokens) {
	t.Helper()
	c := fd.register(t)
	code, verifier := fd.newCode(t, c, codeOptions{User: u})
	return c, decodeTokens(t, fd.exchange(t, c, code, verifier))
}

// jwtParts decodes a JWT's header and claims (no verification).
func jwtParts(t *testing.T, token string) (header, claims map[string]any) {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d segments", len(parts))
	}
	dec := func(s string) map[string]any {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatalf("JWT segment is not base64url without padding: %v", err)
		}
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("JWT segment is not a JSON object: %v", err)
		}
		return m
	}
	return dec(parts[0]), dec(parts[1])
}

// verifyRS256 checks the token's signature with the public key.
func verifyRS256(token string, pub *rsa.PublicKey) error {
	i := strings.LastIndex(token, ".")
	sig, err := base64.RawURLEncoding.DecodeString(token[i+1:])
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte(token[:i]))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig)
}

// publicKeyFromJWKS returns the RSA key kid of a JWKS document.
func publicKeyFromJWKS(t *testing.T, doc []byte, kid string) *rsa.PublicKey {
	t.Helper()
	n, e := jwkNE(t, string(doc), kid)
	nb, err1 := base64.RawURLEncoding.DecodeString(n)
	eb, err2 := base64.RawURLEncoding.DecodeString(e)
	if err1 != nil || err2 != nil {
		t.Fatalf("JWK n/e are not base64url")
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
}

// --- MCP ---

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"frontdoor-e2e","version":"1"}}}`

// mcpStatus sends an initialize to /mcp through the gateway and returns the status.
func (fd *frontDoor) mcpStatus(t *testing.T, token string) int {
	t.Helper()
	return fd.do(t, "POST", "/mcp", []byte(initBody), map[string]string{
		"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
		"Authorization": "Bearer " + token,
	}).Status
}

// waitRefused polls /mcp until the token is refused (the handler caches a
// family's status for a second in these tests).
func (fd *frontDoor) waitRefused(t *testing.T, token, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	start := time.Now()
	for {
		status := fd.mcpStatus(t, token)
		if status == http.StatusUnauthorized {
			t.Logf("%s: refused after %v", what, time.Since(start).Round(10*time.Millisecond))
			return
		}
		if status != http.StatusOK {
			t.Fatalf("%s: /mcp answered %d while waiting for 401", what, status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the access token still works 10 s after its family was revoked", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// callHello connects an mcp-go client (Streamable HTTP or SSE) through the
// gateway with the token, lists the tools and calls hello.
func (fd *frontDoor) callHello(t *testing.T, transport, token string) map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	headers := map[string]string{"Authorization": "Bearer " + token}
	var c *mcpgoclient.Client
	var err error
	switch transport {
	case "streamable":
		c, err = mcpgoclient.NewStreamableHttpClient(fd.gw+"/mcp", mcpgotransport.WithHTTPHeaders(headers))
	case "sse":
		c, err = mcpgoclient.NewSSEMCPClient(fd.gw+"/mcp/sse", mcpgotransport.WithHeaders(headers))
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("%s: start: %v", transport, err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "frontdoor-e2e", Version: "1"}
	if _, err := c.Initialize(ctx, init); err != nil {
		t.Fatalf("%s: initialize: %v", transport, err)
	}
	list, err := c.ListTools(ctx, mcpgo.ListToolsRequest{})
	if err != nil {
		t.Fatalf("%s: tools/list: %v", transport, err)
	}
	found := false
	for _, tool := range list.Tools {
		found = found || tool.Name == "hello"
	}
	if !found {
		t.Fatalf("%s: tools/list has no hello", transport)
	}
	call := mcpgo.CallToolRequest{}
	call.Params.Name = "hello"
	res, err := c.CallTool(ctx, call)
	if err != nil {
		t.Fatalf("%s: tools/call hello: %v", transport, err)
	}
	if res.IsError {
		t.Fatalf("%s: hello failed: %+v", transport, res.Content)
	}
	b, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	var who map[string]any
	if err := json.Unmarshal(b, &who); err != nil {
		t.Fatalf("%s: hello's structured content: %v: %s", transport, err, b)
	}
	return who
}

// mint signs claims with the gateway's own key and kid unless the claims
// say otherwise: the tokens an attacker or a broken issuer would send.
func (fd *frontDoor) mint(t *testing.T, mutate func(*authtest.Claims)) string {
	t.Helper()
	u := newUser()
	c := fd.signer.User(u.TID, u.OID)
	c.SigningKey = fd.sys.SigningKey
	c.Kid = fd.sys.TokenSigningKid
	if mutate != nil {
		mutate(&c)
	}
	return fd.signer.Mint(t, c)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}
