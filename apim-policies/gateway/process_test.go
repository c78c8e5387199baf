package gateway_test

// Tests that need Go code of their own: streaming, concurrency, shutdown
// and verifying managed-identity tokens against the gateway's JWKS.

import (
	"bufio"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// forwardPolicy is an operation policy that only forwards.
func forwardPolicy(forwardAttrs string) string {
	return "<policies>\n    <inbound />\n    <backend>\n        <forward-request " + forwardAttrs + "/>\n    </backend>\n    <outbound />\n</policies>\n"
}

// oneOperation is a manifest with one API at the root.
func oneOperation(serviceURL, method, template, policy string) map[string]any {
	return map[string]any{"apis": []any{map[string]any{
		"name": "test", "path": "", "serviceUrl": serviceURL,
		"operations": []any{map[string]any{"name": "op", "method": method, "urlTemplate": template, "policy": policy}},
	}}}
}

// TestSSEStreamsBeforeBackendEnds: forward-request-policy.md, buffer-response
// "false": "each chunk is returned immediately" (needed for server-sent
// events). The backend sends one event and then waits for the test, which
// releases it only after the client has read that event through the gateway.
func TestSSEStreamsBeforeBackendEnds(t *testing.T) {
	needGateway(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	var backendEnded atomic.Bool
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer backendEnded.Store(true)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, "event: message\ndata: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		case <-time.After(60 * time.Second):
			return
		}
		fmt.Fprint(w, "event: message\ndata: second\n\n")
	}))
	t.Cleanup(backend.Close)
	t.Cleanup(unblock) // runs before backend.Close

	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.xml": forwardPolicy(`buffer-response="false" `)})
	g := startGateway(t, writeBundle(t, dir, oneOperation(backend.URL, "GET", "/events", "policy.xml"), nil))

	type result struct {
		resp  *http.Response
		first string
		err   error
	}
	firstEvent := make(chan result, 1)
	var rd *bufio.Reader
	go func() {
		resp, err := client.Get(g.URL + "/events")
		if err != nil {
			firstEvent <- result{err: err}
			return
		}
		rd = bufio.NewReader(resp.Body)
		ev, err := readEvent(rd)
		firstEvent <- result{resp: resp, first: ev, err: err}
	}()
	var res result
	select {
	case res = <-firstEvent:
	case <-time.After(20 * time.Second):
		t.Fatal("no first event within 20 s while the backend held the stream open: the gateway buffers the response despite buffer-response=\"false\"")
	}
	if res.err != nil {
		t.Fatalf("reading the first event: %v", res.err)
	}
	defer res.resp.Body.Close()
	if backendEnded.Load() {
		t.Fatal("the backend finished before the client read the first event; the test is broken")
	}
	if res.resp.StatusCode != 200 || !strings.HasPrefix(res.resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("status %d, Content-Type %q; want 200 text/event-stream", res.resp.StatusCode, res.resp.Header.Get("Content-Type"))
	}
	if !strings.Contains(res.first, "data: first") {
		t.Errorf("first event = %q, want data: first", res.first)
	}

	unblock()
	rest := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(rd)
		rest <- string(b)
	}()
	select {
	case s := <-rest:
		if !strings.Contains(s, "data: second") {
			t.Errorf("after the first event the stream held %q, want the second event", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the stream did not end within 20 s of the backend finishing")
	}
}

// readEvent reads one SSE event (up to a blank line).
func readEvent(rd *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := rd.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if strings.TrimRight(line, "\r\n") == "" && strings.TrimSpace(b.String()) != "" {
			return b.String(), nil
		}
	}
}

