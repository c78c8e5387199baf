package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The consistency checks read the Bicep as text with regular expressions.
// Limits:
//   - Only single-quoted literal paths are seen. Bicep requires module and
//     load*Content paths to be compile-time constants, so interpolation
//     cannot hide one, but a path built with a variable would be missed.
//   - Comments are removed first by a small scanner that knows Bicep's '…'
//     and '''…''' strings; nothing else of the grammar is understood.
//   - Conditions are not evaluated: a module behind `if (false)` counts.
//   - A param is `param NAME TYPE [= default]` at the start of a line
//     (decorators on their own lines are fine); a default is recognised by
//     '=' on that line; a nullable type (`string?`) counts as optional.
//   - App settings count when the name appears as an object key (NAME: or
//     'NAME':) or as a quoted string ('NAME', for name/value lists);
//     whether the value is right is not checked.
//   - Operations: the manifest's operations and the Bicep ones are the same
//     set when Bicep creates them only by iterating over the loaded
//     apis.json. The check is that apis.json is loaded and that every
//     Microsoft.ApiManagement/service/apis/operations resource is a
//     `[for …]` loop (a literal operation would be one the manifest and the
//     local gateway may not have); what the loop iterates over is not
//     evaluated.
//   - Named values: the check is that a Bicep file loads named-values.json
//     and declares Microsoft.ApiManagement/service/namedValues, i.e. that
//     they are created from the list (e2e/frontdoor keeps the list complete).

var (
	reModule = regexp.MustCompile(`(?m)^\s*module\s+\w+\s+'([^']+)'`)
	reLoad   = regexp.MustCompile(`\b(loadJsonContent|loadTextContent|loadFileAsBase64|loadYamlContent)\(\s*'([^']+)'`)
	reParam  = regexp.MustCompile(`(?m)^\s*param\s+(\w+)\s+([^=\n]*?)\s*(=.*)?$`)
)

type bicepFile struct {
	path string // as found under the infra directory
	text string // comments stripped
}

// stripComments removes // and /* */ comments outside string literals
// ('…' with \' escapes, and ”'…”' multi-line strings), keeping newlines.
func stripComments(s string) string {
	const triple = "'''"
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], triple):
			j := len(s)
			if k := strings.Index(s[i+3:], triple); k >= 0 {
				j = i + 3 + k + 3
			}
			b.WriteString(s[i:j])
			i = j
		case s[i] == '\'':
			j := i + 1
			for j < len(s) && s[j] != '\'' && s[j] != '\n' {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(s))
			b.WriteString(s[i:j])
			i = j
		case strings.HasPrefix(s[i:], "//"):
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case strings.HasPrefix(s[i:], "/*"):
			j := len(s)
			if k := strings.Index(s[i+2:], "*/"); k >= 0 {
				j = i + 2 + k + 2
			}
			b.WriteString(strings.Repeat("\n", strings.Count(s[i:j], "\n")))
			i = j
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

// readInfra returns every .bicep file under dir; ok is false when
// dir/main.bicep does not exist.
func readInfra(t *testing.T, dir string) (files []bicepFile, ok bool) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "main.bicep")); err != nil {
		return nil, false
	}
	for _, p := range walkFiles(t, dir, ".bicep") {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, bicepFile{p, stripComments(string(raw))})
	}
	return files, true
}

// infra is the repository's infra/ as checked: the checks skip while
// infra/main.bicep does not exist.
func infra(t *testing.T) (string, []bicepFile) {
	t.Helper()
	dir := filepath.Join(repoRoot, "infra")
	files, ok := readInfra(t, dir)
	if !ok {
		t.Skip("infra/main.bicep does not exist yet")
	}
	return dir, files
}

// loadedFiles maps the cleaned path of every file a load*Content call
// reads to the Bicep files that load it.
func loadedFiles(files []bicepFile) map[string][]string {
	m := map[string][]string{}
	for _, f := range files {
		for _, mm := range reLoad.FindAllStringSubmatch(f.text, -1) {
			p := filepath.Clean(filepath.Join(filepath.Dir(f.path), filepath.FromSlash(mm[2])))
			m[p] = append(m[p], f.path)
		}
	}
	return m
}

func checkPathsExist(files []bicepFile) []string {
	var probs []string
	for _, f := range files {
		for _, m := range reModule.FindAllStringSubmatch(f.text, -1) {
			if strings.HasPrefix(m[1], "br:") || strings.HasPrefix(m[1], "br/") || strings.HasPrefix(m[1], "ts:") || strings.HasPrefix(m[1], "ts/") {
				continue // registry and template-spec modules are not local files
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(f.path), filepath.FromSlash(m[1]))); err != nil {
				probs = append(probs, fmt.Sprintf("%s: module '%s' does not exist", f.path, m[1]))
			}
		}
		for _, m := range reLoad.FindAllStringSubmatch(f.text, -1) {
			if _, err := os.Stat(filepath.Join(filepath.Dir(f.path), filepath.FromSlash(m[2]))); err != nil {
				probs = append(probs, fmt.Sprintf("%s: %s('%s') does not exist", f.path, m[1], m[2]))
			}
		}
	}
	return probs
}

