package testenv

// The whole local system for tests: Azurite, the handler with authentication
// on, the Entra stand-in (scripts/entra-standin.mjs on Node.js) and the local
// API Management gateway (Mono) executing apim-policies/apis.json, wired
// together through a named-values file as in Azure (FRONTDOOR.md; `make run`
// starts the same system with scripts/run-local.sh).

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
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

	"github.com/mcp-apim/remote-mcp/apim-policies/keyset"
)

// EnvRequireMono names the variable that turns a missing Mono (mono, mcs)
// from a skip into a failure, as in apim-policies/gateway's tests.
const EnvRequireMono = "MCP_REQUIRE_MONO"

// Fixed identities of the local system. None is a secret.
const (
	// LocalTenantID and LocalObjectID are the user the Entra stand-in signs
	// in when the authorization request has no login_hint; the same ids as
	// the handler's MCP_AUTH=off user (handler/auth/local.go).
	LocalTenantID = "00000000-0000-0000-0000-000000000000"
	LocalObjectID = "00000000-0000-0000-0000-000000000001"
	// LocalUserName and LocalUserPreferredUsername are its name claims.
	LocalUserName              = "Local developer"
	LocalUserPreferredUsername = "local@localhost"
	// LocalEntraClientID is the client id of the (stand-in) Entra app
	// registration: named value EntraClientId, the id_token's aud.
	LocalEntraClientID = "5f0c3a8e-2b7d-4c1e-9a64-3d8e2f1b7c90"
	// LocalManagedIdentityClientID is named value ManagedIdentityClientId,
	// the client id of the gateway's (emulated) user-assigned identity.
	LocalManagedIdentityClientID = "3c9a7d52-8e14-4b6f-a0d3-7f25e9c1b846"
	// GatewayManagedIdentityPrincipalID is the sub of every managed-identity
	// token the local gateway mints (ManagedIdentity.PrincipalId in
	// apim-policies/gateway/src/Policies/ManagedIdentity.cs); the stand-in
	// accepts client assertions with this subject only, like the federated
	// identity credential of the Entra app in Azure.
	GatewayManagedIdentityPrincipalID = "6d1a0f0e-5c4b-4f3e-9a2d-0c1b2a3f4e5d"
	// ManagedIdentityJWKSPath is where the local gateway serves the public
	// key of its managed-identity tokens.
	ManagedIdentityJWKSPath = "/.local-gateway/managed-identity/jwks.json"
)

// Budgets. The gateway compiles every policy expression at start (mcs), the
// slowest part; a loaded 2-core machine running other test packages needs
// room.
const (
	gatewayStartDeadline = 90 * time.Second
	processStartDeadline = 30 * time.Second
	stopGrace            = 10 * time.Second
	systemStartAttempts  = 3
)

// SystemOptions adjusts StartSystem. The zero value starts the system as
// `make run` does, on free ports.
type SystemOptions struct {
	// Manifest is the gateway's API manifest; default
	// <repo>/apim-policies/apis.json.
	Manifest string
	// AllowedTenants is named value EntraAllowedTenants; default
	// [LocalTenantID].
	AllowedTenants []string
	// NamedValues adds named values or overrides generated ones before the
	// gateway starts. Only the gateway sees them: to use other keys, pass
	// Keys, which the handler gets too.
	NamedValues map[string]string
	// Keys is a key set (keyset.Names) to use; missing keys are generated.
	// Default: a fresh set.
	Keys map[string]string
	// HandlerEnv adds to or overrides the handler's environment; an empty
	// value removes the variable.
	HandlerEnv map[string]string
}

