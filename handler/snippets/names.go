package snippets

import (
	"strings"
	"unicode/utf8"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// ValidateName checks a snippet name: 1 to MaxNameLength characters, only
// ASCII letters, digits, '.', '_' and '-', starting with a letter or digit,
// with no ".." and no trailing '.'. The rules keep a name one path segment
// that no URL normalisation can change: Azure drops trailing dots from
// blob names in URLs, and "/" or ".." would step outside the user's prefix.
// The error wraps storage.ErrInvalid and says exactly what is wrong.
func ValidateName(name string) error {
	if name == "" {
		return storage.Errorf(storage.ErrInvalid, "name is empty; use 1 to %d characters: letters, digits, '.', '_' or '-'", MaxNameLength)
	}
	if !utf8.ValidString(name) {
		return storage.Errorf(storage.ErrInvalid, "name is not valid UTF-8; use letters, digits, '.', '_' or '-'")
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLength {
		return storage.Errorf(storage.ErrInvalid, "name must be at most %d characters (it has %d)", MaxNameLength, n)
	}
	if err := checkChars("name", name); err != nil {
		return err
	}
	if !isAlnum(name[0]) {
		return storage.Errorf(storage.ErrInvalid, "name must start with a letter or digit")
	}
	if strings.Contains(name, "..") {
		return storage.Errorf(storage.ErrInvalid, "name must not contain '..'")
	}
	if strings.HasSuffix(name, ".") {
		return storage.Errorf(storage.ErrInvalid, "name must not end with '.'")
	}
	return nil
}

// validatePrefix checks a List prefix: empty, or up to MaxNameLength
// characters from the name alphabet. It need not be a valid name itself.
func validatePrefix(prefix string) error {
	if !utf8.ValidString(prefix) {
		return storage.Errorf(storage.ErrInvalid, "prefix is not valid UTF-8; use letters, digits, '.', '_' or '-'")
	}
	if n := utf8.RuneCountInString(prefix); n > MaxNameLength {
		return storage.Errorf(storage.ErrInvalid, "prefix must be at most %d characters (it has %d)", MaxNameLength, n)
	}
	return checkChars("prefix", prefix)
}

func checkChars(what, s string) error {
	for _, r := range s {
		if r < utf8.RuneSelf && (isAlnum(byte(r)) || r == '.' || r == '_' || r == '-') {
			continue
		}
		return storage.Errorf(storage.ErrInvalid, "%s contains %s; use letters, digits, '.', '_' or '-'", what, storage.QuoteRune(r))
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
