// Package deploy holds the checks of the azd deployment that run without
// Azure: azure.yaml against azd's schemas, the Bicep parse, consistency
// between infra/ and the files it deploys, packaging, and the workflow.
package deploy

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// repoRoot is the module root, relative to this package.
const repoRoot = "../.."

// azdPrefix is the URL prefix azd's schemas use for their own $id and for
// the extension schemas they $ref; testdata/schemas/azd-refs mirrors the
// azure-dev repository below it.
const azdPrefix = "https://raw.githubusercontent.com/Azure/azure-dev/main/"

var azureYAMLSchemas = map[string]string{
	"v1.0":  azdPrefix + "schemas/v1.0/azure.yaml.json",
	"alpha": azdPrefix + "schemas/alpha/azure.yaml.json",
}

// azdLoader serves azdPrefix URLs from the local copies and refuses every
// other URL, so compiling never reaches the network.
type azdLoader struct{}

func (azdLoader) Load(url string) (any, error) {
	rest, ok := strings.CutPrefix(url, azdPrefix)
	if !ok {
		return nil, errors.New("offline: no local copy of " + url)
	}
	f, err := os.Open(filepath.Join("testdata", "schemas", "azd-refs", filepath.FromSlash(rest)))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return jsonschema.UnmarshalJSON(f)
}

func compileAzd(t *testing.T, url string) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.UseLoader(azdLoader{})
	sch, err := c.Compile(url)
	if err != nil {
		t.Fatalf("compiling %s: %v", url, err)
	}
	return sch
}

// yamlToJSONValue decodes YAML and round-trips it through encoding/json so
// the validator sees exactly JSON types (float64 numbers, map[string]any).
func yamlToJSONValue(t *testing.T, src []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(src, &v); err != nil {
		t.Fatalf("parsing YAML: %v", err)
	}
	raw, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("YAML is not representable as JSON: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestAzureYAMLSchemas(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "azure.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	doc := yamlToJSONValue(t, src)
	for name, url := range azureYAMLSchemas {
		t.Run(name, func(t *testing.T) {
			sch := compileAzd(t, url)
			if err := sch.Validate(doc); err != nil {
				t.Fatalf("azure.yaml does not match the %s schema: %v", name, err)
			}
			// The validator must be able to fail: a service without host,
			// and one with a host-function-forbidden key (k8s).
			for what, bad := range map[string]string{
				"service without host": "name: x\nservices:\n  api:\n    project: .\n    language: custom\n    dist: dist\n",
				"function with k8s":    "name: x\nservices:\n  api:\n    project: .\n    language: custom\n    host: function\n    dist: dist\n    k8s: {}\n",
			} {
				if err := sch.Validate(yamlToJSONValue(t, []byte(bad))); err == nil {
					t.Errorf("%s schema accepted a %s", name, what)
				}
			}
		})
	}
}

type azdService struct {
	Project  string `yaml:"project"`
	Language string `yaml:"language"`
	Host     string `yaml:"host"`
	Dist     string `yaml:"dist"`
	Hooks    map[string]struct {
		Posix   *azdHook `yaml:"posix"`
		Windows *azdHook `yaml:"windows"`
		Shell   string   `yaml:"shell"`
		Run     string   `yaml:"run"`
	} `yaml:"hooks"`
}

type azdHook struct {
	Shell string `yaml:"shell"`
	Run   string `yaml:"run"`
}

func readAzureYAML(t *testing.T) map[string]azdService {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "azure.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]azdService `yaml:"services"`
	}
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Services
}

// stageCommand is the command the azure.yaml prepackage hook runs.
const stageCommand = "go run ./scripts/stage -out dist"

func TestAzureYAMLService(t *testing.T) {
	svcs := readAzureYAML(t)
	if len(svcs) != 1 {
		t.Fatalf("azure.yaml has %d services, want one function service", len(svcs))
	}
	for name, s := range svcs {
		if s.Language != "custom" || s.Host != "function" || s.Dist != "dist" {
			t.Errorf("service %s: language %q host %q dist %q, want custom, function, dist", name, s.Language, s.Host, s.Dist)
		}
		h, ok := s.Hooks["prepackage"]
		if !ok {
			t.Fatalf("service %s has no prepackage hook", name)
		}
		if h.Posix == nil || h.Windows == nil {
			t.Fatalf("service %s: the prepackage hook needs posix and windows variants", name)
		}
		for os, hk := range map[string]*azdHook{"posix": h.Posix, "windows": h.Windows} {
			if strings.TrimSpace(hk.Run) != stageCommand {
				t.Errorf("prepackage %s runs %q, want %q (the local build's staging step)", os, hk.Run, stageCommand)
			}
		}
	}
}

// walkFiles lists the files under root with the given suffix.
func walkFiles(t *testing.T, root, suffix string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, suffix) {
			out = append(out, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}