// System is a running local system. Its processes stop when the test ends
// (or at Stop).
type System struct {
	// GatewayURL is the gateway's public origin, named value GatewayUrl:
	// http://localhost:<port>. "localhost", not 127.0.0.1, because it is the
	// name browsers and MCP clients use, and browsers keep Secure (and so
	// __Host-) cookies on http only for localhost and loopback addresses; Go's
	// cookie jar accepts both. The gateway listens on 127.0.0.1 and accepts
	// any Host.
	GatewayURL string
	// HandlerURL is the handler's own origin, named value FunctionAppUrl:
	// http://127.0.0.1:<port>.
	HandlerURL string
	// EntraURL is the Entra stand-in's origin, http://127.0.0.1:<port>; its
	// v2 endpoints are EntraURL/<tenant>/oauth2/v2.0/{authorize,token}.
	EntraURL string
	// Azurite is the storage the handler uses.
	Azurite Azurite

	// Keys is the key set (keyset.Names: TokenSigningKey, TokenSigningKid,
	// TokenJwks, BrowserKey, InternalKey).
	Keys map[string]string
	// The same keys, and the function key, one by one.
	InternalKey, BrowserKey, FunctionKey, TokenSigningKid, TokenJwks string
	// SigningKey is TokenSigningKey parsed, to mint access tokens in tests.
	SigningKey *rsa.PrivateKey

	// NamedValues is what the gateway reads (NamedValuesFile).
	NamedValues     map[string]string
	NamedValuesFile string
	// Manifest is the manifest the gateway serves.
	Manifest string
	// Dir is a temporary directory of this system.
	Dir string
	// StartUp is how long StartSystem took, builds excluded.
	StartUp time.Duration

	t        testing.TB
	mu       sync.Mutex
	procs    []*sysProc
	stopOnce sync.Once
}

// ResourceURL is the MCP Streamable HTTP endpoint behind the gateway, the
// access tokens' audience: GatewayURL + "/mcp".
func (s *System) ResourceURL() string { return s.GatewayURL + "/mcp" }

// StartSystem builds what it needs (the handler and gateway.exe, once per
// test binary), generates keys, writes the named values, starts Azurite, the
// handler (authentication on), the Entra stand-in and the gateway on free
// loopback ports, and waits until each answers. Everything it started is
// stopped when the test ends.
//
// Without Mono the test is skipped (failed when MCP_REQUIRE_MONO=1); without
// Node.js or the npm packages, skipped (failed when MCP_REQUIRE_AZURITE=1).
func StartSystem(t testing.TB, opts SystemOptions) *System {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	// Everything that may skip comes before anything starts.
	node, err := NodeBinary(root)
	if err != nil {
		missingNPM(t, err.Error())
	}
	standin := filepath.Join(root, "scripts", "entra-standin.mjs")
	if _, err := os.Stat(filepath.Join(root, "node_modules", "oauth2-mock-server", "package.json")); err != nil {
		missingNPM(t, "oauth2-mock-server is not installed")
	}
	gatewayExe := gatewayBinary(t, root)
	handlerExe := handlerBinary(t, root)

	manifest := opts.Manifest
	if manifest == "" {
		manifest = filepath.Join(root, "apim-policies", "apis.json")
	}
	if manifest, err = filepath.Abs(manifest); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if _, err := os.Stat(manifest); err != nil {
		t.Fatalf("testenv: the gateway manifest: %v", err)
	}
	keys, _, err := keyset.Complete(rand.Reader, opts.Keys)
	if err != nil {
		t.Fatalf("testenv: keys: %v", err)
	}
	signing, err := keyset.ParseXMLPrivateKey(keys[keyset.TokenSigningKey])
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	fk := make([]byte, 24)
	_, _ = rand.Read(fk)

	s := &System{
		Keys:            keys,
		InternalKey:     keys[keyset.InternalKey],
		BrowserKey:      keys[keyset.BrowserKey],
		TokenSigningKid: keys[keyset.TokenSigningKid],
		TokenJwks:       keys[keyset.TokenJwks],
		FunctionKey:     base64.RawURLEncoding.EncodeToString(fk),
		SigningKey:      signing,
		Manifest:        manifest,
		Dir:             t.TempDir(),
		t:               t,
	}
	s.NamedValuesFile = filepath.Join(s.Dir, "named-values.json")
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("testenv: logs of the system:\n%s", s.Logs())
		}
	})

	start := time.Now()
	for attempt := 1; ; attempt++ {
		err := s.start(root, node, standin, gatewayExe, handlerExe, opts)
		if err == nil {
			break
		}
		s.stopProcs()
		if attempt < systemStartAttempts && errors.Is(err, errPortTaken) {
			t.Logf("testenv: %v; retrying on other ports", err)
			continue
		}
		t.Fatalf("testenv: starting the system: %v (the logs follow)", err)
	}
	s.StartUp = time.Since(start)
	return s
}

// errPortTaken marks a start that failed because another process took one
// of the ports picked a moment before.
var errPortTaken = errors.New("a port was taken")

var inUse = regexp.MustCompile(`(?i)address already in use|EADDRINUSE|address in use`)

