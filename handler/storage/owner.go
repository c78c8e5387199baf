package storage

// ValidateOwner checks that owner is a per-user namespace of the form
// "<tenant-guid>/<object-guid>" with lowercase hexadecimal GUIDs, as the auth
// layer derives it from a token's tid and oid claims.
//
// The check is strict because owner becomes part of blob and queue names:
// anything looser (upper case, braces, extra slashes, "..") would let two
// spellings of one user see different data, or one user reach into another
// user's prefix. The error does not repeat the value.
func ValidateOwner(owner string) error {
	const guidLen = 36
	if len(owner) != 2*guidLen+1 || owner[guidLen] != '/' ||
		!isLowerGUID(owner[:guidLen]) || !isLowerGUID(owner[guidLen+1:]) {
		return Errorf(ErrInvalid, "the user namespace must be \"<tenant-guid>/<object-guid>\" in lowercase; this is a server bug, report it")
	}
	return nil
}

// isLowerGUID reports whether s is 8-4-4-4-12 lowercase hex digits.
func isLowerGUID(s string) bool {
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
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}
