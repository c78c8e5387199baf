// Tests of the local API Management gateway (DESIGN section 7): they build
// gateway.exe once with build.sh, start it as a process per test case on a
// loopback port, and check APIM's documented policy behaviour against it.
//
// This file holds the harness: the build, the backends the gateway talks to
// (an echo server, an SSE server, one that never answers, a closed port),
// the JWT test keys, and starting and stopping gateway processes. The
// data-driven cases are in cases_test.go (format: testdata/README.md); the
// tests that need Go code of their own are in process_test.go.
//
// Mono is needed. Without mono or mcs the tests skip, unless
// MCP_REQUIRE_MONO=1, when they fail.
package gateway_test

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvRequireMono names the variable that turns "Mono missing" from a skip
// into a failure.
const EnvRequireMono = "MCP_REQUIRE_MONO"

// Budgets. Start-up includes Mono's JIT and compiling every policy
// expression with mcs; on a loaded 2-core machine that can take seconds.
const (
	startDeadline = 90 * time.Second
	stopDeadline  = 10 * time.Second
	checkDeadline = 90 * time.Second
)

// The state TestMain prepares for every test.
var (
	gatewayExe  string // built gateway.exe; empty when unavailable
	unavailable string // why gatewayExe is empty: a skip reason
	buildFailed string // build output when build.sh failed: a failure

	env *testEnv
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	out, err := os.MkdirTemp("", "apim-gateway-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(out)

	prepareGateway(out)
	env, err = newTestEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test environment:", err)
		return 1
	}
	defer env.close()
	return m.Run()
}

// prepareGateway builds gateway.exe into out, or records why it can't.
func prepareGateway(out string) {
	for _, tool := range []string{"mono", "mcs"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable = fmt.Sprintf("%s is not installed (scripts/mono.sh installs Mono); set %s=1 to fail instead of skipping", tool, EnvRequireMono)
			return
		}
	}
	start := time.Now()
	cmd := exec.Command("bash", "build.sh", out)
	b, err := cmd.CombinedOutput()
	if err != nil {
		buildFailed = fmt.Sprintf("bash build.sh %s: %v\n%s", out, err, b)
		return
	}
	gatewayExe = filepath.Join(out, "gateway.exe")
	if _, err := os.Stat(gatewayExe); err != nil {
		buildFailed = fmt.Sprintf("build.sh succeeded but %s is missing: %v\n%s", gatewayExe, err, b)
		gatewayExe = ""
		return
	}
	fmt.Fprintf(os.Stderr, "built gateway.exe in %v\n", time.Since(start).Round(time.Millisecond))
}

// needGateway returns the path of gateway.exe, or skips or fails the test.
func needGateway(t testing.TB) string {
	t.Helper()
	switch {
	case buildFailed != "":
		t.Fatalf("the gateway does not build:\n%s", buildFailed)
	case unavailable != "":
		if os.Getenv(EnvRequireMono) == "1" {
			t.Fatalf("%s", unavailable)
		}
		t.Skip(unavailable)
	}
	return gatewayExe
}

// ---------------------------------------------------------------------------
// Backends and keys shared by all tests.

// testEnv holds the backends and keys that cases reach through named values.
type testEnv struct {
	echo, sse, oidc *httptest.Server
	hang            *hangServer
	closedURL       string
	closedFD        int // the socket holding closedURL's port

	rsaKey, otherRSAKey *rsa.PrivateKey
	hmacKey, otherHMAC  []byte
}

func newTestEnv() (*testEnv, error) {
	e := &testEnv{}
	var err error
	if e.rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if e.otherRSAKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	e.hmacKey, e.otherHMAC = make([]byte, 32), make([]byte, 32)
	rand.Read(e.hmacKey)
	rand.Read(e.otherHMAC)

	e.echo = httptest.NewServer(http.HandlerFunc(echoHandler))
	e.sse = httptest.NewServer(http.HandlerFunc(sseHandler))
	e.oidc = httptest.NewServer(http.HandlerFunc(e.oidcHandler))
	if e.hang, err = newHangServer(); err != nil {
		return nil, err
	}
	// A port nobody listens on, for as long as the tests run: a socket bound
	// to it without listening refuses connections and keeps any other
	// process (tests of other packages run beside these) from taking it.
	// Closing a listener instead left the port free for the next one the
	// kernel handed out, and a handler test once answered there.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, err
	}
	e.closedFD = fd
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return nil, err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	e.closedURL = fmt.Sprintf("http://127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	return e, nil
}

func (e *testEnv) close() {
	_ = syscall.Close(e.closedFD)
	e.echo.Close()
	e.sse.Close()
	e.oidc.Close()
	e.hang.close()
}

