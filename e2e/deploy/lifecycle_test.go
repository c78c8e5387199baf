package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
)

// The OAuth lifecycle check: handler/oauthstore never deletes expired
// records, so the storage account's lifecycle management policy must, and
// must never delete one that can still be valid. The check reads the body of
// every Microsoft.Storage/storageAccounts/managementPolicies resource as a
// Bicep literal and compares its rules with oauthstore.RecordKinds: each
// kind's prefix (in the container oauthstore.DefaultContainer) needs an
// enabled rule that deletes its block blobs by
// daysAfterModificationGreaterThan, and every rule that reaches into a
// kind's prefix must wait longer than the kind's KeepFor, by at least
// minLifecycleMargin.
//
// Limits: the parser knows objects, arrays, '…' strings without
// interpolation, integers and true/false. Anything else (a variable, a
// function call, an interpolated string) is kept as text, and where the
// check needs the value (a prefix, a number of days, enabled) it is
// reported as a problem rather than guessed. A resource with a condition
// (`= if …`) or a rule list built by a loop is reported as unreadable.

// minLifecycleMargin is the least a rule may wait beyond a record's KeepFor.
// The code stamps lifetimes with the function host's clock, the engine
// counts from the storage's Last-Modified, and a write lands some time after
// its stamp; an hour covers all of that with room, and a rule of exactly
// the lifetime fails.
const minLifecycleMargin = time.Hour

// bicepRaw is an expression the literal parser does not evaluate.
type bicepRaw string

// litParser reads Bicep literals from comment-stripped text.
type litParser struct {
	s string
	i int
}

func (p *litParser) errorf(format string, args ...any) error {
	line := strings.Count(p.s[:min(p.i, len(p.s))], "\n") + 1
	return fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...))
}

// skip passes blanks, and line ends too when lines is set.
func (p *litParser) skip(lines bool) {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\r':
		case '\n':
			if !lines {
				return
			}
		default:
			return
		}
		p.i++
	}
}

// value reads one value starting at p.i (on the current line).
func (p *litParser) value() (any, error) {
	p.skip(false)
	if p.i >= len(p.s) {
		return nil, p.errorf("unexpected end of file")
	}
	start := p.i
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '\'' && !strings.HasPrefix(p.s[p.i:], "'''"):
		s, literal, err := p.str()
		if err != nil {
			return nil, err
		}
		if literal && p.valueEnds() {
			return s, nil
		}
		p.i = start
		return p.raw(), nil
	}
	raw := p.raw()
	if n, err := strconv.Atoi(string(raw)); err == nil {
		return n, nil
	}
	switch raw {
	case "true":
		return true, nil
	case "false":
		return false, nil
	case "":
		return nil, p.errorf("expected a value")
	}
	return raw, nil
}

// valueEnds reports whether only blanks stand between p.i and the end of
// the value: a line end, ',', ']' or '}'.
func (p *litParser) valueEnds() bool {
	j := p.i
	for j < len(p.s) && (p.s[j] == ' ' || p.s[j] == '\t' || p.s[j] == '\r') {
		j++
	}
	return j == len(p.s) || strings.IndexByte("\n,]}", p.s[j]) >= 0
}

// str reads a '…' string; literal is false when it interpolates ${…}.
func (p *litParser) str() (s string, literal bool, err error) {
	var b strings.Builder
	literal = true
	for j := p.i + 1; j < len(p.s); j++ {
		switch c := p.s[j]; {
		case c == '\'':
			p.i = j + 1
			return b.String(), literal, nil
		case c == '\n':
			return "", false, p.errorf("unterminated string")
		case c == '\\' && j+1 < len(p.s):
			j++
			switch e := p.s[j]; e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			default: // \' \\ \$; \u{…} is not needed here
				b.WriteByte(e)
			}
		case c == '$' && j+1 < len(p.s) && p.s[j+1] == '{':
			literal = false
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return "", false, p.errorf("unterminated string")
}

// raw reads an expression up to the end of its value (a line end, ',', ']'
// or '}' outside brackets and strings) and returns it as text.
func (p *litParser) raw() bicepRaw {
	start, depth := p.i, 0
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '\'':
			if _, _, err := p.str(); err != nil {
				return bicepRaw(strings.TrimSpace(p.s[start:p.i]))
			}
			continue
		case c == '(' || c == '[' || c == '{':
			depth++
		case (c == ')' || c == ']' || c == '}') && depth > 0:
			depth--
		case depth == 0 && strings.IndexByte("\n,]}", c) >= 0:
			return bicepRaw(strings.TrimSpace(p.s[start:p.i]))
		}
		p.i++
	}
	return bicepRaw(strings.TrimSpace(p.s[start:p.i]))
}

