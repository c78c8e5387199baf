//go:build unix

package e2e

// Tests that drive the handler with the Node.js tools pinned in
// package-lock.json: MCP Inspector's CLI (a real third-party client, over
// Streamable HTTP and SSE) and the MCP conformance suite. Both run on the
// pinned Node.js 22 (the system Node.js may be too old for the Inspector).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// Where the pinned npm packages put their entry points, relative to the
// repository root.
const (
	inspectorEntry   = "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
	conformanceEntry = "node_modules/@modelcontextprotocol/conformance/dist/index.js"
)

// nodeTools is a Node.js >= 22 binary and the packages run with it. Every
// run gets its own HOME and working directory (the Inspector keeps a catalog
// and OAuth store under ~/.mcp-inspector).
type nodeTools struct {
	root, node string
}

// nodeToolsFor finds Node.js and the npm packages, or skips the test (fails
// it with MCP_REQUIRE_AZURITE=1, as the Azurite helper does).
func nodeToolsFor(t *testing.T, entries ...string) nodeTools {
	t.Helper()
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...) + " (run `npm ci` at the repository root)"
		if os.Getenv(testenv.EnvRequireAzurite) == "1" {
			t.Fatalf("%s; %s=1 makes this a failure", msg, testenv.EnvRequireAzurite)
		}
		t.Skip(msg)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		unavailable("repository root: %v", err)
	}
	node, err := testenv.NodeBinary(root)
	if err != nil {
		unavailable("Node.js 22: %v", err)
	}
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		unavailable("%s --version: %v", node, err)
	}
	version := strings.TrimSpace(string(out))
	major, _, _ := strings.Cut(strings.TrimPrefix(version, "v"), ".")
	if n, err := strconv.Atoi(major); err != nil || n < 22 {
		unavailable("%s is Node.js %s; the Inspector needs 22 or newer", node, version)
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(root, e)); err != nil {
			unavailable("npm package missing: %v", err)
		}
	}
	return nodeTools{root: root, node: node}
}

// nodeResult is one finished node process.
type nodeResult struct {
	Args           []string
	Stdout, Stderr string
	ExitCode       int // -1 when it did not exit by itself (killed, timed out)
	Duration       time.Duration
}

var (
	// bearerRE hides tokens in logged command lines.
	bearerRE = regexp.MustCompile(`Bearer [A-Za-z0-9._~+/=-]+`)
	// ansiRE matches colour codes, which the conformance suite prints
	// whatever NO_COLOR says.
	ansiRE = regexp.MustCompile("\x1b\\[[0-9;]*m")
)

func (r nodeResult) String() string {
	return fmt.Sprintf("$ node %s\nexit %d after %v\n--- stdout\n%s\n--- stderr\n%s",
		bearerRE.ReplaceAllString(strings.Join(quoteArgs(r.Args), " "), "Bearer <token>"),
		r.ExitCode, r.Duration.Round(time.Millisecond), ansiRE.ReplaceAllString(r.Stdout, ""), ansiRE.ReplaceAllString(r.Stderr, ""))
}

func quoteArgs(args []string) []string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`<>|&;*?#") {
			a = strconv.Quote(a)
		}
		q[i] = a
	}
	return q
}

// run runs node with args in a fresh temporary HOME and working directory,
// in its own process group, which is killed when the run ends or times out,
// so that nothing outlives the test.
func (n nodeTools) run(t *testing.T, timeout time.Duration, args ...string) nodeResult {
	t.Helper()
	home := t.TempDir()
	tmp := filepath.Join(home, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.node, args...)
	cmd.Dir = home
	// A minimal environment: nothing from the caller's MCP_*, proxy or
	// OAuth settings reaches the tools.
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"TMPDIR=" + tmp,
		"XDG_CONFIG_HOME=" + filepath.Join(home, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(home, ".local", "share"),
		"NO_COLOR=1",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // stdin is /dev/null: never a TTY
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", n.node, err)
	}
	pgid := cmd.Process.Pid
	err := cmd.Wait()
	// Anything the tool started and left behind in its group goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	r := nodeResult{Args: args, Stdout: stdout.String(), Stderr: stderr.String(), ExitCode: cmd.ProcessState.ExitCode(), Duration: time.Since(start)}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("running node: %v\n%s", err, r)
	}
	if ctx.Err() != nil {
		t.Fatalf("node did not finish within %v:\n%s", timeout, r)
	}
	t.Logf("%s  (exit %d, %v)", bearerRE.ReplaceAllString(strings.Join(quoteArgs(args), " "), "Bearer <token>"), r.ExitCode, r.Duration.Round(time.Millisecond))
	return r
}

// --- MCP Inspector CLI ---

// inspector runs `mcp-inspector --cli URL --transport T [--header H] ARGS...
// --format json` and returns the run.
func (n nodeTools) inspector(t *testing.T, url, transport, token string, args ...string) nodeResult {
	t.Helper()
	argv := []string{filepath.Join(n.root, inspectorEntry), "--cli", url, "--transport", transport}
	if token != "" {
		argv = append(argv, "--header", "Authorization: Bearer "+token)
	}
	// Never start an interactive OAuth flow (browser, callback listener):
	// with no token the run must fail with auth_required.
	argv = append(argv, "--stored-auth-only", "--connect-timeout", "20000", "--format", "json")
	argv = append(argv, args...)
	return n.run(t, 60*time.Second, argv...)
}

