package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// gatewayOutput is the azd environment value (a main.bicep output) the
// workflow passes to the smoke suite.
const gatewayOutput = "MCP_GATEWAY_URL"

type workflow struct {
	Permissions map[string]string `yaml:"permissions"`
	Jobs        map[string]struct {
		Permissions map[string]string `yaml:"permissions"`
		Env         map[string]any    `yaml:"env"`
		Steps       []struct {
			Name string            `yaml:"name"`
			Uses string            `yaml:"uses"`
			Run  string            `yaml:"run"`
			With map[string]string `yaml:"with"`
		} `yaml:"steps"`
	} `yaml:"jobs"`
}

// checkWorkflow returns the problems of an azd workflow.
func checkWorkflow(src []byte) []string {
	var wf workflow
	if err := yaml.Unmarshal(src, &wf); err != nil {
		return []string{"parsing: " + err.Error()}
	}
	if len(wf.Jobs) != 1 {
		return []string{"want exactly one job"}
	}
	var probs []string
	bad := func(s string) { probs = append(probs, s) }
	for name, job := range wf.Jobs {
		perms := job.Permissions
		if perms == nil {
			perms = wf.Permissions
		}
		if perms["id-token"] != "write" {
			bad("job " + name + ": permissions id-token: write is needed for OIDC federated credentials")
		}
		if v, ok := job.Env["AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM"]; !ok || (v != true && v != "true") {
			bad("job " + name + ": env AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM: true is needed (language: custom is an azd alpha feature)")
		}
		for _, v := range []string{"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_SUBSCRIPTION_ID", "AZURE_ENV_NAME", "AZURE_LOCATION"} {
			if s, _ := job.Env[v].(string); s != "${{ vars."+v+" }}" {
				bad("job " + name + ": env " + v + " must come from ${{ vars." + v + " }} (set by azd pipeline config)")
			}
		}
		var runs []string
		var setupGo, setupAzd bool
		for _, st := range job.Steps {
			switch {
			case strings.HasPrefix(st.Uses, "actions/setup-go@"):
				setupGo = strings.HasPrefix(st.With["go-version"], "1.26")
			case strings.HasPrefix(st.Uses, "Azure/setup-azd@"):
				setupAzd = true
			}
			runs = append(runs, strings.Join(strings.Fields(strings.ReplaceAll(st.Run, "\\\n", " ")), " "))
		}
		if !setupGo {
			bad("no actions/setup-go step with go-version 1.26")
		}
		if !setupAzd {
			bad("no Azure/setup-azd step")
		}
		order := []*regexp.Regexp{
			regexp.MustCompile(`azd auth login --client-id "?\$AZURE_CLIENT_ID"? --federated-credential-provider "?github"? --tenant-id "?\$AZURE_TENANT_ID"?`),
			regexp.MustCompile(`\bazd provision --no-prompt\b`),
			regexp.MustCompile(`\bazd deploy --no-prompt\b`),
			regexp.MustCompile(`azd env get-value ` + gatewayOutput + `\b(.|\n)*go test\b.*\./e2e/smoke\b.*-gateway\b`),
		}
		i := 0
		for _, r := range runs {
			if i < len(order) && order[i].MatchString(r) {
				i++
			}
		}
		if i < len(order) {
			bad("steps: missing or out of order: " + order[i].String())
		}
	}
	return probs
}

func TestAzureDevWorkflow(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, ".github", "workflows", "azure-dev.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range checkWorkflow(src) {
		t.Error(p)
	}
	// The check can fail: without the alpha flag, or with the smoke step
	// removed, or without id-token: write.
	for what, mutate := range map[string]func(string) string{
		"alpha flag": func(s string) string {
			return strings.Replace(s, "AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM: true", "AZD_ALPHA_ENABLE_LANGUAGE_CUSTOM: false", 1)
		},
		"smoke step": func(s string) string { return strings.Replace(s, "./e2e/smoke", "./e2e/deploy", 1) },
		"id-token":   func(s string) string { return strings.ReplaceAll(s, "id-token: write", "id-token: none") },
		"deploy": func(s string) string {
			return strings.Replace(s, "azd deploy --no-prompt", "azd package --no-prompt", 1)
		},
	} {
		if len(checkWorkflow([]byte(mutate(string(src))))) == 0 {
			t.Errorf("the workflow check accepted a workflow without its %s", what)
		}
	}
}

// TestGatewayOutput: the workflow reads the gateway origin from the azd
// environment, which azd fills from main.bicep's outputs.
func TestGatewayOutput(t *testing.T) {
	_, files := infra(t)
	re := regexp.MustCompile(`(?m)^\s*output\s+` + gatewayOutput + `\s+string\b`)
	for _, f := range files {
		if filepath.Base(f.path) == "main.bicep" && filepath.Dir(f.path) == filepath.Join(repoRoot, "infra") && re.MatchString(f.text) {
			return
		}
	}
	t.Errorf("infra/main.bicep has no `output %s string` (the gateway origin, no trailing slash), which .github/workflows/azure-dev.yml passes to the smoke suite", gatewayOutput)
}