var reIdent = regexp.MustCompile(`^[A-Za-z_]\w*`)

func (p *litParser) object() (map[string]any, error) {
	m := map[string]any{}
	p.i++ // {
	for {
		p.skip(true)
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i >= len(p.s) {
			return nil, p.errorf("unclosed object")
		}
		if p.s[p.i] == '}' {
			p.i++
			return m, nil
		}
		var key string
		if p.s[p.i] == '\'' {
			k, literal, err := p.str()
			if err != nil || !literal {
				return nil, p.errorf("a property name that is not a literal string")
			}
			key = k
		} else {
			key = reIdent.FindString(p.s[p.i:])
			if key == "" {
				return nil, p.errorf("expected a property name, found %q", firstLine(p.s[p.i:]))
			}
			p.i += len(key)
		}
		p.skip(false)
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errorf("expected ':' after %s", key)
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		m[key] = v
	}
}

func (p *litParser) array() ([]any, error) {
	var a []any
	p.i++ // [
	p.skip(true)
	if reFor.MatchString(p.s[p.i:]) {
		return nil, p.errorf("a [for …] loop is not a literal")
	}
	for {
		p.skip(true)
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i >= len(p.s) {
			return nil, p.errorf("unclosed array")
		}
		if p.s[p.i] == ']' {
			p.i++
			return a, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		a = append(a, v)
	}
}

var reFor = regexp.MustCompile(`^for\b`)

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}

