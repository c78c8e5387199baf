package gateway_test

// The data-driven runner: every directory testdata/cases/<topic>/<case>/
// with a case.json is one subtest of TestCases. The format is described in
// testdata/README.md.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// caseFile is case.json.
type caseFile struct {
	// Doc names the APIM doc page and the sentence the case checks.
	Doc string `json:"doc"`
	// Manifest is the gateway manifest; when absent, defaultManifest.
	Manifest json.RawMessage `json:"manifest"`
	// NamedValues are added to the ones the runner provides.
	NamedValues map[string]string `json:"namedValues"`
	// Tokens are JWTs that requests use as {{token:NAME}}.
	Tokens map[string]tokenSpec `json:"tokens"`
	// Check, when present, says that `gateway.exe check` must fail with
	// these problems. When absent, check must succeed.
	Check *checkExpect `json:"check"`
	// Requests are sent in order to one gateway process.
	Requests []caseRequest `json:"requests"`
}

type checkExpect struct {
	Problems []problemExpect `json:"problems"`
}

// problemExpect is one line check must print: file:line: message.
type problemExpect struct {
	File string `json:"file"`
	// Line is a line number, or a list of acceptable line numbers (where the
	// docs leave open which line an error is reported at).
	Line     lineSet  `json:"line"`
	Contains []string `json:"contains"`
}

type lineSet []int

func (l *lineSet) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*l = lineSet{n}
		return nil
	}
	var ns []int
	if err := json.Unmarshal(b, &ns); err != nil {
		return fmt.Errorf("line: want a number or a list of numbers: %v", err)
	}
	*l = ns
	return nil
}

type caseRequest struct {
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	// SleepMs waits this long before sending the request.
	SleepMs int    `json:"sleepMs"`
	Expect  expect `json:"expect"`
}

type expect struct {
	Status int `json:"status"`
	// Reason is the reason phrase of the status line.
	Reason string `json:"reason"`
	// Headers must be present with exactly this value (all lines of the
	// header split at commas, trimmed and joined with ",").
	Headers map[string]string `json:"headers"`
	// HeadersMatch must be present and match these regular expressions.
	HeadersMatch  map[string]string `json:"headersMatch"`
	AbsentHeaders []string          `json:"absentHeaders"`
	// HeaderLines is how many header lines of that name the response has
	// (set-header emits Set-Cookie values as separate lines).
	HeaderLines map[string]int `json:"headerLines"`
	// Body is the exact body text.
	Body *string `json:"body"`
	// BodyJSON is the exact body, compared as JSON.
	BodyJSON     json.RawMessage `json:"bodyJSON"`
	BodyContains []string        `json:"bodyContains"`
	BodyMatch    string          `json:"bodyMatch"`
	// JSON maps JSON Pointers (RFC 6901) into the body to their exact values.
	JSON map[string]json.RawMessage `json:"json"`
	// JSONMatch maps JSON Pointers to regular expressions their string
	// values must match.
	JSONMatch map[string]string `json:"jsonMatch"`
	// JSONAbsent lists JSON Pointers that must not exist in the body.
	JSONAbsent []string `json:"jsonAbsent"`
}

// defaultManifest is one API at the root whose service URL is the echo
// backend, with one wildcard operation; policy files that exist in the case
// directory are attached: global.xml (global scope), api.xml (API scope),
// policy.xml (the operation).
func defaultManifest(dir string) map[string]any {
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	op := map[string]any{"name": "all", "method": "*", "urlTemplate": "/*"}
	if exists("policy.xml") {
		op["policy"] = "policy.xml"
	}
	api := map[string]any{"name": "test", "path": "", "serviceUrl": "{{backend}}", "operations": []any{op}}
	if exists("api.xml") {
		api["policy"] = "api.xml"
	}
	m := map[string]any{"apis": []any{api}}
	if exists("global.xml") {
		m["policy"] = "global.xml"
	}
	return m
}

// loadCases finds every case under testdata/cases, named topic/case.
func loadCases(t *testing.T) map[string]string {
	t.Helper()
	root := filepath.Join("testdata", "cases")
	found := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "case.json" {
			dir := filepath.Dir(path)
			rel, _ := filepath.Rel(root, dir)
			found[filepath.ToSlash(rel)] = dir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) == 0 {
		t.Fatalf("no cases under %s", root)
	}
	return found
}

var (
	startUps   durations
	checkTimes durations
)

