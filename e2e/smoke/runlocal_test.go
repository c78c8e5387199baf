//go:build linux

package smoke

import (
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// The tests here start the system the way `make run` does
// (scripts/run-local.sh), on free ports with a temporary state directory,
// use what it prints, then stop it as Ctrl-C does and check that every
// port is free again.

// TestRunLocal: the whole system (Azurite, the handler, the Entra stand-in
// and the local gateway); the smoke suite runs against the gateway it
// prints.
func TestRunLocal(t *testing.T) {
	if _, err := exec.LookPath("mono"); err != nil {
		if os.Getenv(testenv.EnvRequireMono) == "1" {
			t.Fatalf("Mono is required (%s=1): %v", testenv.EnvRequireMono, err)
		}
		t.Skipf("Mono is not installed, so run-local.sh would start the handler alone: %v", err)
	}
	rl := startRunLocal(t, nil, "MCP server running behind the local API Management gateway")
	gw := "http://localhost:" + strconv.Itoa(rl.port("GATEWAY_PORT"))
	if !strings.Contains(rl.out.String(), "Give your MCP client this URL:  "+gw+"/mcp") {
		t.Errorf("run-local.sh does not print the MCP URL %s/mcp:\n%s", gw, rl.out)
	}
	t.Run("smoke", func(t *testing.T) { smoke(t, &target{gw: gw, c: newClient()}) })
	rl.stop(t)
}

// TestRunLocalAuthOff: `make run AUTH=off`, the handler alone with one
// local user; the Streamable HTTP URL it prints answers initialize.
func TestRunLocalAuthOff(t *testing.T) {
	rl := startRunLocal(t, []string{"AUTH=off"}, "MCP server running with authentication OFF")
	mcp := "http://localhost:" + strconv.Itoa(rl.port("PORT")) + "/mcp"
	if !strings.Contains(rl.out.String(), "Streamable HTTP: "+mcp) {
		t.Errorf("run-local.sh does not print %s:\n%s", mcp, rl.out)
	}
	req, _ := http.NewRequest("POST", mcp, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"runlocal","version":"1"}}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"serverInfo"`) {
		t.Errorf("initialize: %d %s", resp.StatusCode, body)
	}
	rl.stop(t)
}

var runLocalPorts = []string{"PORT", "GATEWAY_PORT", "ENTRA_PORT", "AZURITE_BLOB_PORT", "AZURITE_QUEUE_PORT", "AZURITE_TABLE_PORT"}

type runLocal struct {
	cmd    *exec.Cmd
	out    *testenv.SyncBuffer
	ports  map[string]int
	exited chan error
}

// startRunLocal runs scripts/run-local.sh with env added and waits until
// its output shows ready.
func startRunLocal(t *testing.T, env []string, ready string) *runLocal {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var full []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AUTH=") && !strings.HasPrefix(kv, "MCP_AUTH=") {
			full = append(full, kv)
		}
	}
	rl := &runLocal{out: &testenv.SyncBuffer{}, ports: map[string]int{}, exited: make(chan error, 1)}
	for i, p := range freePorts(t, len(runLocalPorts)) {
		rl.ports[runLocalPorts[i]] = p
		full = append(full, runLocalPorts[i]+"="+strconv.Itoa(p))
	}
	full = append(append(full, "RUN_DIR="+t.TempDir()), env...)

	rl.cmd = exec.Command("bash", "scripts/run-local.sh")
	rl.cmd.Dir, rl.cmd.Env = root, full
	rl.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the whole group
	rl.cmd.Stdout, rl.cmd.Stderr = rl.out, rl.out
	if err := rl.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { rl.exited <- rl.cmd.Wait() }()
	t.Cleanup(func() {
		// Whatever happened, leave nothing running.
		_ = syscall.Kill(-rl.cmd.Process.Pid, syscall.SIGKILL)
	})
	deadline := time.After(4 * time.Minute)
	for !strings.Contains(rl.out.String(), ready) {
		select {
		case err := <-rl.exited:
			t.Fatalf("run-local.sh exited before the system was up (%v):\n%s", err, rl.out)
		case <-deadline:
			t.Fatalf("run-local.sh did not report the system up within 4 minutes:\n%s", rl.out)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return rl
}

func (rl *runLocal) port(name string) int { return rl.ports[name] }

// stop sends Ctrl-C's SIGINT to the script's process group and checks that
// it stops and frees every port.
func (rl *runLocal) stop(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(-rl.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rl.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("run-local.sh did not stop within 60 s of Ctrl-C:\n%s", rl.out)
	}
	if !strings.Contains(rl.out.String(), "stopped") {
		t.Errorf("run-local.sh did not say it stopped:\n%s", rl.out)
	}
	for name, p := range rl.ports {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second); err == nil {
			c.Close()
			t.Errorf("%s %d still accepts connections after Ctrl-C", name, p)
		}
	}
}

// freePorts returns n distinct loopback ports that are free and lie below
// the kernel's ephemeral range: run-local.sh binds them seconds after they
// are chosen (it builds first), and in that time other tests' servers,
// which ask for port 0, are handed ephemeral ports only, never these.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	low := 32768 // Linux's default start of the ephemeral range
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	if low <= 11000 {
		t.Skipf("the ephemeral port range starts at %d: no room below it for run-local.sh's ports", low)
	}
	var ports []int
	seen := map[int]bool{}
	for tries := 0; len(ports) < n && tries < 1000; tries++ {
		p := 10100 + mrand.IntN(low-10100)
		if seen[p] {
			continue
		}
		seen[p] = true
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue // taken
		}
		l.Close()
		ports = append(ports, p)
	}
	if len(ports) < n {
		t.Fatalf("found only %d free ports below %d", len(ports), low)
	}
	return ports
}
