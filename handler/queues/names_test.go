package queues

import (
	"errors"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

const (
	ownerA = "72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-00000000000a"
	ownerB = "72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-00000000000b"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for valid, else the exact message
	}{
		{"tasks", ""},
		{"a", ""},
		{"7", ""},
		{"build-jobs-2", ""},
		{"a-b-c", ""},
		{strings.Repeat("q", 41), ""},
		{"", "queue name is empty; use lowercase letters, digits and single hyphens, 1 to 41 characters"},
		{strings.Repeat("q", 42), "queue name must be at most 41 characters (it has 42)"},
		{"Tasks", "queue name contains 'T'; queue names are lowercase: use lowercase letters, digits and single hyphens"},
		{"my_tasks", "queue name contains '_'; use lowercase letters, digits and single hyphens"},
		{"my.tasks", "queue name contains '.'; use lowercase letters, digits and single hyphens"},
		{"my tasks", "queue name contains a space; use lowercase letters, digits and single hyphens"},
		{"a/b", "queue name contains '/'; use lowercase letters, digits and single hyphens"},
		{"tâches", "queue name contains 'â'; use lowercase letters, digits and single hyphens"},
		{"a\tb", `queue name contains '\t'; use lowercase letters, digits and single hyphens`},
		{"a\xffb", "queue name is not valid UTF-8; use lowercase letters, digits and single hyphens"},
		{"-tasks", "queue name must start with a letter or digit"},
		{"tasks-", "queue name must end with a letter or digit"},
		{"-", "queue name must start with a letter or digit"},
		{"my--tasks", "queue name must not contain two hyphens in a row"},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("ValidateName(%q) = %v; want nil", tt.name, err)
		case tt.want != "" && err == nil:
			t.Errorf("ValidateName(%q) = nil; want %q", tt.name, tt.want)
		case tt.want != "" && err.Error() != tt.want:
			t.Errorf("ValidateName(%q) = %q; want %q", tt.name, err, tt.want)
		case err != nil && !errors.Is(err, storage.ErrInvalid):
			t.Errorf("ValidateName(%q) does not wrap ErrInvalid", tt.name)
		}
	}
}

func TestPhysicalName(t *testing.T) {
	a, b := physicalName(ownerA, "tasks"), physicalName(ownerB, "tasks")
	if a == b {
		t.Fatalf("two owners share the physical queue %q", a)
	}
	// sha256("72f988bf-.../...0a") starts with these 20 hex digits; a
	// change here would orphan every existing queue.
	const want = "u144b2c8e55f77e307404-tasks"
	if a != want {
		t.Errorf("physicalName = %q; want %q", a, want)
	}
	if long := physicalName(ownerA, strings.Repeat("q", MaxNameLength)); len(long) != 63 {
		t.Errorf("the longest physical name has %d characters; want 63", len(long))
	}
	if !azureQueueName(a) {
		t.Errorf("%q breaks Azure's rules", a)
	}
}

// azureQueueName applies Azure's queue naming rules, independently of
// ValidateName.
func azureQueueName(s string) bool {
	if len(s) < 3 || len(s) > 63 || strings.Contains(s, "--") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || '0' <= c && c <= '9'
		if !alnum && c != '-' || (i == 0 || i == len(s)-1) && !alnum {
			return false
		}
	}
	return true
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"tasks", "a", "a-b", "a--b", "-a", "a-", "A", "", strings.Repeat("a", 41), strings.Repeat("a", 42), "é", "\xff", "a_b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalid) {
				t.Fatalf("ValidateName(%q) = %v, which does not wrap ErrInvalid", name, err)
			}
			return
		}
		if len(name) < 1 || len(name) > MaxNameLength {
			t.Fatalf("accepted %q with length %d", name, len(name))
		}
		for _, owner := range []string{ownerA, ownerB} {
			if p := physicalName(owner, name); !azureQueueName(p) {
				t.Fatalf("accepted %q, whose physical name %q breaks Azure's rules", name, p)
			}
		}
	})
}
