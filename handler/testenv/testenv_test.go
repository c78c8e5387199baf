package testenv

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNodeMajor(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"v22.23.3", 22, true},
		{"v20.20.2", 20, true},
		{"v100.0.0", 100, true},
		{"22.1.0", 0, false},
		{"vX.1", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, err := nodeMajor(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("nodeMajor(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "module github.com/mcp-apim/remote-mcp") {
		t.Errorf("%s/go.mod is not this repository's", root)
	}
}

func TestNodeBinaryExplainsHowToGetNode(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := NodeBinary(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "npm ci") {
		t.Errorf("NodeBinary without Node = %v; want an error that says to run npm ci", err)
	}
}

// recordTB stands in for a test to catch StartAzurite's skip or failure.
type recordTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordTB) Helper() {}

func (r *recordTB) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordTB) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestAzuriteMissing(t *testing.T) {
	run := func(require string) *recordTB {
		t.Setenv(EnvRequireAzurite, require)
		r := &recordTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			startAzurite(r, t.TempDir()) // a "repository" without node_modules
			t.Error("startAzurite returned without Azurite")
		}()
		<-done
		return r
	}
	r := run("")
	if r.failed != "" || !strings.HasPrefix(r.skipped, "azurite not installed (run `npm ci` or `make test`): ") {
		t.Errorf("without %s: skipped %q, failed %q; want a skip", EnvRequireAzurite, r.skipped, r.failed)
	}
	r = run("1")
	if r.skipped != "" || !strings.Contains(r.failed, EnvRequireAzurite+"=1") || !strings.Contains(r.failed, "npm ci") {
		t.Errorf("with %s=1: skipped %q, failed %q; want a failure", EnvRequireAzurite, r.skipped, r.failed)
	}
}

func TestAzuriteStopRestart(t *testing.T) {
	az := StartAzurite(t)
	for _, u := range []string{az.BlobURL, az.QueueURL} {
		if !strings.HasPrefix(u, "http://127.0.0.1:") || !strings.HasSuffix(u, "/"+AzuriteAccountName) {
			t.Errorf("endpoint %q is not a loopback path-style URL", u)
		}
		if !strings.Contains(az.ConnectionString, u) {
			t.Errorf("connection string lacks %s", u)
		}
	}
	answers := func(u string) bool {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get(u + "?comp=list")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	}
	if !answers(az.BlobURL) || !answers(az.QueueURL) {
		t.Fatal("Azurite does not answer after StartAzurite")
	}

	pids := az.inst.pids()
	az.Stop()
	for _, pid := range pids {
		if processExists(pid) {
			t.Errorf("process %d is still there after Stop", pid)
		}
	}
	for _, u := range []string{az.BlobURL, az.QueueURL} {
		host := strings.TrimPrefix(u, "http://")
		host = host[:strings.Index(host, "/")]
		if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Stop", host)
		}
	}
	az.Stop() // idempotent

	az.Restart()
	if !answers(az.BlobURL) || !answers(az.QueueURL) {
		t.Fatal("Azurite does not answer after Restart")
	}
	if n := len(az.inst.pids()); n != 2 {
		t.Errorf("%d processes after Restart; want 2 (blob and queue)", n)
	}
}

// TestAzuriteCleanup checks that a test's Azurite is gone once the test is.
func TestAzuriteCleanup(t *testing.T) {
	var pids []int
	t.Run("inner", func(t *testing.T) {
		az := StartAzurite(t)
		pids = az.inst.pids()
	})
	if len(pids) != 2 {
		t.Fatalf("%d processes; want 2", len(pids))
	}
	for _, pid := range pids {
		if processExists(pid) {
			t.Errorf("process %d outlived its test", pid)
		}
	}
}

func (in *instance) pids() []int {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []int
	for _, p := range in.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// processExists reports whether pid is still there. Stop waits for its
// children, so a process that was killed has no /proc entry left. Where
// there is no /proc it cannot tell, and says no.
func processExists(pid int) bool {
	if runtime.GOOS != "linux" {
		return false
	}
	_, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid)))
	return err == nil
}