// start starts the three processes of one attempt (and Azurite, the first
// time) and waits until each is ready.
func (s *System) start(root, node, standin, gatewayExe, handlerExe string, opts SystemOptions) error {
	ports, err := pickPorts(3)
	if err != nil {
		return err
	}
	gwPort, handlerPort, entraPort := ports[0], ports[1], ports[2]
	s.GatewayURL = "http://localhost:" + strconv.Itoa(gwPort)
	s.HandlerURL = "http://127.0.0.1:" + strconv.Itoa(handlerPort)
	s.EntraURL = "http://127.0.0.1:" + strconv.Itoa(entraPort)

	tenants := opts.AllowedTenants
	if len(tenants) == 0 {
		tenants = []string{LocalTenantID}
	}
	nv := map[string]string{
		"GatewayUrl":              s.GatewayURL,
		"FunctionAppUrl":          s.HandlerURL,
		"FunctionKey":             s.FunctionKey,
		"EntraAuthorizeUrl":       s.EntraURL + "/organizations/oauth2/v2.0/authorize",
		"EntraTokenUrl":           s.EntraURL + "/organizations/oauth2/v2.0/token",
		"EntraClientId":           LocalEntraClientID,
		"EntraIssuerPrefix":       s.EntraURL + "/",
		"EntraAllowedTenants":     strings.Join(tenants, ","),
		"ManagedIdentityClientId": LocalManagedIdentityClientID,
	}
	for _, name := range keyset.Names() {
		nv[name] = s.Keys[name]
	}
	for k, v := range opts.NamedValues {
		nv[k] = v
	}
	s.NamedValues = nv
	b, err := json.MarshalIndent(nv, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(s.NamedValuesFile, append(b, '\n'), 0o600); err != nil {
		return err
	}

	entra, err := s.launch("entra-standin", root, nil, node, standin,
		"--port", strconv.Itoa(entraPort), "--host", "127.0.0.1",
		"--client-id", nv["EntraClientId"],
		"--tenant-issuer-prefix", nv["EntraIssuerPrefix"],
		"--redirect-uri", nv["GatewayUrl"]+"/oauth-callback",
		"--assertion-jwks", nv["GatewayUrl"]+ManagedIdentityJWKSPath,
		"--assertion-subject", GatewayManagedIdentityPrincipalID)
	if err != nil {
		return err
	}
	gateway, err := s.launch("gateway", root, nil, "mono", "--debug", gatewayExe, "serve",
		"--manifest", s.Manifest, "--named-values", s.NamedValuesFile,
		"--port", strconv.Itoa(gwPort), "--host", "127.0.0.1")
	if err != nil {
		return err
	}
	if s.Azurite.inst == nil {
		s.Azurite = StartAzurite(s.t) // fails the test itself
		// Cleanups run last in, first out: stop the handler before its storage.
		s.t.Cleanup(s.Stop)
	}

	env := map[string]string{
		"PATH":                         os.Getenv("PATH"),
		"HOME":                         os.Getenv("HOME"),
		"FUNCTIONS_CUSTOMHANDLER_PORT": strconv.Itoa(handlerPort),
		"MCP_LISTEN_HOST":              "127.0.0.1",
		"AzureWebJobsStorage":          s.Azurite.ConnectionString,
		"MCP_TOKEN_ISSUER":             s.GatewayURL,
		"MCP_RESOURCE_URL":             s.ResourceURL(),
		"MCP_TOKEN_JWKS":               s.TokenJwks,
		"MCP_INTERNAL_KEY":             s.InternalKey,
		"MCP_FAMILY_CHECK_SECONDS":     "1",
	}
	for k, v := range opts.HandlerEnv {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	slices.Sort(envList)
	handler, err := s.launch("handler", root, envList, handlerExe)
	if err != nil {
		return err
	}

	if err := entra.waitListening(processStartDeadline, s.EntraURL); err != nil {
		return err
	}
	if err := handler.waitHTTP(processStartDeadline, s.HandlerURL+"/healthz"); err != nil {
		return err
	}
	if err := gateway.waitListening(gatewayStartDeadline, "http://127.0.0.1:"+strconv.Itoa(gwPort)); err != nil {
		return err
	}
	// The stand-in fetches this JWKS to verify the gateway's client assertions.
	return gateway.waitHTTP(processStartDeadline, s.GatewayURL+ManagedIdentityJWKSPath)
}

// Stop stops every process of the system (SIGTERM to each process group,
// SIGKILL after 10 s) and Azurite, and waits for them. It is idempotent and
// also runs when the test ends.
func (s *System) Stop() {
	s.stopOnce.Do(func() {
		s.stopProcs()
		if s.Azurite.inst != nil {
			s.Azurite.Stop()
		}
	})
}

// stopProcs stops the processes of the current attempt, in parallel.
func (s *System) stopProcs() {
	s.mu.Lock()
	procs := slices.Clone(s.procs)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.stop(); err != nil {
				s.t.Errorf("testenv: %v", err)
			}
		}()
	}
	wg.Wait()
}

