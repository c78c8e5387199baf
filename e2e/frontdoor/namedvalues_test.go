package frontdoor

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/apim-policies/keyset"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// TestNamedValuesAreListed is the static check that keeps three things in
// step: the {{named values}} the policy bundle uses, the list Bicep creates
// them from (apim-policies/named-values.json), and the values a local run
// defines. (That every policy parses and every expression compiles with the
// local values is TestAuthorizePoliciesCheck's `gateway check`.)
func TestNamedValuesAreListed(t *testing.T) {
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "apim-policies")

	var list struct {
		NamedValues []struct {
			Name, Source, Description string
			Secret                    bool
		} `json:"namedValues"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "named-values.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("named-values.json: %v", err)
	}
	listed := map[string]bool{}
	for _, nv := range list.NamedValues {
		if listed[nv.Name] {
			t.Errorf("named-values.json lists %s twice", nv.Name)
		}
		listed[nv.Name] = true
		if nv.Source != "keyvault" && nv.Source != "deployment" {
			t.Errorf("%s: source %q, want keyvault or deployment", nv.Name, nv.Source)
		}
		if nv.Description == "" {
			t.Errorf("%s: no description", nv.Name)
		}
	}
	// Keys come from the generator and live in Key Vault: each must be
	// listed as such, and nothing else may claim to be.
	for _, k := range keyset.Names() {
		if !listed[k] {
			t.Errorf("key %s from the generator is not listed", k)
		}
	}
	for _, nv := range list.NamedValues {
		if nv.Source == "keyvault" && !slices.Contains(keyset.Names(), nv.Name) {
			t.Errorf("%s is listed as a Key Vault secret but the key generator does not make it", nv.Name)
		}
	}

	// Every reference in the bundle (policies, fragments, the manifest's
	// serviceUrls) is listed, and every listed name is used.
	ref := regexp.MustCompile(`\{\{([A-Za-z0-9._-]+)\}\}`)
	used := map[string][]string{}
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "gateway" || d.Name() == "keyset") {
			return filepath.SkipDir // the emulator's own tests and code
		}
		if d.IsDir() || d.Name() == "named-values.json" || !(strings.HasSuffix(path, ".xml") || strings.HasSuffix(path, ".json")) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		for _, m := range ref.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = append(used[m[1]], rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, files := range used {
		if !listed[name] {
			t.Errorf("{{%s}} is used in %v but not listed in named-values.json", name, slices.Compact(files))
		}
	}
	for name := range listed {
		if len(used[name]) == 0 {
			t.Errorf("%s is listed but no policy uses it", name)
		}
	}
	if len(used) == 0 {
		t.Fatal("found no named value references: is the bundle where the test looks?")
	}
}
