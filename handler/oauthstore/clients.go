package oauthstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Registration limits (FRONTDOOR section 2).
const (
	MaxRedirectURIs      = 5
	MaxRedirectURILength = 512
	MaxClientNameLength  = 128 // characters
	MaxClientURILength   = 512
)

// The only values this server supports. Registration replaces or narrows
// whatever else a client asks for (RFC 7591 section 3.2.1 lets it), because
// clients cope better with an adjusted registration than with a refusal.
const (
	AuthMethodNone         = "none"
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	ResponseTypeCode       = "code"
)

// ClientMetadata is what a client sends to register (RFC 7591 section 2),
// limited to the fields this server uses; the JSON tags are the RFC's names,
// so a registration request decodes straight into it.
type ClientMetadata struct {
	RedirectURIs            []string `json:"redirect_uris"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method,omitempty"`
	GrantTypes              []string `json:"grant_types,omitempty"`
	ResponseTypes           []string `json:"response_types,omitempty"`
}

// Client is a stored registration.
type Client struct {
	ClientID string
	ClientMetadata
	Created  time.Time
	LastUsed time.Time
}

// clientRecord is the JSON of clients/<client_id>.
type clientRecord struct {
	V                       int       `json:"v"`
	ClientID                string    `json:"client_id"`
	RedirectURIs            []string  `json:"redirect_uris"`
	ClientName              string    `json:"client_name,omitempty"`
	ClientURI               string    `json:"client_uri,omitempty"`
	TokenEndpointAuthMethod string    `json:"token_endpoint_auth_method"`
	GrantTypes              []string  `json:"grant_types"`
	ResponseTypes           []string  `json:"response_types"`
	Created                 time.Time `json:"created"`
	LastUsed                time.Time `json:"last_used"`
}

// newClientRecord is the record of client id with metadata m.
func newClientRecord(id string, m ClientMetadata) clientRecord {
	return clientRecord{
		V:                       1,
		ClientID:                id,
		RedirectURIs:            m.RedirectURIs,
		ClientName:              m.ClientName,
		ClientURI:               m.ClientURI,
		TokenEndpointAuthMethod: m.TokenEndpointAuthMethod,
		GrantTypes:              m.GrantTypes,
		ResponseTypes:           m.ResponseTypes,
	}
}

func (r clientRecord) client() Client {
	return Client{
		ClientID: r.ClientID,
		ClientMetadata: ClientMetadata{
			RedirectURIs:            r.RedirectURIs,
			ClientName:              r.ClientName,
			ClientURI:               r.ClientURI,
			TokenEndpointAuthMethod: r.TokenEndpointAuthMethod,
			GrantTypes:              r.GrantTypes,
			ResponseTypes:           r.ResponseTypes,
		},
		Created:  r.Created,
		LastUsed: r.LastUsed,
	}
}

// RegisterClient validates m (see ValidateMetadata), stores the client under
// a fresh random client_id and returns the registration as stored. Invalid
// metadata is an *Error with code invalid_redirect_uri or
// invalid_client_metadata.
func (s *Store) RegisterClient(ctx context.Context, m ClientMetadata) (Client, error) {
	m, err := ValidateMetadata(m)
	if err != nil {
		return Client{}, err
	}
	rec := newClientRecord(newID(), m)
	rec.Created = s.nowUTC()
	rec.LastUsed = rec.Created
	if err := s.create(ctx, clientName(rec.ClientID), rec); err != nil {
		return Client{}, fmt.Errorf("storing the client registration: %w", err)
	}
	return rec.client(), nil
}

// GetClient returns a registration. An unknown client_id, a malformed one
// and a registration unused for longer than ClientIdleTTL are all
// storage.ErrNotFound. A successful read records the use (at most once a
// day), which keeps active registrations alive.
func (s *Store) GetClient(ctx context.Context, id string) (Client, error) {
	rec, err := s.getClient(ctx, id)
	if err != nil {
		return Client{}, err
	}
	return rec.client(), nil
}