// field follows a path of property names through nested objects.
func field(v any, path ...string) (any, bool) {
	for _, k := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

// lifecycleRule is what the check needs of one rule.
type lifecycleRule struct {
	where     string // file, line of the resource and rule name
	enabled   bool
	prefixes  []string // nil: no prefixMatch, the whole account
	blockBlob bool     // blobTypes includes blockBlob
	days      int      // baseBlob delete daysAfterModificationGreaterThan; -1 if none
	otherDel  []string // other conditions of the baseBlob delete action
}

var (
	reMgmtPolicy     = regexp.MustCompile(`(?m)^\s*resource\s+\w+\s+'Microsoft\.Storage/storageAccounts/managementPolicies@([^']+)'(\s+existing)?\s*=[ \t]*`)
	reStorageAccount = regexp.MustCompile(`'Microsoft\.Storage/storageAccounts@([^']+)'`)
)

// readLifecycleRules returns the rules of every managementPolicies resource
// in files, the number of such resources, and what could not be read.
func readLifecycleRules(files []bicepFile) (rules []lifecycleRule, resources int, probs []string) {
	for _, f := range files {
		for _, m := range reMgmtPolicy.FindAllStringSubmatchIndex(f.text, -1) {
			if m[4] >= 0 {
				continue // `existing`: declared elsewhere
			}
			resources++
			start := m[0] + strings.Index(f.text[m[0]:m[1]], "resource")
			line := strings.Count(f.text[:start], "\n") + 1
			at := fmt.Sprintf("%s:%d", f.path, line)
			version := f.text[m[2]:m[3]]
			if sa := reStorageAccount.FindStringSubmatch(f.text); sa != nil && sa[1] != version {
				probs = append(probs, fmt.Sprintf("%s: managementPolicies@%s, but the storage account is @%s; keep the storage API versions together", at, version, sa[1]))
			}
			p := &litParser{s: f.text, i: m[1]}
			if p.i >= len(p.s) || p.s[p.i] != '{' {
				probs = append(probs, fmt.Sprintf("%s: the managementPolicies body is not a literal object (%q)", at, firstLine(p.s[p.i:])))
				continue
			}
			body, err := p.value()
			if err != nil {
				probs = append(probs, fmt.Sprintf("%s: cannot read the managementPolicies body: %v", f.path, err))
				continue
			}
			if name, _ := field(body, "name"); name != "default" {
				probs = append(probs, fmt.Sprintf("%s: the management policy must be named 'default' (the only name Azure accepts), not %v", at, name))
			}
			list, ok := field(body, "properties", "policy", "rules")
			items, isList := list.([]any)
			if !ok || !isList {
				probs = append(probs, fmt.Sprintf("%s: properties.policy.rules is missing or not a literal array", at))
				continue
			}
			for i, item := range items {
				r, rprobs := readRule(fmt.Sprintf("%s rule %d", at, i), item)
				probs = append(probs, rprobs...)
				rules = append(rules, r)
			}
		}
	}
	return rules, resources, probs
}

func readRule(where string, item any) (lifecycleRule, []string) {
	var probs []string
	bad := func(format string, args ...any) {
		probs = append(probs, fmt.Sprintf("%s: %s", where, fmt.Sprintf(format, args...)))
	}
	r := lifecycleRule{where: where, enabled: true, days: -1}
	if name, ok := field(item, "name"); ok {
		r.where = fmt.Sprintf("%s (%v)", where, name)
		where = r.where
	}
	if v, ok := field(item, "enabled"); ok {
		b, isBool := v.(bool)
		if !isBool {
			bad("enabled is %v, not a literal true or false", v)
		}
		r.enabled = b
	}
	if v, ok := field(item, "definition", "filters", "prefixMatch"); ok {
		list, _ := v.([]any)
		if list == nil {
			bad("prefixMatch is %v, not a literal array", v)
		}
		for _, e := range list {
			s, isString := e.(string)
			if !isString {
				bad("prefixMatch entry %v is not a literal string", e)
				continue
			}
			r.prefixes = append(r.prefixes, s)
		}
		if len(list) > 0 && len(r.prefixes) == 0 {
			r.prefixes = []string{"\x00unreadable"} // matches nothing; reported above
		}
	}
	if v, ok := field(item, "definition", "filters", "blobTypes"); ok {
		list, _ := v.([]any)
		for _, e := range list {
			if e == "blockBlob" {
				r.blockBlob = true
			}
		}
	} else {
		bad("no filters.blobTypes (Azure requires it)")
	}
	if v, ok := field(item, "definition", "actions", "baseBlob", "delete"); ok {
		del, isObj := v.(map[string]any)
		if !isObj {
			bad("actions.baseBlob.delete is %v, not a literal object", v)
		}
		for _, k := range sortedKeys(del) {
			if k != "daysAfterModificationGreaterThan" {
				r.otherDel = append(r.otherDel, k)
				continue
			}
			n, isInt := del[k].(int)
			if !isInt || n < 0 {
				bad("daysAfterModificationGreaterThan is %v, not a literal number of days", del[k])
				continue
			}
			r.days = n
		}
	}
	return r, probs
}

// describe prints a duration in days when it is whole days.
func describe(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return days(int(d / (24 * time.Hour)))
	}
	return d.String()
}

func days(n int) string {
	if n == 1 {
		return "1 day"
	}
	return fmt.Sprintf("%d days", n)
}

// checkLifecycle checks the rules in files against kinds, records under
// container.
func checkLifecycle(files []bicepFile, container string, kinds []oauthstore.RecordKind) []string {
	rules, resources, probs := readLifecycleRules(files)
	if resources == 0 {
		return append(probs, fmt.Sprintf("no Microsoft.Storage/storageAccounts/managementPolicies resource: nothing deletes the expired OAuth records in container %q", container))
	}
	if len(kinds) == 0 {
		return append(probs, "oauthstore.RecordKinds is empty")
	}
	for _, k := range kinds {
		full := container + "/" + k.Prefix
		covered := false
		for _, r := range rules {
			if !r.blockBlob {
				continue // oauthstore writes block blobs only
			}
			reaches, covers := r.prefixes == nil, r.prefixes == nil
			for _, p := range r.prefixes {
				switch {
				case strings.HasPrefix(full, p):
					reaches, covers = true, true
				case strings.HasPrefix(p, full):
					reaches = true
				}
			}
			if !reaches {
				continue
			}
			for _, c := range r.otherDel {
				probs = append(probs, fmt.Sprintf("%s deletes under %s by %s: oauthstore keeps records alive by rewriting them, so only daysAfterModificationGreaterThan matches its lifetimes", r.where, full, c))
			}
			if r.days < 0 {
				continue
			}
			wait := time.Duration(r.days) * 24 * time.Hour
			if wait-k.KeepFor < minLifecycleMargin {
				probs = append(probs, fmt.Sprintf("%s deletes under %s more than %s after the last write, but a record there may be valid for %s after it (oauthstore.RecordKinds): the days must exceed that by at least %s",
					r.where, full, days(r.days), describe(k.KeepFor), minLifecycleMargin))
			}
			if covers && r.enabled {
				covered = true
			}
		}
		if !covered {
			probs = append(probs, fmt.Sprintf("no enabled lifecycle rule deletes the block blobs under %s (oauthstore records valid up to %s after their last write); without one they are never deleted",
				full, describe(k.KeepFor)))
		}
	}
	for _, r := range rules {
		for _, p := range r.prefixes {
			if !strings.HasPrefix(p, container+"/") {
				continue // another container's rule, or one reaching into all (checked above)
			}
			known := false
			for _, k := range kinds {
				full := container + "/" + k.Prefix
				if strings.HasPrefix(full, p) || strings.HasPrefix(p, full) {
					known = true
				}
			}
			if !known {
				probs = append(probs, fmt.Sprintf("%s: prefix %q matches no oauthstore record kind (a typo?)", r.where, p))
			}
		}
	}
	return probs
}