// namedValues are the named values every case gets (testdata/README.md).
func (e *testEnv) namedValues() map[string]string {
	return map[string]string{
		"backend":        e.echo.URL,
		"sse-backend":    e.sse.URL,
		"hang-backend":   e.hang.url,
		"closed-backend": e.closedURL,
		"jwt-n":          b64url(e.rsaKey.N.Bytes()),
		"jwt-e":          b64url(big.NewInt(int64(e.rsaKey.E)).Bytes()),
		"jwt-hmac-key":   base64.StdEncoding.EncodeToString(e.hmacKey),
		"oidc-config":    e.oidc.URL + "/.well-known/openid-configuration",
		"oidc-issuer":    e.oidc.URL + "/",
	}
}

// oidcKid is the kid of the RSA test key in the OIDC server's JWKS.
const oidcKid = "test-key"

// oidcHandler is a minimal OpenID provider: its metadata (issuer
// {{oidc-issuer}}, jwks_uri) and a JWKS holding the RSA test key.
func (e *testEnv) oidcHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                                e.oidc.URL + "/",
			"jwks_uri":                              e.oidc.URL + "/keys",
			"authorization_endpoint":                e.oidc.URL + "/authorize",
			"token_endpoint":                        e.oidc.URL + "/token",
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	case "/keys":
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{map[string]any{
			"kty": "RSA", "use": "sig", "alg": "RS256", "kid": oidcKid,
			"n": b64url(e.rsaKey.N.Bytes()), "e": b64url(big.NewInt(int64(e.rsaKey.E)).Bytes()),
		}}})
	default:
		http.NotFound(w, r)
	}
}

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// echoReply is what the echo backend answers: the request it received.
type echoReply struct {
	Method   string              `json:"method"`
	Path     string              `json:"path"`
	RawQuery string              `json:"rawQuery"`
	Query    map[string][]string `json:"query"`
	Host     string              `json:"host"`
	Headers  map[string]string   `json:"headers"`
	Body     string              `json:"body"`
}

// normalizeHeader joins all lines of a header as the cases compare them:
// every line split at commas, each piece trimmed, joined again with ",".
// So "a, b" on one line and "a" and "b" on two lines both read "a,b".
func normalizeHeader(lines []string) string {
	var parts []string
	for _, l := range lines {
		for _, p := range strings.Split(l, ",") {
			parts = append(parts, strings.TrimSpace(p))
		}
	}
	return strings.Join(parts, ",")
}

// echoHandler answers 200 with a JSON echoReply. Request headers steer it:
// X-Echo-Status (answer this status), X-Echo-Delay-Ms (wait first),
// X-Echo-Response-Header ("Name: value", comma-separated for several: add
// response headers). It always sets X-Echo: echo. A request for
// /echo-redirect is answered 302 with Location: /redirected.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	reply := echoReply{
		Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Query: map[string][]string(r.URL.Query()), Host: r.Host,
		Headers: map[string]string{}, Body: string(body),
	}
	for name, lines := range r.Header {
		reply.Headers[strings.ToLower(name)] = normalizeHeader(lines)
	}
	if ms, err := strconv.Atoi(r.Header.Get("X-Echo-Delay-Ms")); err == nil && ms > 0 {
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
	status := http.StatusOK
	if s, err := strconv.Atoi(r.Header.Get("X-Echo-Status")); err == nil {
		status = s
	}
	for _, spec := range strings.Split(normalizeHeader(r.Header.Values("X-Echo-Response-Header")), ",") {
		if name, value, ok := strings.Cut(spec, ":"); ok {
			w.Header().Add(strings.TrimSpace(name), strings.TrimSpace(value))
		}
	}
	if r.URL.Path == "/echo-redirect" {
		w.Header().Set("Location", "/redirected")
		status = http.StatusFound
	}
	w.Header().Set("X-Echo", "echo")
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	b, _ := json.Marshal(reply)
	w.WriteHeader(status)
	w.Write(b)
}

// sseHandler sends an SSE event, waits 300 ms, sends another and ends.
func sseHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "event: message\ndata: one\n\n")
	w.(http.Flusher).Flush()
	select {
	case <-time.After(300 * time.Millisecond):
	case <-r.Context().Done():
		return
	}
	fmt.Fprint(w, "event: message\ndata: two\n\n")
}

// hangServer accepts connections and never answers on them.
type hangServer struct {
	l   net.Listener
	url string

	mu    sync.Mutex
	conns []net.Conn
}

func newHangServer() (*hangServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &hangServer{l: l, url: "http://" + l.Addr().String()}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			h.conns = append(h.conns, c)
			h.mu.Unlock()
			go io.Copy(io.Discard, c) // read the request, answer nothing
		}
	}()
	return h, nil
}

