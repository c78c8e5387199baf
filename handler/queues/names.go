package queues

import (
	"crypto/sha256"
	"encoding/hex"
	"unicode/utf8"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// MaxNameLength is the longest user-visible queue name. The physical name
// adds a 22-character owner prefix, and Azure allows 63 characters.
const MaxNameLength = 41

// ownerHashHex is how many hex digits of sha256(owner) name the owner.
// 80 bits keep collisions between users out of reach while leaving room
// for a useful name under Azure's 63-character limit.
const ownerHashHex = 20

// ownerPrefix returns the prefix of every physical queue name of owner:
// "u" + 20 hex digits + "-". Hashing keeps GUIDs (and their length) out of
// queue names and gives every user a fixed-width namespace.
func ownerPrefix(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return "u" + hex.EncodeToString(sum[:])[:ownerHashHex] + "-"
}

// physicalName is the Azure queue name for a user-visible queue name.
func physicalName(owner, name string) string { return ownerPrefix(owner) + name }

// ValidateName checks a user-visible queue name against Azure's queue name
// rules as they apply once the owner prefix is added: 1 to 41 characters,
// lowercase letters, digits and hyphens, starting and ending with a letter
// or digit, and no two hyphens in a row. The error wraps storage.ErrInvalid
// and says exactly what is wrong.
func ValidateName(name string) error {
	const allowed = "use lowercase letters, digits and single hyphens"
	if name == "" {
		return storage.Errorf(storage.ErrInvalid, "queue name is empty; %s, 1 to %d characters", allowed, MaxNameLength)
	}
	if !utf8.ValidString(name) {
		return storage.Errorf(storage.ErrInvalid, "queue name is not valid UTF-8; %s", allowed)
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLength {
		return storage.Errorf(storage.ErrInvalid, "queue name must be at most %d characters (it has %d)", MaxNameLength, n)
	}
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', '0' <= r && r <= '9', r == '-':
		case 'A' <= r && r <= 'Z':
			return storage.Errorf(storage.ErrInvalid, "queue name contains '%c'; queue names are lowercase: %s", r, allowed)
		default:
			return storage.Errorf(storage.ErrInvalid, "queue name contains %s; %s", storage.QuoteRune(r), allowed)
		}
	}
	if name[0] == '-' {
		return storage.Errorf(storage.ErrInvalid, "queue name must start with a letter or digit")
	}
	if name[len(name)-1] == '-' {
		return storage.Errorf(storage.ErrInvalid, "queue name must end with a letter or digit")
	}
	for i := 1; i < len(name); i++ {
		if name[i] == '-' && name[i-1] == '-' {
			return storage.Errorf(storage.ErrInvalid, "queue name must not contain two hyphens in a row")
		}
	}
	return nil
}