// TestOAuthLifecycleRules checks infra/'s lifecycle rules against the
// record kinds and lifetimes of handler/oauthstore.
func TestOAuthLifecycleRules(t *testing.T) {
	_, files := infra(t)
	kinds := oauthstore.RecordKinds()
	report(t, checkLifecycle(files, oauthstore.DefaultContainer, kinds))
	rules, _, _ := readLifecycleRules(files)
	for _, k := range kinds {
		for _, r := range rules {
			for _, p := range r.prefixes {
				if p == oauthstore.DefaultContainer+"/"+k.Prefix {
					t.Logf("%s: deleted more than %s after the last write; valid up to %s after it", p, days(r.days), describe(k.KeepFor))
				}
			}
		}
	}
}

// TestOAuthLifecycleCheckCanFail runs the check on testdata/lifecycle,
// which keeps the rules, and on copies of it that break them one way each.
// The kinds are fixed here, so that the test does not depend on the
// lifetimes of the day.
func TestOAuthLifecycleCheckCanFail(t *testing.T) {
	const day = 24 * time.Hour
	kinds := []oauthstore.RecordKind{
		{Prefix: "codes/", KeepFor: 5 * time.Minute},
		{Prefix: "refresh/", KeepFor: 30 * day},
		{Prefix: "families/", KeepFor: 31 * day},
		{Prefix: "clients/", KeepFor: 90 * day},
	}
	path := filepath.Join("testdata", "lifecycle", "storage.bicep")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	good := string(raw)
	check := func(text string, kinds []oauthstore.RecordKind) string {
		return strings.Join(checkLifecycle([]bicepFile{{path, stripComments(text)}}, "oauth", kinds), "\n")
	}
	if got := check(good, kinds); got != "" {
		t.Fatalf("good rules: unexpected problems:\n%s", got)
	}

	for _, tc := range []struct {
		name     string
		old, new string // replaced once in the good file
		kinds    []oauthstore.RecordKind
		want     []string
	}{
		{
			name: "refresh rule at the lifetime",
			old:  "daysAfterModificationGreaterThan: 31", new: "daysAfterModificationGreaterThan: 30",
			want: []string{"(oauth-refresh) deletes under oauth/refresh/ more than 30 days after the last write, but a record there may be valid for 30 days"},
		},
		{
			name: "families rule without the touch interval",
			old:  "daysAfterModificationGreaterThan: 32", new: "daysAfterModificationGreaterThan: 31",
			want: []string{"(oauth-families) deletes under oauth/families/ more than 31 days"},
		},
		{
			name: "prefix typo",
			old:  "'oauth/families/'", new: "'oauth/family/'",
			want: []string{"no enabled lifecycle rule deletes the block blobs under oauth/families/", `prefix "oauth/family/" matches no oauthstore record kind`},
		},
		{
			name: "rule without prefixMatch deletes the whole account",
			old:  "prefixMatch: ['oauth/codes/']", new: "",
			want: []string{"(oauth-codes) deletes under oauth/clients/ more than 1 day after", "(oauth-codes) deletes under oauth/refresh/"},
		},
		{
			name: "prefix reaching over several kinds",
			old:  "'oauth/refresh/'", new: "'oauth/'",
			want: []string{"(oauth-refresh) deletes under oauth/clients/ more than 31 days", "(oauth-refresh) deletes under oauth/families/"},
		},
		{
			name: "disabled rule",
			old:  "enabled: true // clients", new: "enabled: false",
			want: []string{"no enabled lifecycle rule deletes the block blobs under oauth/clients/"},
		},
		{
			name: "wrong blob type",
			old:  "blobTypes: ['blockBlob'] // codes", new: "blobTypes: ['appendBlob']",
			want: []string{"no enabled lifecycle rule deletes the block blobs under oauth/codes/"},
		},
		{
			name: "delete by creation time",
			old:  "daysAfterModificationGreaterThan: 92", new: "daysAfterCreationGreaterThan: 92",
			want: []string{"deletes under oauth/clients/ by daysAfterCreationGreaterThan", "no enabled lifecycle rule deletes the block blobs under oauth/clients/"},
		},
		{
			name: "days not a literal",
			old:  "daysAfterModificationGreaterThan: 92", new: "daysAfterModificationGreaterThan: clientDays",
			want: []string{"daysAfterModificationGreaterThan is clientDays, not a literal number"},
		},
		{
			name: "interpolated prefix",
			old:  "'oauth/clients/'", new: "'${container}/clients/'",
			want: []string{"prefixMatch entry '${container}/clients/' is not a literal string"},
		},
		{
			name: "no policy",
			old:  "lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@", new: "lifecycle 'Microsoft.Storage/storageAccounts/managementPolicyz@",
			want: []string{"no Microsoft.Storage/storageAccounts/managementPolicies resource"},
		},
		{
			name: "wrong name",
			old:  "name: 'default' // policy", new: "name: 'oauth'",
			want: []string{"must be named 'default'"},
		},
		{
			name: "API version apart from the account's",
			old:  "lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01'", new: "lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-01-01'",
			want: []string{"managementPolicies@2023-01-01, but the storage account is @2023-05-01"},
		},
		{
			name:  "a record kind without a rule",
			kinds: append(kinds[:4:4], oauthstore.RecordKind{Prefix: "sessions/", KeepFor: day}),
			want:  []string{"no enabled lifecycle rule deletes the block blobs under oauth/sessions/"},
		},
		{
			name:  "a longer lifetime in the code",
			kinds: []oauthstore.RecordKind{kinds[0], kinds[1], kinds[2], {Prefix: "clients/", KeepFor: 180 * day}},
			want:  []string{"(oauth-clients) deletes under oauth/clients/ more than 92 days after the last write, but a record there may be valid for 180 days"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			text := good
			if tc.old != "" {
				if !strings.Contains(good, tc.old) {
					t.Fatalf("%s does not contain %q", path, tc.old)
				}
				text = strings.Replace(good, tc.old, tc.new, 1)
			}
			k := kinds
			if tc.kinds != nil {
				k = tc.kinds
			}
			got := check(text, k)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("no problem containing %q; got:\n%s", w, got)
				}
			}
		})
	}
}

func TestLitParser(t *testing.T) {
	p := &litParser{s: "{\n  a: 'x\\'y'\n  'b-c': [1, 'z', true\n    f(1, ']')]\n  d: {}\n  e: '${v}'\n}"}
	v, err := p.value()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := v.(map[string]any)
	list, _ := m["b-c"].([]any)
	switch {
	case m["a"] != "x'y":
		t.Errorf("a = %#v; want x'y", m["a"])
	case len(list) != 4 || list[0] != 1 || list[1] != "z" || list[2] != true || list[3] != bicepRaw("f(1, ']')"):
		t.Errorf("b-c = %#v", m["b-c"])
	case m["e"] != bicepRaw("'${v}'"):
		t.Errorf("e = %#v; want the interpolation as raw text", m["e"])
	}
	if d, ok := m["d"].(map[string]any); !ok || len(d) != 0 {
		t.Errorf("d = %#v; want an empty object", m["d"])
	}
	for _, src := range []string{"{ a: 1", "[for x in y: x]", "{ a 1 }", "{ a: 'open\n}"} {
		if _, err := (&litParser{s: src}).value(); err == nil {
			t.Errorf("%q parsed without error", src)
		}
	}
}