func (h *hangServer) close() {
	h.l.Close()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.conns {
		c.Close()
	}
}

// ---------------------------------------------------------------------------
// JWTs.

// tokenSpec describes a token a case can send (testdata/README.md).
type tokenSpec struct {
	// Key signs the token: "rsa" (default; verifies with {{jwt-n}}/{{jwt-e}}),
	// "rsa-other" (another RSA key: the signature does not verify), "hmac"
	// (HS256 with {{jwt-hmac-key}}), "hmac-other" (HS256, another secret) or
	// "none" (alg none, no signature).
	Key string `json:"key"`
	// Kid, when set, goes into the JOSE header.
	Kid string `json:"kid"`
	// Claims of the token. exp is now+1h unless given; "exp": null leaves it
	// out. A string "now", "now+N" or "now-N" becomes a NumericDate; in other
	// strings the runner's named values ({{oidc-issuer}}, ...) are replaced.
	Claims map[string]any `json:"claims"`
}

var nowRelative = regexp.MustCompile(`^now(?:([+-])(\d+))?$`)

// mint signs a token described by spec.
func (e *testEnv) mint(spec tokenSpec) (string, error) {
	now := time.Now().Unix()
	claims := map[string]any{"exp": now + 3600}
	for k, v := range spec.Claims {
		if v == nil {
			delete(claims, k)
			continue
		}
		if s, ok := v.(string); ok {
			if m := nowRelative.FindStringSubmatch(s); m != nil {
				n, _ := strconv.ParseInt(m[2], 10, 64)
				if m[1] == "-" {
					n = -n
				}
				v = now + n
			} else {
				for name, value := range e.namedValues() {
					s = strings.ReplaceAll(s, "{{"+name+"}}", value)
				}
				v = s
			}
		}
		claims[k] = v
	}
	key := spec.Key
	if key == "" {
		key = "rsa"
	}
	alg := map[string]string{"rsa": "RS256", "rsa-other": "RS256", "hmac": "HS256", "hmac-other": "HS256", "none": "none"}[key]
	if alg == "" {
		return "", fmt.Errorf("unknown token key %q", key)
	}
	header := map[string]any{"alg": alg, "typ": "JWT"}
	if spec.Kid != "" {
		header["kid"] = spec.Kid
	}
	hb, _ := json.Marshal(header)
	cb, _ := json.Marshal(claims)
	input := b64url(hb) + "." + b64url(cb)
	var sig []byte
	switch key {
	case "rsa", "rsa-other":
		k := e.rsaKey
		if key == "rsa-other" {
			k = e.otherRSAKey
		}
		sum := sha256.Sum256([]byte(input))
		var err error
		if sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, sum[:]); err != nil {
			return "", err
		}
	case "hmac", "hmac-other":
		k := e.hmacKey
		if key == "hmac-other" {
			k = e.otherHMAC
		}
		m := hmac.New(sha256.New, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	}
	return input + "." + b64url(sig), nil
}

var tokenRef = regexp.MustCompile(`\{\{token:([A-Za-z0-9_.-]+)\}\}`)

// expandTokens replaces {{token:NAME}} in s with a token minted from
// tokens[NAME]. Tokens are minted once per case and reused.
func (e *testEnv) expandTokens(s string, tokens map[string]tokenSpec, minted map[string]string) (string, error) {
	var firstErr error
	out := tokenRef.ReplaceAllStringFunc(s, func(ref string) string {
		name := tokenRef.FindStringSubmatch(ref)[1]
		if tok, ok := minted[name]; ok {
			return tok
		}
		spec, ok := tokens[name]
		if !ok {
			if firstErr == nil {
				firstErr = fmt.Errorf("{{token:%s}}: no token %q in the case's \"tokens\"", name, name)
			}
			return ref
		}
		tok, err := e.mint(spec)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		minted[name] = tok
		return tok
	})
	return out, firstErr
}

// ---------------------------------------------------------------------------
// Gateway processes.

// readyWriter is the gateway's stdout: it copies everything to log and
// reports the first "listening on <url>" line.
type readyWriter struct {
	log     *testenv.SyncBuffer
	partial []byte
	ready   chan string
	once    sync.Once
}

var listeningLine = regexp.MustCompile(`^listening on (http://127\.0\.0\.1:\d+)$`)

func (w *readyWriter) Write(p []byte) (int, error) {
	w.log.Write(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(w.partial[:i]), "\r")
		w.partial = w.partial[i+1:]
		if m := listeningLine.FindStringSubmatch(line); m != nil {
			w.once.Do(func() { w.ready <- m[1] })
		}
	}
	return len(p), nil
}

