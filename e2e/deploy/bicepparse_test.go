package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// bicepParse runs scripts/bicep-parse.mjs (tree-sitter-bicep 1.1.0 on the
// tree-sitter 0.22.4 node binding, both pinned in package.json; their
// linux-x64 prebuilds load without a compiler or network) on files.
func bicepParse(t *testing.T, files ...string) (string, error) {
	t.Helper()
	root, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	node, err := testenv.NodeBinary(root)
	if err != nil {
		skipOrFail(t, "no Node.js: "+err.Error())
	}
	for _, pkg := range []string{"tree-sitter", "tree-sitter-bicep"} {
		if _, err := os.Stat(filepath.Join(root, "node_modules", pkg, "package.json")); err != nil {
			skipOrFail(t, "npm package "+pkg+" is not installed")
		}
	}
	abs := make([]string, len(files))
	for i, f := range files {
		abs[i], _ = filepath.Abs(f)
	}
	cmd := exec.Command(node, append([]string{"scripts/bicep-parse.mjs"}, abs...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// skipOrFail skips when the npm tools are absent, unless
// MCP_REQUIRE_AZURITE=1 (as .ci/run sets through make test) asks for them.
func skipOrFail(t *testing.T, why string) {
	t.Helper()
	if os.Getenv(testenv.EnvRequireAzurite) == "1" {
		t.Fatalf("%s (required: %s=1); run `npm ci`", why, testenv.EnvRequireAzurite)
	}
	t.Skipf("%s; run `npm ci`", why)
}

func TestBicepParses(t *testing.T) {
	files := walkFiles(t, filepath.Join(repoRoot, "infra"), ".bicep")
	if len(files) == 0 {
		t.Skip("infra/ has no .bicep files yet")
	}
	out, err := bicepParse(t, files...)
	if err != nil {
		t.Fatalf("Bicep parse errors (tree-sitter-bicep):\n%s", out)
	}
	t.Logf("%d files parsed:\n%s", len(files), out)
}

// The parse check must be able to fail: an unclosed resource body is
// reported with its line, and a well-formed file passes.
func TestBicepParserCatchesErrors(t *testing.T) {
	out, err := bicepParse(t, "testdata/bicep/broken.bicep")
	if err == nil {
		t.Fatalf("broken.bicep parsed cleanly:\n%s", out)
	}
	if !strings.Contains(out, "broken.bicep:3:") {
		t.Errorf("want the error at line 3 of broken.bicep, got:\n%s", out)
	}
	if out, err := bicepParse(t, "testdata/bicep/good.bicep"); err != nil {
		t.Fatalf("good.bicep: %v\n%s", err, out)
	}
}