func (s *Store) getClient(ctx context.Context, id string) (clientRecord, error) {
	unknown := storage.Errorf(storage.ErrNotFound, "the client is not registered")
	if IsDocumentClientID(id) {
		if s.documents == nil {
			return clientRecord{}, storage.Errorf(storage.ErrNotFound, "client ID metadata documents are not supported here")
		}
		m, err := s.documents(ctx, id)
		if err != nil {
			return clientRecord{}, err
		}
		// Nothing stored: no creation or use times.
		return newClientRecord(id, m), nil
	}
	if !isID(id) {
		return clientRecord{}, unknown
	}
	var rec clientRecord
	etag, err := s.read(ctx, clientName(id), &rec)
	if errors.Is(err, storage.ErrNotFound) {
		return clientRecord{}, unknown
	}
	if err != nil {
		return clientRecord{}, fmt.Errorf("reading the client registration: %w", err)
	}
	now := s.nowUTC()
	if now.Sub(rec.LastUsed) > s.idleTTL {
		return clientRecord{}, unknown
	}
	if now.Sub(rec.LastUsed) >= TouchInterval {
		// Best effort: a lost race means somebody else just touched it,
		// and a failed write only costs a day of idle time.
		touched := rec
		touched.LastUsed = now
		if s.replace(ctx, clientName(id), touched, etag) == nil {
			rec = touched
		}
	}
	return rec, nil
}

// MaxDocumentClientIDLength bounds a client_id that is a metadata
// document URL.
const MaxDocumentClientIDLength = 512

// IsDocumentClientID reports whether a client_id names a Client ID Metadata
// Document (an HTTPS URL; Options.Documents resolves it) rather than a
// registration here (random base64url, never with a colon).
func IsDocumentClientID(id string) bool {
	return strings.HasPrefix(id, "https://") && len(id) <= MaxDocumentClientIDLength
}

// ValidateMetadata checks a registration request against FRONTDOOR section
// 2 and returns it normalized: duplicate redirect URIs dropped,
// token_endpoint_auth_method "none", grant_types authorization_code and
// refresh_token, response_types code. A client that asks for other methods
// or additional grant or response types gets what is supported instead; one
// that does not ask for authorization_code or code at all is refused, since
// nothing here would work for it.
func ValidateMetadata(m ClientMetadata) (ClientMetadata, error) {
	var out ClientMetadata
	switch n := len(m.RedirectURIs); {
	case n == 0:
		return out, oauthError(CodeInvalidRedirectURI, "redirect_uris is required: 1 to %d URIs", MaxRedirectURIs)
	case n > MaxRedirectURIs:
		return out, oauthError(CodeInvalidRedirectURI, "redirect_uris has %d entries; at most %d are allowed", n, MaxRedirectURIs)
	}
	for i, u := range m.RedirectURIs {
		if err := ValidateRedirectURI(u); err != nil {
			var e *Error
			if errors.As(err, &e) {
				e.Description = fmt.Sprintf("redirect_uris[%d]: %s", i, e.Description)
			}
			return ClientMetadata{}, err
		}
		if !slices.Contains(out.RedirectURIs, u) {
			out.RedirectURIs = append(out.RedirectURIs, u)
		}
	}

	if n := utf8.RuneCountInString(m.ClientName); n > MaxClientNameLength {
		return ClientMetadata{}, oauthError(CodeInvalidClientMetadata, "client_name has %d characters; at most %d are allowed", n, MaxClientNameLength)
	}
	if err := displayText(m.ClientName); err != nil {
		return ClientMetadata{}, oauthError(CodeInvalidClientMetadata, "client_name %s", err)
	}
	out.ClientName = m.ClientName

	if m.ClientURI != "" {
		if len(m.ClientURI) > MaxClientURILength {
			return ClientMetadata{}, oauthError(CodeInvalidClientMetadata, "client_uri has %d characters; at most %d are allowed", len(m.ClientURI), MaxClientURILength)
		}
		if err := validateClientURI(m.ClientURI); err != nil {
			return ClientMetadata{}, oauthError(CodeInvalidClientMetadata, "client_uri %s", err)
		}
		out.ClientURI = m.ClientURI
	}

	out.TokenEndpointAuthMethod = AuthMethodNone
	if len(m.GrantTypes) > 0 && !slices.Contains(m.GrantTypes, GrantAuthorizationCode) {
		return ClientMetadata{}, oauthError(CodeInvalidClientMetadata, "grant_types must include %q; this server supports only %q and %q", GrantAuthorizationCode, GrantAuthorizationCode, GrantRefreshToken)
	}
	// Refresh tokens come with every code exchange, so the registration
	// says so even when the client did not ask.
	out.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
	if len(m.ResponseTypes) > 0 && !slices.Contains(m.ResponseTypes, ResponseTypeCode) {
		return ClientMetadata{}, oauthError(CodeInvalidClientMetadata, "response_types must include %q, the only one this server supports", ResponseTypeCode)
	}
	out.ResponseTypes = []string{ResponseTypeCode}
	return out, nil
}

