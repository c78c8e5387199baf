// Package guid checks the canonical textual form of GUIDs (Entra tenant and
// object ids, client ids), which become parts of storage paths.
package guid

// Valid reports whether s is 8-4-4-4-12 hex digits in either case. Braces,
// URNs and other spellings are refused, so one id has one spelling up to case.
func Valid(s string) bool {
	return valid(s, true)
}

// ValidLower is Valid with lower-case hex digits only: the spelling used in
// storage paths.
func ValidLower(s string) bool {
	return valid(s, false)
}

func valid(s string, upperOK bool) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || upperOK && 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