// inspectorResult decodes the CLI's --format json success envelope,
// {"result": ...}, into v.
func inspectorResult(t *testing.T, r nodeResult, v any) {
	t.Helper()
	if r.ExitCode != 0 {
		t.Fatalf("inspector failed:\n%s", r)
	}
	if err := testenv.InspectorResult(r.Stdout, v); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
}

// inspectorToolCall is a tools/call result as the CLI prints it.
type inspectorToolCall struct {
	IsError bool `json:"isError"`
	Content []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	} `json:"content"`
	StructuredContent json.RawMessage `json:"structuredContent"`
}

func (c inspectorToolCall) decode(t *testing.T, r nodeResult, v any) {
	t.Helper()
	if c.IsError || len(c.StructuredContent) == 0 {
		t.Fatalf("tool failed or returned no structured content:\n%s", r)
	}
	if err := json.Unmarshal(c.StructuredContent, v); err != nil {
		t.Fatalf("decoding structured content: %v\n%s", err, r)
	}
}

// TestInspectorCLI drives the handler with MCP Inspector's CLI mode over
// both transports, with a bearer token as a gateway-issued one would be sent.
func TestInspectorCLI(t *testing.T) {
	n := nodeToolsFor(t, inspectorEntry)
	st := startStack(t, nil)
	tid, oid := newUser()
	tok := st.Issuer.Token(t, tid, oid)

	for _, tr := range []struct{ name, transport, path string }{
		{"streamable", "http", "/mcp"},
		{"sse", "sse", "/mcp/sse"},
	} {
		t.Run(tr.name, func(t *testing.T) {
			url := st.Handler.BaseURL + tr.path
			call := func(tool string, args ...string) (inspectorToolCall, nodeResult) {
				t.Helper()
				argv := []string{"--method", "tools/call", "--tool-name", tool}
				for _, a := range args {
					argv = append(argv, "--tool-arg", a)
				}
				r := n.inspector(t, url, tr.transport, tok, argv...)
				var c inspectorToolCall
				inspectorResult(t, r, &c)
				return c, r
			}

			// tools/list names every tool. --strict makes the CLI exit 6 on
			// an error-severity tool-schema portability problem (its
			// warnings, e.g. on ["null","array"] types, go to stderr).
			r := n.inspector(t, url, tr.transport, tok, "--method", "tools/list", "--strict")
			var list struct {
				Tools []struct {
					Name        string          `json:"name"`
					InputSchema json.RawMessage `json:"inputSchema"`
				} `json:"tools"`
			}
			inspectorResult(t, r, &list)
			var names []string
			for _, tool := range list.Tools {
				names = append(names, tool.Name)
			}
			for _, want := range allTools {
				if !slices.Contains(names, want) {
					t.Errorf("tools/list lacks %q (got %v)", want, names)
				}
			}

			// hello: the subject is the token's user.
			c, r := call("hello")
			var who struct {
				Subject  string `json:"subject"`
				AuthMode string `json:"auth_mode"`
			}
			c.decode(t, r, &who)
			if who.Subject != tid+":"+oid || who.AuthMode != "token" {
				t.Errorf("hello = %+v, want subject %s:%s, auth_mode token\n%s", who, tid, oid, r)
			}

			// save_snippet then get_snippet: the content round-trips. It
			// contains '=' (the CLI splits key=value at the first one),
			// non-ASCII, quotes and newlines, and is not valid JSON (the CLI
			// JSON-parses values that are).
			name := "inspector-" + tr.name + ".md"
			content := "# Inspector = \"CLI\"\nline two ✓\n"
			c, r = call("save_snippet", "name="+name, "content="+content, "content_type=text/markdown")
			var saved struct {
				Name string `json:"name"`
				ETag string `json:"etag"`
				Size int64  `json:"size"`
			}
			c.decode(t, r, &saved)
			if saved.Name != name || saved.ETag == "" || saved.Size != int64(len(content)) {
				t.Fatalf("save_snippet = %+v\n%s", saved, r)
			}
			c, r = call("get_snippet", "name="+name)
			var got struct {
				Content     string `json:"content"`
				ContentType string `json:"content_type"`
				ETag        string `json:"etag"`
			}
			c.decode(t, r, &got)
			if got.Content != content || got.ContentType != "text/markdown" || got.ETag != saved.ETag {
				t.Fatalf("get_snippet = %+v, want content %q, text/markdown, etag %s\n%s", got, content, saved.ETag, r)
			}
			if len(c.Content) == 0 || c.Content[0].Type != "text" {
				t.Errorf("get_snippet has no text content block for clients without structured content:\n%s", r)
			}

			// Without a token the server answers 401 and the CLI fails with
			// its auth_required code (3) and envelope on stderr.
			r = n.inspector(t, url, tr.transport, "", "--method", "tools/list")
			if r.ExitCode == 0 {
				t.Fatalf("tools/list without a token succeeded:\n%s", r)
			}
			var failure struct {
				Error struct {
					Code    string `json:"code"`
					Message string `json:"message"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(strings.TrimSpace(r.Stderr)), &failure); err != nil {
				t.Fatalf("no JSON error envelope on stderr (%v):\n%s", err, r)
			}
			t.Logf("without a token: exit %d, %s", r.ExitCode, strings.TrimSpace(r.Stderr))
			msg := strings.ToLower(failure.Error.Message)
			if r.ExitCode != 3 || failure.Error.Code != "auth_required" ||
				!(strings.Contains(msg, "401") || strings.Contains(msg, "unauthorized")) {
				t.Fatalf("want exit 3, auth_required, a message naming 401/unauthorized:\n%s", r)
			}
		})
	}
}

// --- MCP conformance suite ---

// conformanceScenarios classifies every server scenario of
// @modelcontextprotocol/conformance 0.1.16 (`conformance list --server`).
//
// Applicable ones run against the handler (authentication off: the suite
// sends no Authorization header). warnOnly names scenarios that, against
// a stateless server, end with a WARNING and no SUCCESS check.
var conformanceApplicable = []struct {
	name     string
	warnOnly string
}{
	{name: "server-initialize"},
	{name: "ping"},
	{name: "logging-set-level"}, // the server declares the logging capability
	{name: "tools-list"},
	{name: "dns-rebinding-protection"},
	// Sends three concurrent POSTs with the Mcp-Session-Id it got at
	// initialize; the handler is stateless (no session id), so the scenario
	// stops early with a WARNING. It still must not fail.
	{name: "server-sse-multiple-streams", warnOnly: "stateless server: no Mcp-Session-Id to open streams on"},
}

// conformanceNotApplicable are the scenarios that need the suite's fixture
// tools, resources or prompts (or capabilities this server does not offer),
// with the reason.
var conformanceNotApplicable = map[string]string{
	"completion-complete":           "completes arguments of the fixture prompt test_prompt_with_arguments; the server has no prompts and no completions capability",
	"tools-call-simple-text":        "calls the fixture tool test_simple_text",
	"tools-call-image":              "calls the fixture tool test_image_content",
	"tools-call-audio":              "calls the fixture tool test_audio_content",
	"tools-call-embedded-resource":  "calls the fixture tool test_embedded_resource",
	"tools-call-mixed-content":      "calls the fixture tool test_multiple_content_types",
	"tools-call-with-logging":       "calls the fixture tool test_tool_with_logging",
	"tools-call-error":              "calls the fixture tool test_error_handling",
	"tools-call-with-progress":      "calls the fixture tool test_tool_with_progress",
	"tools-call-sampling":           "calls the fixture tool test_sampling (server-initiated sampling/createMessage)",
	"tools-call-elicitation":        "calls the fixture tool test_elicitation (server-initiated elicitation/create)",
	"json-schema-2020-12":           "looks for the fixture tool json_schema_2020_12_tool (pending suite)",
	"elicitation-sep1034-defaults":  "calls the fixture tool test_elicitation_sep1034_defaults",
	"elicitation-sep1330-enums":     "calls the fixture tool test_elicitation_sep1330_enums",
	"server-sse-polling":            "calls the fixture tool test_reconnection, which must close its stream mid-call (pending suite)",
	"resources-list":                "resources/list; the server offers no resources capability",
	"resources-read-text":           "reads the fixture resource test://static-text",
	"resources-read-binary":         "reads the fixture resource test://static-binary",
	"resources-templates-read":      "reads the fixture resource template test://template/{id}/data",
	"resources-subscribe":           "subscribes to the fixture resource test://watched-resource; no resources capability",
	"resources-unsubscribe":         "unsubscribes from the fixture resource test://watched-resource; no resources capability",
	"prompts-list":                  "prompts/list; the server offers no prompts capability",
	"prompts-get-simple":            "gets the fixture prompt test_simple_prompt",
	"prompts-get-with-args":         "gets the fixture prompt test_prompt_with_arguments",
	"prompts-get-embedded-resource": "gets the fixture prompt test_prompt_with_embedded_resource",
	"prompts-get-with-image":        "gets the fixture prompt test_prompt_with_image",
}

// conformanceCheck is one entry of a scenario's checks.json.
type conformanceCheck struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Status       string          `json:"status"` // SUCCESS, FAILURE, WARNING, INFO, ...
	ErrorMessage string          `json:"errorMessage"`
	Details      json.RawMessage `json:"details"`
}

// TestConformance runs the MCP conformance suite's applicable server
// scenarios against the Streamable HTTP endpoint.
func TestConformance(t *testing.T) {
	n := nodeToolsFor(t, conformanceEntry)
	entry := filepath.Join(n.root, conformanceEntry)

	// Every scenario the installed suite knows is classified above, so a
	// new suite version cannot add scenarios that silently never run.
	r := n.run(t, 60*time.Second, entry, "list", "--server")
	if r.ExitCode != 0 {
		t.Fatalf("conformance list:\n%s", r)
	}
	known := map[string]bool{}
	for line := range strings.SplitSeq(r.Stdout, "\n") {
		if s, ok := strings.CutPrefix(strings.TrimSpace(line), "- "); ok {
			name, _, _ := strings.Cut(s, " ")
			known[name] = true
		}
	}
	classified := map[string]bool{}
	for _, s := range conformanceApplicable {
		classified[s.name] = true
		if !known[s.name] {
			t.Errorf("scenario %q is not in the suite's list:\n%s", s.name, r)
		}
	}
	for s := range conformanceNotApplicable {
		if classified[s] {
			t.Errorf("scenario %q is classified both applicable and not", s)
		}
		classified[s] = true
	}
	for s := range known {
		if !classified[s] {
			t.Errorf("the suite has a server scenario %q this test does not classify: add it to conformanceApplicable or conformanceNotApplicable", s)
		}
	}

	st := startStack(t, map[string]string{"MCP_AUTH": "off"})
	url := st.Handler.BaseURL + "/mcp"
	for _, sc := range conformanceApplicable {
		t.Run(sc.name, func(t *testing.T) {
			out := t.TempDir()
			r := n.run(t, 90*time.Second, entry, "server", "--url", url, "--scenario", sc.name, "--output-dir", out)
			files, _ := filepath.Glob(filepath.Join(out, "*", "checks.json"))
			if len(files) != 1 {
				t.Fatalf("want one checks.json under the output directory, found %v:\n%s", files, r)
			}
			b, err := os.ReadFile(files[0])
			if err != nil {
				t.Fatal(err)
			}
			var checks []conformanceCheck
			if err := json.Unmarshal(b, &checks); err != nil {
				t.Fatalf("checks.json: %v\n%s", err, b)
			}
			counts := map[string]int{}
			for _, c := range checks {
				counts[c.Status]++
				switch c.Status {
				case "FAILURE":
					t.Errorf("check %s (%s) failed: %s\ndetails: %s", c.ID, c.Name, c.ErrorMessage, c.Details)
				case "WARNING":
					t.Logf("check %s (%s) warns: %s %s", c.ID, c.Name, c.ErrorMessage, c.Details)
				}
			}
			t.Logf("%s: %v", sc.name, counts)
			switch {
			case len(checks) == 0:
				t.Errorf("no checks recorded")
			case sc.warnOnly == "" && counts["SUCCESS"] == 0:
				t.Errorf("no check succeeded")
			case sc.warnOnly != "" && counts["SUCCESS"] == 0:
				t.Logf("only warnings, as expected: %s", sc.warnOnly)
			}
			if r.ExitCode != 0 && !t.Failed() {
				t.Errorf("conformance exited %d with no failed check", r.ExitCode)
			}
			if t.Failed() {
				t.Logf("%s\n--- checks.json\n%s", r, b)
			}
		})
	}
}
