// Package e2e drives the real handler binary over loopback with real MCP
// clients, against a real Azurite.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// handlerBin is built once per test binary by TestMain.
var handlerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "e2e-handler-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	handlerBin = filepath.Join(dir, "handler")
	build := exec.Command("go", "build", "-o", handlerBin, "../handler")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the handler:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a handler process.
type proc struct {
	Port    int
	BaseURL string // http://127.0.0.1:PORT
	cmd     *exec.Cmd
	logs    *testenv.SyncBuffer
	exited  chan struct{}
}

// Logs returns what the handler wrote so far.
func (p *proc) Logs() string { return p.logs.String() }

// startBinary starts bin with env on a free loopback port and waits until
// /healthz answers. Cleanup stops it with SIGTERM (SIGKILL after 10 s).
func startBinary(t testing.TB, bin string, port int, env map[string]string) *proc {
	t.Helper()
	if port == 0 {
		port = freePort(t)
	}
	cmd := exec.Command(bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"FUNCTIONS_CUSTOMHANDLER_PORT=" + strconv.Itoa(port), "MCP_LISTEN_HOST=127.0.0.1"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	p := &proc{Port: port, BaseURL: "http://127.0.0.1:" + strconv.Itoa(port), cmd: cmd, logs: &testenv.SyncBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting handler: %v", err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("handler logs:\n%s", p.Logs())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.exited:
			t.Fatalf("handler exited during start-up:\n%s", p.Logs())
		default:
		}
		resp, err := http.Get(p.BaseURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("handler not healthy after 20 s:\n%s", p.Logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for the process to exit.
func (p *proc) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// ExitCode is valid after the process exited.
func (p *proc) ExitCode() int { return p.cmd.ProcessState.ExitCode() }

// env is the shared fixture of a test: one Azurite and a token issuer.
type env struct {
	Azurite testenv.Azurite
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