// TestConcurrentRequestsOverlap: a gateway serves requests concurrently, as
// APIM does. Ten requests go out at once to a backend that holds each until
// all ten have arrived (or 3 s pass); the backend must have seen all ten in
// flight together.
func TestConcurrentRequestsOverlap(t *testing.T) {
	needGateway(t)
	const n = 10
	var inFlight, maxInFlight atomic.Int32
	all := make(chan struct{})
	var allOnce sync.Once
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/slow/") {
			fmt.Fprint(w, "warm")
			return
		}
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := maxInFlight.Load()
			if now <= m || maxInFlight.CompareAndSwap(m, now) {
				break
			}
		}
		if now >= n {
			allOnce.Do(func() { close(all) })
		}
		select {
		case <-all:
		case <-time.After(3 * time.Second):
		}
		fmt.Fprintf(w, "done %s", r.URL.Path)
	}))
	t.Cleanup(backend.Close)

	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.xml": forwardPolicy("")})
	g := startGateway(t, writeBundle(t, dir, oneOperation(backend.URL, "GET", "/*", "policy.xml"), nil))
	// Warm the gateway up (first-request JIT), then measure.
	if resp, err := client.Get(g.URL + "/warmup"); err == nil {
		resp.Body.Close()
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("%s/slow/%d", g.URL, i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(b) != fmt.Sprintf("done /slow/%d", i) {
				errs <- fmt.Errorf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d parallel requests took %v; the backend saw at most %d in flight", n, time.Since(start).Round(time.Millisecond), maxInFlight.Load())
	if got := maxInFlight.Load(); got != n {
		t.Errorf("the backend saw at most %d requests in flight at once, want all %d: the gateway does not forward concurrently (Mono's default ServicePoint connection limit is 2 per host)", got, n)
	}
}

// TestSIGTERMStopsPromptly: the gateway contract says serve stops on
// SIGTERM; it should exit by itself, with status 0, within a few seconds,
// and free its port.
func TestSIGTERMStopsPromptly(t *testing.T) {
	needGateway(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.xml": forwardPolicy("")})
	g := startGateway(t, writeBundle(t, dir, oneOperation(env.echo.URL, "GET", "/*", "policy.xml"), nil))
	resp, err := client.Get(g.URL + "/before-stop")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET before stopping: %d", resp.StatusCode)
	}

	start := time.Now()
	if err := g.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.done:
	case <-time.After(stopDeadline):
		t.Fatalf("still running %v after SIGTERM", stopDeadline)
	}
	took := time.Since(start)
	t.Logf("exited %v after SIGTERM (%v)", took.Round(time.Millisecond), g.err)
	if g.err != nil {
		var status string
		if ee, ok := g.err.(*exec.ExitError); ok {
			status = ee.ProcessState.String()
		}
		t.Errorf("exit after SIGTERM: %v (%s); want a clean exit with status 0", g.err, status)
	}
	if took > 5*time.Second {
		t.Errorf("took %v to exit after SIGTERM; want a prompt stop (under 5 s)", took)
	}
	if out := g.output.String(); strings.Contains(out, "Unhandled Exception") || strings.Contains(out, "Stacktrace:") {
		t.Errorf("output after SIGTERM shows a crash:\n%s", indent(out))
	}
	addr := strings.TrimPrefix(g.URL, "http://")
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after the gateway exited", addr)
	}
}

// jwk is one key of a JWKS.
type jwk struct {
	Kty, Kid, Alg, Use, N, E string
}

