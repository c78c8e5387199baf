package deploy

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestPrepackageHook runs azure.yaml's prepackage hook as azd does (its
// shell, in the service's project directory), writing to a temporary
// directory instead of dist/, and checks the package azd would upload: the
// Functions host's layout. The schema validation and the run of the staged
// binary behind a host-like proxy are e2e.TestHostContract's, which stages
// with this same command; this test checks the hook runs it.
func TestPrepackageHook(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the handler")
	}
	svcs := readAzureYAML(t)
	var svc azdService
	for _, s := range svcs {
		svc = s
	}
	hook := svc.Hooks["prepackage"].Posix
	if runtime.GOOS == "windows" {
		hook = svc.Hooks["prepackage"].Windows
	}
	if hook == nil {
		t.Fatal("no prepackage hook for this OS")
	}
	out := t.TempDir()
	run, ok := strings.CutSuffix(strings.TrimSpace(hook.Run), " -out "+svc.Dist)
	if !ok {
		t.Fatalf("prepackage hook %q does not end in -out %s (the service's dist)", hook.Run, svc.Dist)
	}
	shell := hook.Shell
	if shell == "" {
		shell = "sh"
	}
	if _, err := exec.LookPath(shell); err != nil {
		t.Skipf("hook shell %s not installed", shell)
	}
	flag := "-c"
	if shell == "pwsh" {
		flag = "-Command"
	}
	cmd := exec.Command(shell, flag, run+" -out '"+out+"'")
	cmd.Dir = filepath.Join(repoRoot, filepath.FromSlash(svc.Project))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("prepackage hook: %v\n%s", err, b)
	}

	// host.json at the package root, naming an executable handler in it.
	raw, err := os.ReadFile(filepath.Join(out, "host.json"))
	if err != nil {
		t.Fatalf("no host.json at the package root: %v", err)
	}
	var host struct {
		Version       string `json:"version"`
		CustomHandler struct {
			Description struct {
				DefaultExecutablePath string `json:"defaultExecutablePath"`
			} `json:"description"`
		} `json:"customHandler"`
	}
	if err := json.Unmarshal(raw, &host); err != nil {
		t.Fatalf("host.json: %v", err)
	}
	exe := host.CustomHandler.Description.DefaultExecutablePath
	if exe == "" || filepath.IsAbs(exe) || strings.Contains(exe, "..") {
		t.Fatalf("defaultExecutablePath %q must be a path inside the package", exe)
	}
	fi, err := os.Stat(filepath.Join(out, exe))
	if err != nil {
		t.Fatalf("defaultExecutablePath %q: %v", exe, err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Errorf("%s lacks the run bit (%v): the Flex Consumption host could not start it", exe, fi.Mode())
	}
	// Function folders: immediate subfolders with a function.json.
	entries, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join(out, e.Name(), "function.json")); err == nil {
				n++
			}
		}
	}
	if n == 0 {
		t.Error("the package has no function folder (subfolder with function.json)")
	}
}

// TestHostContractStagesLikeTheHook keeps e2e.TestHostContract, which
// validates the staged package in depth, on the hook's command.
func TestHostContractStagesLikeTheHook(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "e2e", "hostcontract_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), `exec.Command("go", "run", "./scripts/stage", "-out", dist)`) {
		t.Error("e2e/hostcontract_test.go no longer stages with `go run ./scripts/stage -out`, the prepackage hook's command")
	}
}