// displayText refuses control and format characters in text a consent page
// shows: format characters include the bidirectional overrides that make a
// name read differently from what it is.
func displayText(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("is not valid UTF-8")
	}
	for _, r := range s {
		if unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("contains the control or format character %s", storage.QuoteRune(r))
		}
	}
	return nil
}

// ValidateRedirectURI checks one redirect URI against FRONTDOOR section 2:
// at most MaxRedirectURILength characters; https with any host; http only on
// 127.0.0.1, [::1] or localhost; or a private-use scheme, one with a dot
// (reverse domain name, RFC 8252 section 7.1), for native apps. Never a
// fragment, user information, a wildcard, or a javascript:, data: or file:
// URI. The scheme must be lower case: redirect URIs are compared as exact
// strings later, so one spelling per URI avoids surprises.
//
// The error is an *Error with code invalid_redirect_uri.
func ValidateRedirectURI(raw string) error {
	bad := func(format string, args ...any) error {
		return oauthError(CodeInvalidRedirectURI, format, args...)
	}
	if raw == "" {
		return bad("is empty")
	}
	if len(raw) > MaxRedirectURILength {
		return bad("has %d characters; at most %d are allowed", len(raw), MaxRedirectURILength)
	}
	for _, r := range raw {
		switch {
		case r == '#':
			return bad("must not contain a fragment ('#')")
		case r == '*':
			return bad("must not contain a wildcard ('*'); register each URI exactly")
		case !isURIChar(r):
			return bad("contains %s, which is not allowed in a URI (percent-encode it)", storage.QuoteRune(r))
		}
	}
	scheme, _, ok := strings.Cut(raw, ":")
	if !ok || scheme == "" {
		return bad("is not an absolute URI; it needs a scheme such as https://")
	}
	if !isScheme(scheme) {
		if isScheme(strings.ToLower(scheme)) {
			return bad("scheme must be written in lower case")
		}
		return bad("has a malformed scheme")
	}
	switch scheme {
	case "javascript", "data", "file", "vbscript", "blob", "about":
		return bad("must not use the %s: scheme", scheme)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return bad("is not a valid URI")
	}
	if u.Opaque != "" {
		return bad("must be hierarchical, like https://host/path or com.example.app:/path")
	}
	if u.User != nil {
		return bad("must not contain user information ('user@')")
	}
	switch {
	case scheme == "https":
		if err := checkAuthority(u); err != nil {
			return bad("%s", err)
		}
	case scheme == "http":
		if err := checkAuthority(u); err != nil {
			return bad("%s", err)
		}
		if h := u.Hostname(); h != "127.0.0.1" && h != "::1" && h != "localhost" {
			return bad("may use http only on a loopback address (127.0.0.1, [::1] or localhost); use https for other hosts")
		}
	case strings.Contains(scheme, "."):
		// A native app's private-use scheme: "com.example.app:/cb" as RFC
		// 8252 section 7.1 recommends, or with an authority.
		if u.Host != "" {
			if err := checkAuthority(u); err != nil {
				return bad("%s", err)
			}
		} else if u.Path == "" {
			return bad("needs a path, like %s:/callback", scheme)
		}
	default:
		return bad("uses the scheme %q; allowed are https, http on a loopback address, and private-use schemes of native apps such as com.example.app", scheme)
	}
	return nil
}

// validateClientURI accepts a web page address: https, or http on loopback,
// without user information or fragment.
func validateClientURI(raw string) error {
	for _, r := range raw {
		if r == '#' || r == '*' || !isURIChar(r) {
			return fmt.Errorf("contains %s, which is not allowed here", storage.QuoteRune(r))
		}
	}
	u, err := url.Parse(raw)
	if err != nil || u.Opaque != "" || u.User != nil {
		return errors.New("must be an https URL without user information")
	}
	if err := checkAuthority(u); err != nil {
		return err
	}
	switch h := u.Hostname(); {
	case u.Scheme == "https":
	case u.Scheme == "http" && (h == "127.0.0.1" || h == "::1" || h == "localhost"):
	default:
		return errors.New("must be an https URL")
	}
	return nil
}