// Logs returns the output of every process of the system (the current and
// earlier attempts), each under a heading, for failure messages. Tokens may
// appear in it: the handler, gateway and stand-in keep them out of their logs.
func (s *System) Logs() string {
	s.mu.Lock()
	procs := slices.Clone(s.procs)
	s.mu.Unlock()
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "==== %s (pid %d) ====\n%s\n", p.name, p.cmd.Process.Pid, p.out.String())
	}
	if s.Azurite.inst != nil {
		b.WriteString("==== azurite ====\n" + s.Azurite.inst.logTail() + "\n")
	}
	return b.String()
}

// Log returns the output so far of one component: "gateway", "handler" or
// "entra-standin" (its latest process).
func (s *System) Log(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.procs) - 1; i >= 0; i-- {
		if s.procs[i].name == name {
			return s.procs[i].out.String()
		}
	}
	return ""
}

// sysProc is one process of the system, in a process group of its own.
type sysProc struct {
	name string
	cmd  *exec.Cmd
	out  *watchWriter
	done chan struct{} // closed once cmd.Wait has returned
	err  error
}

// launch starts a process in root with env (nil: this process's
// environment), output captured.
func (s *System) launch(name, root string, env []string, bin string, args ...string) (*sysProc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = env
	p := &sysProc{name: name, cmd: cmd, out: newWatchWriter("listening on "), done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = sysProcAttr()
	// A grandchild (the gateway's mcs) holding the output pipe must not
	// keep Wait from returning.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

// exitedEarly is the error for a process that ended during start-up.
func (p *sysProc) exitedEarly() error {
	err := fmt.Errorf("%s exited during start-up (%v)", p.name, p.err)
	if inUse.MatchString(p.out.String()) {
		return fmt.Errorf("%w: %w", errPortTaken, err)
	}
	return err
}

// waitListening waits for the "listening on <want>" line.
func (p *sysProc) waitListening(d time.Duration, want string) error {
	select {
	case got := <-p.out.ready:
		if got != want {
			return fmt.Errorf("%s listens on %s, want %s", p.name, got, want)
		}
		return nil
	case <-p.done:
		return p.exitedEarly()
	case <-time.After(d):
		return fmt.Errorf("%s did not print its listening line within %v", p.name, d)
	}
}

// waitHTTP waits until GET url answers 200.
func (p *sysProc) waitHTTP(d time.Duration, url string) error {
	c := http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(d)
	last := errors.New("no answer")
	for {
		select {
		case <-p.done:
			return p.exitedEarly()
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: GET %s did not answer 200 within %v: %v", p.name, url, d, last)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// stop sends SIGTERM to the process group, SIGKILL after stopGrace, waits
// for the process, then kills whatever else is left in its group.
func (p *sysProc) stop() error {
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
	default:
		terminate(p.cmd.Process)
		select {
		case <-p.done:
		case <-time.After(stopGrace):
			kill(p.cmd.Process)
			select {
			case <-p.done:
			case <-time.After(30 * time.Second):
				return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, pgid)
			}
		}
	}
	if len(groupMembers(pgid)) > 0 {
		killGroup(pgid)
	}
	return nil
}

// watchWriter keeps a process's output and reports the first line starting
// with prefix (the rest of the line) on ready.
type watchWriter struct {
	prefix string
	ready  chan string

	mu      sync.Mutex
	all     bytes.Buffer
	line    []byte
	matched bool
}

func newWatchWriter(prefix string) *watchWriter {
	return &watchWriter{prefix: prefix, ready: make(chan string, 1)}
}

func (w *watchWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(b)
	if w.matched {
		return len(b), nil
	}
	w.line = append(w.line, b...)
	for {
		i := bytes.IndexByte(w.line, '\n')
		if i < 0 {
			break
		}
		l := strings.TrimRight(string(w.line[:i]), "\r")
		w.line = w.line[i+1:]
		if rest, ok := strings.CutPrefix(l, w.prefix); ok {
			w.matched = true
			w.ready <- strings.TrimSpace(rest)
			w.line = nil
			break
		}
	}
	return len(b), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// pickPorts picks the ports of one attempt (a variable for the test of the
// retry).
var pickPorts = freeLoopbackPorts

// freeLoopbackPorts returns n distinct ports free on 127.0.0.1 a moment ago
// (and on [::1] where there is IPv6, since "localhost" may resolve to it).
func freeLoopbackPorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n && tries < 20*n; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		port := l.Addr().(*net.TCPAddr).Port
		if l6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port))); err == nil {
			l6.Close()
		} else if !isNoIPv6(err) {
			continue // taken on ::1: try another
		}
		ports = append(ports, port)
	}
	if len(ports) < n {
		return nil, errors.New("finding free ports: too many taken on ::1")
	}
	return ports, nil
}