func TestCases(t *testing.T) {
	cases := loadCases(t)
	names := make([]string, 0, len(cases))
	for name := range cases {
		names = append(names, name)
	}
	sort.Strings(names)
	t.Cleanup(func() {
		t.Logf("gateway start-up (process start to listening line): %v", &startUps)
		t.Logf("gateway check run: %v", &checkTimes)
	})
	for _, name := range names {
		dir := cases[name]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			runCase(t, dir)
		})
	}
}

// runCase runs one case directory.
func runCase(t *testing.T, dir string) {
	raw, err := os.ReadFile(filepath.Join(dir, "case.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c caseFile
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s/case.json: %v", dir, err)
	}
	if strings.TrimSpace(c.Doc) == "" {
		t.Fatalf("%s/case.json: \"doc\" is empty; cite the APIM doc behaviour the case checks", dir)
	}
	if len(c.Requests) == 0 && c.Check == nil {
		t.Fatalf("%s/case.json: no requests and no check", dir)
	}
	t.Logf("doc: %s", c.Doc)
	needGateway(t)

	// Work on a copy, so manifest.json and named-values.json sit beside the
	// policy files and the testdata stays untouched.
	work := t.TempDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "case.json" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFiles(t, work, map[string]string{e.Name(): string(b)})
	}
	var manifest any = defaultManifest(dir)
	if len(c.Manifest) > 0 {
		manifest = c.Manifest
	}
	b := writeBundle(t, work, manifest, c.NamedValues)

	// check: must pass, or must report exactly the listed problems' places.
	if c.Check != nil || !testing.Short() {
		start := time.Now()
		code, out := runCheck(t, b)
		checkTimes.add(time.Since(start))
		verifyCheck(t, c.Check, code, out)
	}
	if len(c.Requests) == 0 {
		return
	}

	g := startGateway(t, b)
	startUps.add(g.StartUp)
	t.Logf("gateway started in %v", g.StartUp.Round(time.Millisecond))
	minted := map[string]string{}
	for i, r := range c.Requests {
		if r.SleepMs > 0 {
			time.Sleep(time.Duration(r.SleepMs) * time.Millisecond)
		}
		label := fmt.Sprintf("request %d (%s %s)", i+1, r.Method, r.Path)
		resp, body, err := send(g, r, c.Tokens, minted)
		if err != nil {
			t.Errorf("%s: %v", label, err)
			continue
		}
		problems := verifyResponse(r.Expect, resp, body)
		for _, problem := range problems {
			t.Errorf("%s: %s", label, problem)
		}
		if len(problems) > 0 {
			t.Logf("%s: got %s\n  headers: %v\n  body: %s", label, resp.Status, resp.Header, truncate(body, 4000))
		}
	}
}

// verifyCheck compares check's result with the expectation.
func verifyCheck(t *testing.T, want *checkExpect, code int, out string) {
	t.Helper()
	if want == nil {
		if code != 0 {
			t.Errorf("check exited %d on a bundle APIM accepts; output:\n%s", code, indent(out))
		}
		return
	}
	if code != 1 {
		t.Errorf("check exited %d, want 1; output:\n%s", code, indent(out))
	}
	lines := strings.Split(out, "\n")
	for _, p := range want.Problems {
		if !problemListed(lines, p) {
			t.Errorf("check did not report %s:%s (message containing %q); output:\n%s",
				p.File, lineList(p.Line), p.Contains, indent(out))
		}
	}
}