func checkMainParameters(dir string, files []bicepFile) []string {
	var main string
	for _, f := range files {
		if filepath.Clean(f.path) == filepath.Clean(filepath.Join(dir, "main.bicep")) {
			main = f.text
		}
	}
	type param struct{ optional bool }
	params := map[string]param{}
	for _, m := range reParam.FindAllStringSubmatch(main, -1) {
		params[m[1]] = param{optional: m[3] != "" || strings.HasSuffix(strings.TrimSpace(m[2]), "?")}
	}
	if len(params) == 0 {
		return []string{"found no param in main.bicep"}
	}
	raw, err := os.ReadFile(filepath.Join(dir, "main.parameters.json"))
	if err != nil {
		return []string{"azd needs main.parameters.json: " + err.Error()}
	}
	var pj struct {
		Parameters map[string]json.RawMessage `json:"parameters"`
	}
	if err := json.Unmarshal(raw, &pj); err != nil {
		return []string{"main.parameters.json: " + err.Error()}
	}
	var probs []string
	for _, name := range sortedKeys(pj.Parameters) {
		if _, ok := params[name]; !ok {
			probs = append(probs, fmt.Sprintf("main.parameters.json sets %q, which main.bicep does not declare", name))
		}
	}
	for _, name := range sortedKeys(params) {
		if _, ok := pj.Parameters[name]; !ok && !params[name].optional {
			probs = append(probs, fmt.Sprintf("main.bicep param %s has no default and main.parameters.json does not supply it", name))
		}
	}
	return probs
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// policyFiles lists every policy file apis.json names (global, fragments,
// APIs, operations), keyed by cleaned path, with what uses it.
func policyFiles(t *testing.T, policies string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(policies, "apis.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man struct {
		Policy    string            `json:"policy"`
		Fragments map[string]string `json:"fragments"`
		APIs      []struct {
			Name       string `json:"name"`
			Policy     string `json:"policy"`
			Operations []struct {
				Name   string `json:"name"`
				Policy string `json:"policy"`
			} `json:"operations"`
		} `json:"apis"`
	}
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	add := func(p, what string) {
		if p != "" {
			want[filepath.Clean(filepath.Join(policies, filepath.FromSlash(p)))] = what
		}
	}
	add(man.Policy, "global policy")
	for name, p := range man.Fragments {
		if name != "$comment" {
			add(p, "fragment "+name)
		}
	}
	for _, a := range man.APIs {
		add(a.Policy, "api "+a.Name)
		for _, o := range a.Operations {
			add(o.Policy, "operation "+a.Name+"/"+o.Name)
		}
	}
	if len(want) == 0 {
		t.Fatal("apis.json names no policy files")
	}
	return want
}

func checkPoliciesLoaded(policies string, want map[string]string, files []bicepFile) []string {
	loaded := loadedFiles(files)
	var probs []string
	if _, ok := loaded[filepath.Clean(filepath.Join(policies, "apis.json"))]; !ok {
		probs = append(probs, "no Bicep file loads apim-policies/apis.json (loadJsonContent)")
	}
	for _, f := range sortedKeys(want) {
		if _, ok := loaded[f]; !ok {
			probs = append(probs, fmt.Sprintf("%s (%s) is not loaded by any loadTextContent", f, want[f]))
		}
	}
	return probs
}

func checkNamedValues(policies string, files []bicepFile) []string {
	nv := filepath.Clean(filepath.Join(policies, "named-values.json"))
	by, ok := loadedFiles(files)[nv]
	if !ok {
		return []string{"no Bicep file loads apim-policies/named-values.json (loadJsonContent): the named values would not be created from it"}
	}
	for _, p := range by {
		for _, f := range files {
			if f.path == p && strings.Contains(f.text, "Microsoft.ApiManagement/service/namedValues@") {
				return nil
			}
		}
	}
	return []string{fmt.Sprintf("%v load named-values.json but declare no Microsoft.ApiManagement/service/namedValues resource", by)}
}

var reOperation = regexp.MustCompile(`(?m)^\s*resource\s+(\w+)\s+'Microsoft\.ApiManagement/service/apis/operations@[^']+'(?:\s+existing)?\s*=\s*(\[\s*for\b)?`)

func checkOperationsFromManifest(policies string, files []bicepFile) []string {
	var probs []string
	if _, ok := loadedFiles(files)[filepath.Clean(filepath.Join(policies, "apis.json"))]; !ok {
		probs = append(probs, "no Bicep file loads apim-policies/apis.json, so the operations cannot come from the manifest")
	}
	n := 0
	for _, f := range files {
		for _, m := range reOperation.FindAllStringSubmatch(f.text, -1) {
			n++
			if m[2] == "" {
				probs = append(probs, fmt.Sprintf("%s: operation resource %s is not a [for …] loop over the manifest's operations", f.path, m[1]))
			}
		}
	}
	if n == 0 {
		probs = append(probs, "no Microsoft.ApiManagement/service/apis/operations resource in the Bicep")
	}
	return probs
}

// handlerSettings are the app settings the handler reads in Azure:
// handler/config and the identity-based AzureWebJobsStorage connection.
var handlerSettings = []string{
	"MCP_RESOURCE_URL",
	"MCP_TOKEN_ISSUER",
	"MCP_TOKEN_JWKS",
	"MCP_INTERNAL_KEY",
	"AzureWebJobsStorage__blobServiceUri",
	"AzureWebJobsStorage__queueServiceUri",
	"AzureWebJobsStorage__credential",
	"AzureWebJobsStorage__clientId",
}

func checkAppSettings(files []bicepFile) []string {
	var all strings.Builder
	for _, f := range files {
		all.WriteString(f.text)
		all.WriteByte('\n')
	}
	var probs []string
	for _, s := range handlerSettings {
		q := regexp.QuoteMeta(s)
		re := regexp.MustCompile(`(?m)(^\s*` + q + `\s*:|'` + q + `')`)
		if !re.MatchString(all.String()) {
			probs = append(probs, fmt.Sprintf("app setting %s, which the handler reads, is not set", s))
		}
	}
	return probs
}

func report(t *testing.T, probs []string) {
	t.Helper()
	for _, p := range probs {
		t.Error(p)
	}
}

var policiesDir = filepath.Join(repoRoot, "apim-policies")

func TestBicepPathsExist(t *testing.T) {
	_, files := infra(t)
	report(t, checkPathsExist(files))
}

func TestMainParameters(t *testing.T) {
	dir, files := infra(t)
	report(t, checkMainParameters(dir, files))
}

func TestPoliciesLoadedByBicep(t *testing.T) {
	_, files := infra(t)
	report(t, checkPoliciesLoaded(policiesDir, policyFiles(t, policiesDir), files))
}

func TestNamedValuesCreatedByBicep(t *testing.T) {
	_, files := infra(t)
	report(t, checkNamedValues(policiesDir, files))
}

func TestOperationsFromManifest(t *testing.T) {
	_, files := infra(t)
	report(t, checkOperationsFromManifest(policiesDir, files))
}

func TestAppSettingsInBicep(t *testing.T) {
	_, files := infra(t)
	report(t, checkAppSettings(files))
}

// TestConsistencyChecksCanFail runs every check on testdata/badinfra, whose
// files break each rule once, and on testdata/goodinfra, which keeps them.
func TestConsistencyChecksCanFail(t *testing.T) {
	bad, ok := readInfra(t, "testdata/badinfra")
	if !ok {
		t.Fatal("testdata/badinfra/main.bicep missing")
	}
	policies := "testdata/policies"
	want := policyFiles(t, policies)
	got := strings.Join(slicesConcat(
		checkPathsExist(bad),
		checkMainParameters("testdata/badinfra", bad),
		checkPoliciesLoaded(policies, want, bad),
		checkNamedValues(policies, bad),
		checkAppSettings(bad),
		checkOperationsFromManifest(policies, bad),
	), "\n")
	for _, frag := range []string{
		"module 'modules/missing.bicep' does not exist",
		"loadTextContent('../policies/nope.xml') does not exist",
		`sets "notDeclared"`,
		"param requiredOne has no default",
		"op.xml (operation api/op) is not loaded",
		"no Bicep file loads apim-policies/named-values.json",
		"app setting MCP_INTERNAL_KEY",
		"operation resource literalOp is not a [for",
	} {
		if !strings.Contains(got, frag) {
			t.Errorf("bad infra: no problem containing %q; got:\n%s", frag, got)
		}
	}
	for _, notWanted := range []string{"commentedOut", "MCP_TOKEN_ISSUER", "param optionalOne", "param nullableOne", "global.xml"} {
		if strings.Contains(got, notWanted) {
			t.Errorf("bad infra: unexpected problem mentioning %q:\n%s", notWanted, got)
		}
	}

	good, ok := readInfra(t, "testdata/goodinfra")
	if !ok {
		t.Fatal("testdata/goodinfra/main.bicep missing")
	}
	if p := slicesConcat(
		checkPathsExist(good),
		checkMainParameters("testdata/goodinfra", good),
		checkPoliciesLoaded(policies, want, good),
		checkNamedValues(policies, good),
		checkAppSettings(good),
		checkOperationsFromManifest(policies, good),
	); len(p) > 0 {
		t.Errorf("good infra: %s", strings.Join(p, "\n"))
	}
}

func slicesConcat(ss ...[]string) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s...)
	}
	return out
}
