package oauthstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// Sizes of the random values, in bytes.
const (
	// secretBytes (256 bits) for codes and refresh tokens: FRONTDOOR asks
	// for at least 128 bits for codes and 256 for refresh tokens; one size
	// for both keeps them indistinguishable.
	secretBytes = 32
	// idBytes (128 bits) for client ids and family ids, which are not
	// secrets (they appear in tokens and URLs) but must not be guessable
	// or collide.
	idBytes = 16
	// maxIDLength bounds client and family ids. The access token's fid is
	// validated by the handler with the same bound and alphabet.
	maxIDLength = 128
	// maxSecretLength bounds a presented code or token. Ours are 43
	// characters; anything much longer is not ours and is not hashed.
	maxSecretLength = 512
)

// randomString returns n random bytes as unpadded base64url. crypto/rand's
// Read never fails (it aborts the program if the OS cannot supply
// randomness), so there is no error to return.
func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newSecret returns a fresh code or refresh token.
func newSecret() string { return randomString(secretBytes) }

// newID returns a fresh client or family id.
func newID() string { return randomString(idBytes) }

// hashSecret is the storage key of a code or token: hex SHA-256. A hash of
// 256 random bits needs no salt or stretching: there is nothing to guess.
func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// isID reports whether s is 1 to maxIDLength characters of the base64url
// alphabet: what newID produces, and what may safely be part of a blob name
// (no '/', no '.', nothing to escape). The handler's token validator
// accepts exactly this alphabet for fid.
func isID(s string) bool {
	if s == "" || len(s) > maxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isBase64URL(s[i]) {
			return false
		}
	}
	return true
}

func isBase64URL(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '_'
}

// plausibleSecret filters what is worth hashing and looking up: codes and
// tokens are printable ASCII of bounded length. Everything else cannot be
// one of ours.
func plausibleSecret(s string) bool {
	if s == "" || len(s) > maxSecretLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Blob names: <kind prefix><id or hash>. The prefixes are ClientPrefix and
// its siblings; RecordKinds lists them with how long each must be kept.
func clientName(id string) string    { return ClientPrefix + id }
func codeName(hash string) string    { return CodePrefix + hash }
func refreshName(hash string) string { return RefreshPrefix + hash }
func familyName(fid string) string   { return FamilyPrefix + fid }
