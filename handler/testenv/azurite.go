package testenv

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// The well-known Azurite account. Its key is public, not a secret.
const (
	AzuriteAccountName = "devstoreaccount1"
	AzuriteAccountKey  = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// EnvRequireAzurite names the variable that turns a missing Azurite from a
// skip into a failure. CI sets it to 1 so that a broken `npm ci` cannot turn
// the storage tests green by skipping them all.
const EnvRequireAzurite = "MCP_REQUIRE_AZURITE"

// Budgets for starting Azurite. Node takes about a second to start here;
// the deadline leaves room for a loaded 2-core machine running other test
// packages in parallel.
const (
	startDeadline = 60 * time.Second
	pollInterval  = 50 * time.Millisecond
	startAttempts = 3
)

// Azurite is a running Azurite with the Blob and Queue services, in memory,
// on loopback ports of its own. Copies of the value share the same processes.
type Azurite struct {
	// BlobURL is the Blob service endpoint,
	// http://127.0.0.1:<port>/devstoreaccount1.
	BlobURL string
	// QueueURL is the Queue service endpoint, likewise.
	QueueURL string
	// ConnectionString is an explicit connection string for both services
	// with the well-known development account, as AzureWebJobsStorage takes.
	ConnectionString string

	inst *instance
}

// instance is the state shared by copies of an Azurite value.
type instance struct {
	t                   testing.TB
	node                string
	blobJS, queueJS     string
	blobPort, queuePort int
	dir                 string
	logPath             string

	mu    sync.Mutex
	procs []*proc
}

// proc is one Azurite service process.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd.Wait has returned
}

// StartAzurite starts Azurite's Blob and Queue services (no Table service)
// from the repository's node_modules, with in-memory persistence, on free
// loopback ports, and waits until both accept connections. The processes
// are killed, and waited for, when the test ends.
//
// Azurite's combined entry point always starts the Table service too, so
// each service runs from its own entry point, as its own process.
//
// If Azurite or a suitable Node.js is missing the test is skipped, unless
// MCP_REQUIRE_AZURITE=1, when it fails.
func StartAzurite(t testing.TB) Azurite {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return startAzurite(t, root)
}

// startAzurite is StartAzurite for the repository at root.
func startAzurite(t testing.TB, root string) Azurite {
	t.Helper()
	var err error
	src := filepath.Join(root, "node_modules", "azurite", "dist", "src")
	inst := &instance{
		t:       t,
		blobJS:  filepath.Join(src, "blob", "main.js"),
		queueJS: filepath.Join(src, "queue", "main.js"),
	}
	for _, f := range []string{inst.blobJS, inst.queueJS} {
		if _, err := os.Stat(f); err != nil {
			missing(t, "%s is missing", f)
		}
	}
	if inst.node, err = NodeBinary(root); err != nil {
		missing(t, "%v", err)
	}

	// TempDir first: cleanups run last-in first-out, so the processes are
	// gone before their directory is removed. With --inMemoryPersistence
	// Azurite refuses --location, so the working directory is its location.
	inst.dir = t.TempDir()
	inst.logPath = filepath.Join(inst.dir, "azurite.log")
	t.Cleanup(func() {
		inst.stop()
		if t.Failed() {
			inst.dumpLog()
		}
	})

	for attempt := 1; ; attempt++ {
		inst.blobPort, inst.queuePort, err = freePorts()
		if err == nil {
			err = inst.start()
		}
		if err == nil {
			break
		}
		// Another process may take a port between our probe and
		// Azurite's listen; fresh ports usually fix that.
		if attempt == startAttempts {
			t.Fatalf("testenv: starting Azurite: %v", err)
		}
		t.Logf("testenv: starting Azurite failed, retrying on other ports: %v", err)
	}

	blob := "http://127.0.0.1:" + strconv.Itoa(inst.blobPort) + "/" + AzuriteAccountName
	queue := "http://127.0.0.1:" + strconv.Itoa(inst.queuePort) + "/" + AzuriteAccountName
	return Azurite{
		BlobURL:  blob,
		QueueURL: queue,
		ConnectionString: "DefaultEndpointsProtocol=http;AccountName=" + AzuriteAccountName +
			";AccountKey=" + AzuriteAccountKey + ";BlobEndpoint=" + blob + ";QueueEndpoint=" + queue + ";",
		inst: inst,
	}
}