// problemListed reports whether one line of check's output is
// "<path ending in p.File>:<one of p.Line>: <message with p.Contains>".
func problemListed(lines []string, p problemExpect) bool {
	for _, line := range lines {
		for _, n := range p.Line {
			re := regexp.MustCompile(`(^|[/\\\s])` + regexp.QuoteMeta(p.File) + `:` + strconv.Itoa(n) + `:\s*(.*)$`)
			m := re.FindStringSubmatch(strings.TrimSpace(line))
			if m == nil {
				continue
			}
			ok := true
			for _, s := range p.Contains {
				if !strings.Contains(strings.ToLower(m[2]), strings.ToLower(s)) {
					ok = false
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

func lineList(l lineSet) string {
	s := make([]string, len(l))
	for i, n := range l {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, "|")
}

// send sends one case request to the gateway.
func send(g *Gateway, r caseRequest, tokens map[string]tokenSpec, minted map[string]string) (*http.Response, string, error) {
	path, err := env.expandTokens(r.Path, tokens, minted)
	if err != nil {
		return nil, "", err
	}
	body, err := env.expandTokens(r.Body, tokens, minted)
	if err != nil {
		return nil, "", err
	}
	method := r.Method
	if method == "" {
		method = http.MethodGet
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, g.URL+path, rd)
	if err != nil {
		return nil, "", err
	}
	for k, v := range r.Headers {
		if v, err = env.expandTokens(v, tokens, minted); err != nil {
			return nil, "", err
		}
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", fmt.Errorf("reading the body: %v", err)
	}
	return resp, string(b), nil
}

// verifyResponse lists every way resp differs from want.
func verifyResponse(want expect, resp *http.Response, body string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if resp.StatusCode != want.Status {
		bad("status %d, want %d", resp.StatusCode, want.Status)
	}
	if want.Reason != "" {
		if got := strings.TrimSpace(strings.TrimPrefix(resp.Status, strconv.Itoa(resp.StatusCode))); got != want.Reason {
			bad("reason phrase %q, want %q", got, want.Reason)
		}
	}
	for name, v := range want.Headers {
		lines := resp.Header.Values(name)
		if len(lines) == 0 {
			bad("header %s missing, want %q", name, v)
		} else if got := normalizeHeader(lines); got != v {
			bad("header %s = %q, want %q", name, got, v)
		}
	}
	for name, pattern := range want.HeadersMatch {
		lines := resp.Header.Values(name)
		re, err := regexp.Compile(pattern)
		switch {
		case err != nil:
			bad("headersMatch %s: %v", name, err)
		case len(lines) == 0:
			bad("header %s missing, want a value matching %q", name, pattern)
		case !re.MatchString(normalizeHeader(lines)):
			bad("header %s = %q, want a match of %q", name, normalizeHeader(lines), pattern)
		}
	}
	for name, n := range want.HeaderLines {
		if got := len(resp.Header.Values(name)); got != n {
			bad("%d %s header line(s) %q, want %d", got, name, resp.Header.Values(name), n)
		}
	}
	for _, name := range want.AbsentHeaders {
		if lines := resp.Header.Values(name); len(lines) > 0 {
			bad("header %s = %q, want it absent", name, normalizeHeader(lines))
		}
	}
	if want.Body != nil && body != *want.Body {
		bad("body %q, want %q", truncate(body, 500), *want.Body)
	}
	for _, s := range want.BodyContains {
		if !strings.Contains(body, s) {
			bad("body does not contain %q", s)
		}
	}
	if want.BodyMatch != "" {
		if re, err := regexp.Compile(want.BodyMatch); err != nil {
			bad("bodyMatch: %v", err)
		} else if !re.MatchString(body) {
			bad("body does not match %q", want.BodyMatch)
		}
	}
	if len(want.BodyJSON) > 0 || len(want.JSON) > 0 || len(want.JSONMatch) > 0 || len(want.JSONAbsent) > 0 {
		var got any
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			bad("body is not JSON (%v)", err)
			return problems
		}
		if len(want.BodyJSON) > 0 {
			var w any
			if err := json.Unmarshal(want.BodyJSON, &w); err != nil {
				bad("bodyJSON in case.json: %v", err)
			} else if !reflect.DeepEqual(got, w) {
				bad("body JSON %s, want %s", compact(got), compact(w))
			}
		}
		for ptr, raw := range want.JSON {
			var w any
			if err := json.Unmarshal(raw, &w); err != nil {
				bad("json %s in case.json: %v", ptr, err)
				continue
			}
			v, ok := jsonPointer(got, ptr)
			switch {
			case !ok:
				bad("JSON %s missing, want %s", ptr, compact(w))
			case !reflect.DeepEqual(v, w):
				bad("JSON %s = %s, want %s", ptr, compact(v), compact(w))
			}
		}
		for ptr, pattern := range want.JSONMatch {
			v, ok := jsonPointer(got, ptr)
			str, isString := v.(string)
			re, err := regexp.Compile(pattern)
			switch {
			case err != nil:
				bad("jsonMatch %s: %v", ptr, err)
			case !ok:
				bad("JSON %s missing, want a string matching %q", ptr, pattern)
			case !isString:
				bad("JSON %s = %s, want a string matching %q", ptr, compact(v), pattern)
			case !re.MatchString(str):
				bad("JSON %s = %q, want a match of %q", ptr, str, pattern)
			}
		}
		for _, ptr := range want.JSONAbsent {
			if v, ok := jsonPointer(got, ptr); ok {
				bad("JSON %s = %s, want it absent", ptr, compact(v))
			}
		}
	}
	return problems
}

// jsonPointer resolves an RFC 6901 pointer in v.
func jsonPointer(v any, ptr string) (any, bool) {
	if ptr == "" {
		return v, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[tok]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