// Gateway is a running `gateway.exe serve`.
type Gateway struct {
	URL string
	// StartUp is the time from starting the process to its "listening" line.
	StartUp time.Duration

	cmd    *exec.Cmd
	stdout *readyWriter
	output *testenv.SyncBuffer // stdout and stderr, interleaved
	done   chan struct{}
	err    error // cmd.Wait's result, once done is closed
}

// bundle is a manifest and a named values file on disk.
type bundle struct {
	Manifest, NamedValues string
}

// writeBundle writes manifest.json and named-values.json into dir, beside
// the policy files already there. The named values are the environment's
// plus extra (a name in both is an error).
func writeBundle(t testing.TB, dir string, manifest any, extra map[string]string) bundle {
	t.Helper()
	nv := env.namedValues()
	for k, v := range extra {
		if _, dup := nv[k]; dup {
			t.Fatalf("named value %q is provided by the test runner; choose another name", k)
		}
		nv[k] = v
	}
	b := bundle{Manifest: filepath.Join(dir, "manifest.json"), NamedValues: filepath.Join(dir, "named-values.json")}
	for path, v := range map[string]any{b.Manifest: manifest, b.NamedValues: nv} {
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// startGateway starts `gateway.exe serve` for b, waits for its listening
// line and stops it when the test ends (SIGTERM, then SIGKILL). Its output
// is printed if the test failed.
func startGateway(t testing.TB, b bundle) *Gateway {
	t.Helper()
	exe := needGateway(t)
	g := &Gateway{output: &testenv.SyncBuffer{}, done: make(chan struct{})}
	g.stdout = &readyWriter{log: g.output, ready: make(chan string, 1)}
	g.cmd = exec.Command("mono", "--debug", exe, "serve",
		"--manifest", b.Manifest, "--named-values", b.NamedValues, "--port", "0", "--host", "127.0.0.1")
	g.cmd.Dir = filepath.Dir(b.Manifest)
	g.cmd.Stdout = g.stdout
	g.cmd.Stderr = g.output
	// Its own process group, so that a last-resort kill also reaches the
	// compiler processes it may have started, and nothing else.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	g.cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("start gateway: %v", err)
	}
	go func() {
		g.err = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		g.Stop(t)
		if t.Failed() {
			t.Logf("gateway output (stdout and stderr):\n%s", indent(g.output.String()))
		}
	})
	select {
	case url := <-g.stdout.ready:
		g.URL = url
		g.StartUp = time.Since(start)
	case <-g.done:
		t.Fatalf("gateway exited before listening (%v)", g.err)
	case <-time.After(startDeadline):
		t.Fatalf("gateway did not print its listening line within %v", startDeadline)
	}
	return g
}

// Stop sends SIGTERM and waits; after stopDeadline it kills the process
// group the gateway was started in. It returns how long the exit took.
func (g *Gateway) Stop(t testing.TB) time.Duration {
	select {
	case <-g.done:
		return 0
	default:
	}
	start := time.Now()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
		return time.Since(start)
	case <-time.After(stopDeadline):
		t.Errorf("gateway did not exit within %v of SIGTERM; killing it", stopDeadline)
		syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.done
		return time.Since(start)
	}
}

// Exited reports whether the process has ended, and how.
func (g *Gateway) Exited() (bool, error) {
	select {
	case <-g.done:
		return true, g.err
	default:
		return false, nil
	}
}

// runCheck runs `gateway.exe check` for b and returns its exit code and
// combined output.
func runCheck(t testing.TB, b bundle) (int, string) {
	t.Helper()
	exe := needGateway(t)
	cmd := exec.Command("mono", "--debug", exe, "check", "--manifest", b.Manifest, "--named-values", b.NamedValues)
	cmd.Dir = filepath.Dir(b.Manifest)
	var out testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start check: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(checkDeadline):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("check did not finish within %v; output:\n%s", checkDeadline, indent(out.String()))
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode(), out.String()
	default:
		t.Fatalf("check: %v; output:\n%s", err, indent(out.String()))
		return -1, ""
	}
}

// client does not follow redirects: cases check the gateway's own answer.
var client = &http.Client{
	Timeout:       60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// writeFiles writes name → content into dir.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func indent(s string) string {
	if s == "" {
		return "    (nothing)"
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var b strings.Builder
	for sc.Scan() {
		b.WriteString("    ")
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// durations summarises start-up times for the report.
type durations struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *durations) add(d time.Duration) {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
}

func (s *durations) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.d) == 0 {
		return "none measured"
	}
	d := append([]time.Duration(nil), s.d...)
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	r := func(x time.Duration) time.Duration { return x.Round(time.Millisecond) }
	return fmt.Sprintf("n=%d min=%v median=%v mean=%v max=%v", len(d), r(d[0]), r(d[len(d)/2]), r(sum/time.Duration(len(d))), r(d[len(d)-1]))
}
