package cimd

import (
	"net/netip"
	"net/url"
	"strings"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// MaxURLLength bounds a client_id URL.
const MaxURLLength = 512

// IsURL reports whether a client_id is meant as a metadata document URL: it
// starts with "https://" (case-sensitive). Registered client_ids are
// base64url and never do.
func IsURL(clientID string) bool { return strings.HasPrefix(clientID, "https://") }

// CheckURL reports why clientID is not an acceptable document URL, or nil
// (draft-ietf-oauth-client-id-metadata-document section 3): https; a host
// name or IP literal; a path other than "" or "/"; no "." or ".." path
// segments, percent-encoded or not; no fragment, user information or query;
// at most MaxURLLength bytes; and written the way net/url writes it, so that
// comparing it with the document's client_id byte for byte is meaningful.
//
// The error is a storage.ErrNotFound whose message says what is wrong; it
// never repeats the URL.
func CheckURL(clientID string) error {
	bad := func(format string, args ...any) error {
		return storage.Errorf(storage.ErrNotFound, "the client_id URL "+format, args...)
	}
	if len(clientID) > MaxURLLength {
		return bad("has %d bytes; at most %d are allowed", len(clientID), MaxURLLength)
	}
	if !IsURL(clientID) {
		return bad("must start with https://")
	}
	// Checked on the raw string: url.Parse drops an empty fragment or
	// query ("#", "?"), and the round-trip check would only say "not
	// canonical" about them.
	if strings.Contains(clientID, "#") {
		return bad("must not contain a fragment ('#')")
	}
	if strings.Contains(clientID, "?") {
		return bad("must not contain a query ('?')")
	}
	u, err := url.Parse(clientID)
	if err != nil {
		return bad("is not a valid URL")
	}
	if u.User != nil {
		return bad("must not contain user information ('user@')")
	}
	if err := checkHost(u); err != "" {
		return bad("%s", err)
	}
	if u.Path == "" || u.Path == "/" {
		return bad("must have a path, such as https://example.com/client.json")
	}
	for _, seg := range strings.Split(u.EscapedPath(), "/") {
		if s := strings.ReplaceAll(strings.ToLower(seg), "%2e", "."); s == "." || s == ".." {
			return bad(`must not contain "." or ".." path segments`)
		}
	}
	if u.String() != clientID {
		return bad("is not in canonical form: characters such as spaces and non-ASCII must be percent-encoded")
	}
	return nil
}

// checkHost requires a DNS name or an IP literal and, if a port is given, a
// valid one; it returns what is wrong, or "". Percent-encoded hosts and IPv6
// zones are refused, and a name whose last label is numeric must be a plain
// dotted-quad IPv4 address: resolvers read "0x7f.1" or "010.0.0.1" in ways
// that differ from what a reader expects.
func checkHost(u *url.URL) string {
	h := u.Hostname()
	switch {
	case h == "":
		return "has no host"
	case strings.HasPrefix(u.Host, "["):
		a, err := netip.ParseAddr(h)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "has a malformed IPv6 host"
		}
	default:
		if len(h) > 253 {
			return "has a host name longer than 253 characters"
		}
		labels := strings.Split(h, ".")
		for _, l := range labels {
			if l == "" || len(l) > 63 {
				return "has a malformed host name"
			}
			for i := 0; i < len(l); i++ {
				c := l[i]
				if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-') {
					return "has a malformed host name"
				}
			}
		}
		if isDigits(labels[len(labels)-1]) {
			if a, err := netip.ParseAddr(h); err != nil || !a.Is4() {
				return "has a malformed IPv4 host"
			}
		}
	}
	if strings.HasSuffix(u.Host, ":") {
		return "has an empty port"
	}
	if p := u.Port(); p != "" && !isPort(p) {
		return "has an invalid port"
	}
	return ""
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// isPort accepts 1 to 65535 in decimal without leading zeros.
func isPort(p string) bool {
	if len(p) > 5 || !isDigits(p) || p[0] == '0' {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}