// isNoIPv6 reports whether err says there is no ::1 to listen on at all.
func isNoIPv6(err error) bool {
	s := err.Error()
	return strings.Contains(s, "cannot assign requested address") || strings.Contains(s, "address family not supported") ||
		strings.Contains(s, "no suitable address")
}

// missingNPM skips (or, with MCP_REQUIRE_AZURITE=1, fails) a test whose npm
// packages are not installed.
func missingNPM(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(EnvRequireAzurite) == "1" {
		t.Fatalf("the npm packages are required (%s=1) but %s; run `npm ci` in the repository root", EnvRequireAzurite, why)
	}
	t.Skipf("%s (run `npm ci` or `make test`)", why)
}

// Builds, once per test binary, into a directory of this process that a
// later test binary removes (a library has no hook at the end of the binary).
var builds struct {
	dirOnce sync.Once
	dir     string
	dirErr  error

	handlerOnce sync.Once
	handler     string
	handlerErr  error

	gatewayOnce sync.Once
	gateway     string
	gatewayErr  error
	noMono      string
}

const buildDirPrefix = "mcp-testenv-"

func buildDir() (string, error) {
	builds.dirOnce.Do(func() {
		// Remove the builds of test binaries that have ended.
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), buildDirPrefix+"*"))
		for _, d := range old {
			pidText, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), buildDirPrefix), "-")
			if pid, err := strconv.Atoi(pidText); err == nil && pid != os.Getpid() && !pidAlive(pid) {
				os.RemoveAll(d)
			}
		}
		builds.dir, builds.dirErr = os.MkdirTemp("", buildDirPrefix+strconv.Itoa(os.Getpid())+"-")
	})
	return builds.dir, builds.dirErr
}

// handlerBinary builds the handler once per test binary.
func handlerBinary(t testing.TB, root string) string {
	t.Helper()
	builds.handlerOnce.Do(func() {
		dir, err := buildDir()
		if err != nil {
			builds.handlerErr = err
			return
		}
		out := filepath.Join(dir, "handler")
		cmd := exec.Command("go", "build", "-o", out, "./handler")
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			builds.handlerErr = fmt.Errorf("go build ./handler: %v\n%s", err, b)
			return
		}
		builds.handler = out
	})
	if builds.handlerErr != nil {
		t.Fatalf("testenv: %v", builds.handlerErr)
	}
	return builds.handler
}

// gatewayBinary builds gateway.exe once per test binary, or skips the test
// (fails it with MCP_REQUIRE_MONO=1) when Mono is not installed.
func gatewayBinary(t testing.TB, root string) string {
	t.Helper()
	builds.gatewayOnce.Do(func() {
		for _, tool := range []string{"mono", "mcs"} {
			if _, err := exec.LookPath(tool); err != nil {
				builds.noMono = tool + " is not installed (scripts/mono.sh installs Mono)"
				return
			}
		}
		dir, err := buildDir()
		if err != nil {
			builds.gatewayErr = err
			return
		}
		out := filepath.Join(dir, "gateway")
		cmd := exec.Command("bash", filepath.Join("apim-policies", "gateway", "build.sh"), out)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			builds.gatewayErr = fmt.Errorf("bash apim-policies/gateway/build.sh: %v\n%s", err, b)
			return
		}
		builds.gateway = filepath.Join(out, "gateway.exe")
	})
	switch {
	case builds.noMono != "":
		if os.Getenv(EnvRequireMono) == "1" {
			t.Fatalf("Mono is required (%s=1): %s", EnvRequireMono, builds.noMono)
		}
		t.Skipf("%s; set %s=1 to fail instead of skipping", builds.noMono, EnvRequireMono)
	case builds.gatewayErr != nil:
		t.Fatalf("testenv: %v", builds.gatewayErr)
	}
	return builds.gateway
}