// TestManagedIdentityTokenVerifies: authentication-managed-identity-policy.md
// "sets the value of the token in the Authorization header using the Bearer
// scheme" for the resource; "API Management caches the token until it
// expires". The local gateway's tokens are RS256 JWTs with iss
// https://local-gateway/managed-identity and aud = resource, verifiable with
// the JWKS it serves at /.local-gateway/managed-identity/jwks.json.
func TestManagedIdentityTokenVerifies(t *testing.T) {
	needGateway(t)
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"policy.xml": `<policies>
    <inbound>
        <authentication-managed-identity resource="@(context.Request.Headers.GetValueOrDefault("X-Resource", "api://default-app"))" />
    </inbound>
    <backend>
        <forward-request />
    </backend>
    <outbound />
</policies>
`})
	g := startGateway(t, writeBundle(t, dir, oneOperation(env.echo.URL, "GET", "/call", "policy.xml"), nil))

	keys := fetchJWKS(t, g.URL+"/.local-gateway/managed-identity/jwks.json")
	tokens := map[string]string{}
	for _, resource := range []string{"https://management.azure.com/", "api://backend-app", "https://management.azure.com/"} {
		token := tokenFor(t, g, resource)
		header, claims := verifyRS256(t, token, keys)
		if header["alg"] != "RS256" {
			t.Errorf("%s: alg %v, want RS256", resource, header["alg"])
		}
		if claims["iss"] != "https://local-gateway/managed-identity" {
			t.Errorf("%s: iss %v, want https://local-gateway/managed-identity", resource, claims["iss"])
		}
		if !audienceIs(claims["aud"], resource) {
			t.Errorf("aud %v, want %q", claims["aud"], resource)
		}
		exp, ok := claims["exp"].(float64)
		if !ok || time.Unix(int64(exp), 0).Before(time.Now()) {
			t.Errorf("%s: exp %v is missing or past", resource, claims["exp"])
		}
		if prev, seen := tokens[resource]; seen && prev != token {
			t.Errorf("%s: a second request got a different token; the doc says the token is cached until it expires", resource)
		}
		tokens[resource] = token
	}
	if tokens["https://management.azure.com/"] == tokens["api://backend-app"] {
		t.Error("two resources got the same token")
	}

	// The verifier itself must reject a token changed after signing.
	token := tokens["api://backend-app"]
	parts := strings.Split(token, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	forged := strings.Replace(string(claims), "api://backend-app", "api://other-app", 1)
	if err := checkRS256(parts[0]+"."+base64.RawURLEncoding.EncodeToString([]byte(forged))+"."+parts[2], keys); err == nil {
		t.Error("a forged token verified; the JWKS check is not checking")
	}
}

func fetchJWKS(t *testing.T, url string) []jwk {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	var set struct{ Keys []jwk }
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("GET %s: not a JWKS with keys (%v): %s", url, err, b)
	}
	return set.Keys
}

// tokenFor sends a request that makes the gateway fetch a token for
// resource and returns the bearer token the backend received.
func tokenFor(t *testing.T, g *Gateway, resource string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", g.URL+"/call", nil)
	req.Header.Set("X-Resource", resource)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var echo echoReply
	if resp.StatusCode != 200 || json.Unmarshal(b, &echo) != nil {
		t.Fatalf("request for %s: %d %s", resource, resp.StatusCode, b)
	}
	token, ok := strings.CutPrefix(echo.Headers["authorization"], "Bearer ")
	if !ok {
		t.Fatalf("request for %s: the backend got Authorization %q, want Bearer <token>", resource, echo.Headers["authorization"])
	}
	return token
}

// verifyRS256 checks token's signature against keys and returns its header
// and claims.
func verifyRS256(t *testing.T, token string, keys []jwk) (map[string]any, map[string]any) {
	t.Helper()
	if err := checkRS256(token, keys); err != nil {
		t.Fatalf("token does not verify against the JWKS: %v\ntoken: %s", err, token)
	}
	parts := strings.Split(token, ".")
	var header, claims map[string]any
	for i, dst := range []*map[string]any{&header, &claims} {
		b, _ := base64.RawURLEncoding.DecodeString(parts[i])
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatalf("token segment %d: %v", i, err)
		}
	}
	return header, claims
}

func checkRS256(token string, keys []jwk) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return fmt.Errorf("%d segments", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return fmt.Errorf("header: %v", err)
	}
	var header struct{ Alg, Kid string }
	if err := json.Unmarshal(hb, &header); err != nil {
		return fmt.Errorf("header: %v", err)
	}
	if header.Alg != "RS256" {
		return fmt.Errorf("alg %q", header.Alg)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return fmt.Errorf("signature: %v", err)
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	tried := 0
	for _, k := range keys {
		if k.Kty != "RSA" || (header.Kid != "" && k.Kid != header.Kid) {
			continue
		}
		nb, err1 := base64.RawURLEncoding.DecodeString(k.N)
		eb, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("JWKS key %q: n or e is not base64url", k.Kid)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(new(big.Int).SetBytes(eb).Int64())}
		tried++
		if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) == nil {
			return nil
		}
	}
	if tried == 0 {
		return fmt.Errorf("no RSA key with kid %q in the JWKS", header.Kid)
	}
	return fmt.Errorf("signature does not verify with %d key(s)", tried)
}

func audienceIs(aud any, want string) bool {
	switch a := aud.(type) {
	case string:
		return a == want
	case []any:
		return len(a) == 1 && a[0] == want
	}
	return false
}
