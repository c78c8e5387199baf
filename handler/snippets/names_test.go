package snippets

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		want string // "" for valid, else the exact message
	}{
		{"notes", ""},
		{"a", ""},
		{"0", ""},
		{"README.md", ""},
		{"my_notes-2024.v1.txt", ""},
		{"a.b.c", ""},
		{"a-", ""},
		{"a_", ""},
		{strings.Repeat("x", 128), ""},
		{"", "name is empty; use 1 to 128 characters: letters, digits, '.', '_' or '-'"},
		{strings.Repeat("x", 129), "name must be at most 128 characters (it has 129)"},
		{strings.Repeat("é", 129), "name must be at most 128 characters (it has 129)"},
		{"a/b", "name contains '/'; use letters, digits, '.', '_' or '-'"},
		{"../etc", "name contains '/'; use letters, digits, '.', '_' or '-'"},
		{"..etc", "name must start with a letter or digit"},
		{"a..b", "name must not contain '..'"},
		{"a.", "name must not end with '.'"},
		{".hidden", "name must start with a letter or digit"},
		{"-flag", "name must start with a letter or digit"},
		{"_x", "name must start with a letter or digit"},
		{"my notes", "name contains a space; use letters, digits, '.', '_' or '-'"},
		{`a\b`, `name contains '\'; use letters, digits, '.', '_' or '-'`},
		{"a%2Fb", "name contains '%'; use letters, digits, '.', '_' or '-'"},
		{"a?b", "name contains '?'; use letters, digits, '.', '_' or '-'"},
		{"a#b", "name contains '#'; use letters, digits, '.', '_' or '-'"},
		{"it's", `name contains "'"; use letters, digits, '.', '_' or '-'`},
		{"café", "name contains 'é'; use letters, digits, '.', '_' or '-'"},
		{"a\x00b", `name contains '\x00'; use letters, digits, '.', '_' or '-'`},
		{"a\nb", `name contains '\n'; use letters, digits, '.', '_' or '-'`},
		{"a\u200bb", `name contains '\u200b'; use letters, digits, '.', '_' or '-'`},
		{"a\xffb", "name is not valid UTF-8; use letters, digits, '.', '_' or '-'"},
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

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"", "a", ".", "-", "a.", "notes-"} {
		if err := validatePrefix(p); err != nil {
			t.Errorf("validatePrefix(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"a/", "../", "a b", strings.Repeat("a", 129), "\xff"} {
		if err := validatePrefix(p); !errors.Is(err, storage.ErrInvalid) {
			t.Errorf("validatePrefix(%q) = %v; want ErrInvalid", p, err)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"notes", "a", "README.md", "a..b", "../x", "a/b", "", ".", "a.", "é", "\xff", strings.Repeat("z", 128), strings.Repeat("z", 129), "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidateName(name)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalid) {
				t.Fatalf("ValidateName(%q) = %v, which does not wrap ErrInvalid", name, err)
			}
			if !utf8.ValidString(err.Error()) {
				t.Fatalf("error message for %q is not valid UTF-8", name)
			}
			return
		}
		if len(name) < 1 || len(name) > MaxNameLength {
			t.Fatalf("accepted %q with length %d", name, len(name))
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			if !(isAlnum(c) || c == '.' || c == '_' || c == '-') {
				t.Fatalf("accepted %q with byte %q", name, c)
			}
		}
		if !isAlnum(name[0]) || strings.Contains(name, "..") || strings.HasSuffix(name, ".") {
			t.Fatalf("accepted %q", name)
		}
	})
}