// checkAuthority requires a host name or IP literal and, if a port is
// given, a valid one. Percent-encoded hosts and IPv6 zones are refused:
// they have no business in a redirect URI and parsers disagree on them.
func checkAuthority(u *url.URL) error {
	h := u.Hostname()
	if h == "" {
		return errors.New("has no host")
	}
	if strings.HasPrefix(u.Host, "[") {
		if strings.ContainsAny(h, "%") || !strings.Contains(h, ":") {
			return errors.New("has a malformed IPv6 host")
		}
	} else {
		for i := 0; i < len(h); i++ {
			c := h[i]
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '.') {
				return errors.New("has a malformed host name")
			}
		}
	}
	if strings.HasSuffix(u.Host, ":") {
		return errors.New("has an empty port")
	}
	if p := u.Port(); p != "" {
		if !isPort(p) {
			return errors.New("has an invalid port")
		}
	}
	return nil
}

// isPort accepts 1 to 65535 in decimal without leading zeros.
func isPort(p string) bool {
	if p == "" || len(p) > 5 || p[0] == '0' {
		return false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		// Digits only: strconv.Atoi would also take a sign ("+1").
		if p[i] < '0' || p[i] > '9' {
			return false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n <= 65535
}

// isScheme accepts RFC 3986 scheme syntax in lower case.
func isScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// isURIChar accepts the characters RFC 3986 allows in a URI: unreserved,
// reserved and '%'. Everything else (spaces, quotes, '<', '\', non-ASCII)
// must be percent-encoded; browsers "fix" such characters in ways that
// differ, which is how lax matching gets bypassed.
func isURIChar(r rune) bool {
	switch {
	case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9':
		return true
	}
	return strings.ContainsRune("-._~:/?#[]@!$&'()*+,;=%", r)
}

// RedirectURIMatches reports whether requested may be used where registered
// was registered: the strings must be identical, byte for byte (scheme,
// host, port, path, query, trailing slash, everything), with two exceptions
// for native apps, which listen on whatever port the OS gives them:
//
//   - RFC 8252 section 7.3: for an http redirect URI on a loopback IP
//     literal, 127.0.0.1 or [::1], the port may differ (or be absent on
//     either side).
//   - An http://localhost URI registered without a port stands for any port
//     on localhost: such a URI is unusable otherwise (port 80 needs root),
//     and real clients' metadata documents list exactly that
//     (http://localhost/callback beside http://127.0.0.1/callback).
//
// A localhost URI registered with a port must be used with that port:
// section 7.3 grants the exception to IP literals, and section 8.3 advises
// against localhost, which DNS or a hosts file may point elsewhere; only a
// registration that cannot mean anything else widens it.
func RedirectURIMatches(registered, requested string) bool {
	if registered == "" || requested == "" {
		return false
	}
	if registered == requested {
		return true
	}
	rh, rport, rrest, ok := splitLoopback(registered)
	if !ok {
		return false
	}
	qh, _, qrest, ok := splitLoopback(requested)
	if !ok || rh != qh || rrest != qrest {
		return false
	}
	return rh != "localhost" || rport == ""
}

// splitLoopback splits "http://<loopback host>[:port]<rest>" (127.0.0.1,
// [::1] or localhost) into the host, the port ("" when absent) and what
// follows the authority. Anything else in the authority (user information,
// another host, a malformed port) does not split.
func splitLoopback(s string) (host, port, rest string, ok bool) {
	after, found := strings.CutPrefix(s, "http://")
	if !found {
		return "", "", "", false
	}
	end := strings.IndexAny(after, "/?#")
	if end < 0 {
		end = len(after)
	}
	authority, rest := after[:end], after[end:]
	for _, h := range []string{"127.0.0.1", "[::1]", "localhost"} {
		tail, found := strings.CutPrefix(authority, h)
		if !found {
			continue
		}
		if tail == "" {
			return h, "", rest, true
		}
		if port, found := strings.CutPrefix(tail, ":"); found && isPort(port) {
			return h, port, rest, true
		}
		return "", "", "", false
	}
	return "", "", "", false
}
