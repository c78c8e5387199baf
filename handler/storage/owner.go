package storage

import "github.com/mcp-apim/remote-mcp/handler/guid"

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
		!guid.ValidLower(owner[:guidLen]) || !guid.ValidLower(owner[guidLen+1:]) {
		return Errorf(ErrInvalid, "the user namespace must be \"<tenant-guid>/<object-guid>\" in lowercase; this is a server bug, report it")
	}
	return nil
}