// Stop kills both Azurite processes and waits for them to exit, to simulate
// a storage outage. Connections to the ports are refused until Restart.
// Stopping a stopped Azurite does nothing.
func (a Azurite) Stop() { a.inst.stop() }

// Restart stops Azurite if it is running and starts it again on the same
// ports. Data does not survive: the new processes start empty.
func (a Azurite) Restart() {
	a.inst.t.Helper()
	a.inst.stop()
	if err := a.inst.start(); err != nil {
		a.inst.t.Fatalf("testenv: restarting Azurite: %v", err)
	}
}

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv(EnvRequireAzurite) == "1" {
		t.Fatalf("Azurite is required (%s=1) but cannot run: %s; run `npm ci` in the repository root", EnvRequireAzurite, why)
	}
	t.Skipf("azurite not installed (run `npm ci` or `make test`): %s", why)
}

// freePorts returns two distinct loopback ports that were free a moment ago.
// Both listeners stay open until both ports are known so they cannot be the
// same port.
func freePorts() (int, int, error) {
	a, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer a.Close()
	b, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer b.Close()
	return a.Addr().(*net.TCPAddr).Port, b.Addr().(*net.TCPAddr).Port, nil
}

// start launches both services and waits until both ports accept
// connections. On failure it leaves nothing running.
func (in *instance) start() error {
	in.mu.Lock()
	defer in.mu.Unlock()

	logFile, err := os.OpenFile(in.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening the Azurite log: %w", err)
	}
	// The children hold their own descriptors once started.
	defer logFile.Close()

	common := []string{"--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry", "--extentMemoryLimit", "512"}
	specs := []struct {
		script string
		args   []string
		port   int
	}{
		{in.blobJS, []string{"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(in.blobPort)}, in.blobPort},
		{in.queueJS, []string{"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(in.queuePort)}, in.queuePort},
	}
	for _, s := range specs {
		args := append([]string{s.script}, s.args...)
		cmd := exec.Command(in.node, append(args, common...)...)
		cmd.Dir = in.dir
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = sysProcAttr()
		if err := cmd.Start(); err != nil {
			in.stopLocked()
			return fmt.Errorf("starting %s: %w", filepath.Base(filepath.Dir(s.script)), err)
		}
		p := &proc{cmd: cmd, done: make(chan struct{})}
		go func() {
			_ = cmd.Wait()
			close(p.done)
		}()
		in.procs = append(in.procs, p)
	}

	deadline := time.Now().Add(startDeadline)
	for _, s := range specs {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
		for {
			if err := in.exitedLocked(); err != nil {
				in.stopLocked()
				return fmt.Errorf("%w\n%s", err, in.logTail())
			}
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				in.stopLocked()
				return fmt.Errorf("%s did not accept connections within %s\n%s", addr, startDeadline, in.logTail())
			}
			time.Sleep(pollInterval)
		}
	}
	return nil
}

// exitedLocked reports an error if any process has already exited.
func (in *instance) exitedLocked() error {
	for _, p := range in.procs {
		select {
		case <-p.done:
			return fmt.Errorf("azurite exited early (%v)", p.cmd.ProcessState)
		default:
		}
	}
	return nil
}

func (in *instance) stop() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.stopLocked()
}

// stopLocked kills the process group of each process it started (never
// anything found by name) and waits for each to exit.
func (in *instance) stopLocked() {
	for _, p := range in.procs {
		select {
		case <-p.done:
			continue
		default:
		}
		kill(p.cmd.Process)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			in.t.Errorf("testenv: Azurite (pid %d) did not exit after SIGKILL", p.cmd.Process.Pid)
		}
	}
	in.procs = nil
}

// logTail returns the end of the Azurite log, for error messages.
func (in *instance) logTail() string {
	f, err := os.Open(in.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	const max = 4 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return "Azurite log (end):\n" + string(b)
}

func (in *instance) dumpLog() {
	if tail := in.logTail(); tail != "" {
		in.t.Log(tail)
	}
}

// Clients returns storage clients for this Azurite, built the way the
// handler builds them from AzureWebJobsStorage.
func (a Azurite) Clients(t testing.TB) *storage.Clients {
	t.Helper()
	s, err := storage.SettingsFromEnv(func(k string) string {
		if k == storage.EnvConnection {
			return a.ConnectionString
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := storage.NewClients(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
