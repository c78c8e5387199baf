package cimd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// userAgent identifies the fetch to document hosts.
const userAgent = "remote-mcp-authorization-server"

// errNonPublic is what the dialer's address check returns; it travels up
// through net.OpError and url.Error to be recognized with errors.Is.
var errNonPublic = errors.New("the address is not public")

// fetcher is the HTTP side of a Resolver: its own client, never the
// default one, so that no proxy, redirect policy or dialer configured
// elsewhere in the process applies.
type fetcher struct {
	client   *http.Client
	timeout  time.Duration
	maxBytes int64
	minTTL   time.Duration
	maxTTL   time.Duration
	defTTL   time.Duration
}

// fetchError is a failed fetch: public is the storage.Error for callers,
// status the HTTP status if the host answered, and cause the underlying
// error for the server's logs.
type fetchError struct {
	public error
	status int
	cause  error
}

func (e *fetchError) Error() string { return e.public.Error() }

func newFetcher(o Options) *fetcher {
	allowPrivate := o.AllowPrivateAddresses
	dialer := &net.Dialer{
		// Control sees the address actually being dialed, after DNS, so a
		// name that resolves to a public address when checked and to an
		// internal one when connecting (DNS rebinding) gains nothing.
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("dialing %q: %w", address, errNonPublic)
			}
			if !allowPrivate && !isPublic(ap.Addr()) {
				return errNonPublic
			}
			return nil
		},
	}
	transport := &http.Transport{
		// No proxy, whatever the environment says: a proxy would make the
		// connection, and the address check would see only the proxy.
		Proxy:       nil,
		DialContext: dialer.DialContext,
		TLSClientConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			RootCAs:    o.RootCAs,
		},
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    o.Timeout,
		ResponseHeaderTimeout:  o.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
		MaxIdleConns:           16,
		MaxIdleConnsPerHost:    1,
		IdleConnTimeout:        30 * time.Second,
	}
	return &fetcher{
		client: &http.Client{
			Transport: transport,
			Timeout:   o.Timeout,
			// A redirect would make the document's URL differ from the
			// client_id it must name, and could point anywhere.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		timeout:  o.Timeout,
		maxBytes: o.MaxBytes,
		minTTL:   o.MinTTL,
		maxTTL:   o.MaxTTL,
		defTTL:   o.DefaultTTL,
	}
}

// get fetches and validates the document at clientID, which CheckURL has
// accepted, and returns its metadata and how long to reuse it. Every error
// is a *fetchError.
func (f *fetcher) get(ctx context.Context, clientID string) (oauthstore.ClientMetadata, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, clientID, nil)
	if err != nil {
		return oauthstore.ClientMetadata{}, 0, &fetchError{public: storage.Errorf(storage.ErrNotFound, "the client_id URL is not a valid URL"), cause: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)

	resp, err := f.client.Do(req)
	if err != nil {
		return oauthstore.ClientMetadata{}, 0, transportError(err)
	}
	defer resp.Body.Close()

	if err := checkStatus(resp.StatusCode); err != nil {
		return oauthstore.ClientMetadata{}, 0, &fetchError{public: err, status: resp.StatusCode}
	}
	notFound := func(format string, args ...any) error {
		return &fetchError{public: storage.Errorf(storage.ErrNotFound, format, args...), status: resp.StatusCode}
	}
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json")) {
		return oauthstore.ClientMetadata{}, 0, notFound("the client's metadata document must be served as application/json, not %q", truncate(ct, 100))
	}
	if resp.ContentLength > f.maxBytes {
		return oauthstore.ClientMetadata{}, 0, notFound("the client's metadata document is larger than %d bytes", f.maxBytes)
	}
	// One byte more than allowed tells a document at the limit from one
	// over it; a truncated document must never be parsed.
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		fe := transportError(err)
		fe.status = resp.StatusCode
		return oauthstore.ClientMetadata{}, 0, fe
	}
	if int64(len(body)) > f.maxBytes {
		return oauthstore.ClientMetadata{}, 0, notFound("the client's metadata document is larger than %d bytes", f.maxBytes)
	}
	meta, err := parseDocument(clientID, body)
	if err != nil {
		return oauthstore.ClientMetadata{}, 0, &fetchError{public: err, status: resp.StatusCode}
	}
	return meta, f.ttl(resp.Header), nil
}

// checkStatus accepts 200 only. 4xx and redirects are the client's
// problem and permanent (ErrNotFound, remembered for NegativeTTL); 5xx, 408
// and 429 say "later" (ErrUnavailable, not remembered).
func checkStatus(code int) error {
	switch {
	case code == http.StatusOK:
		return nil
	case code >= 300 && code < 400:
		return storage.Errorf(storage.ErrNotFound, "the client's metadata document URL answered with a redirect (HTTP %d); redirects are not followed", code)
	case code == http.StatusNotFound, code == http.StatusGone:
		return storage.Errorf(storage.ErrNotFound, "the client's metadata document does not exist (HTTP %d)", code)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		return storage.Errorf(storage.ErrUnavailable, "the client's metadata document host is busy or failing (HTTP %d); try again later", code)
	case code >= 400:
		return storage.Errorf(storage.ErrNotFound, "the client's metadata document host refused the request (HTTP %d)", code)
	default:
		return storage.Errorf(storage.ErrNotFound, "the client's metadata document host answered HTTP %d, not 200", code)
	}
}

// transportError classifies a failure to get a response or its body.
// Timeouts, refused connections and the like are transient. A refused
// address, a host name that does not exist and an invalid certificate are
// the client's doing and will not fix themselves in a moment.
func transportError(err error) *fetchError {
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		hostErr x509.HostnameError
		authErr x509.UnknownAuthorityError
		invErr  x509.CertificateInvalidError
	)
	e := &fetchError{cause: err}
	switch {
	case errors.Is(err, errNonPublic):
		e.public = storage.Errorf(storage.ErrNotFound, "the client_id's host resolves to a non-public address")
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		e.public = storage.Errorf(storage.ErrNotFound, "the client_id's host name does not exist")
	case errors.As(err, &certErr), errors.As(err, &hostErr), errors.As(err, &authErr), errors.As(err, &invErr):
		e.public = storage.Errorf(storage.ErrNotFound, "the client_id's host presented a certificate that is not valid for it")
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		e.public = storage.Errorf(storage.ErrUnavailable, "the client's metadata document host did not answer in time; try again in a moment")
	default:
		e.public = storage.Errorf(storage.ErrUnavailable, "the client's metadata document host cannot be reached; try again in a moment")
	}
	return e
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ttl is how long a document is reused: Cache-Control max-age when given
// and caching is not forbidden, else the default, clamped to [min, max]. A
// document that says no-store still gets the minimum: fetching on every
// authorization request would hand each requester a fetch to trigger.
func (f *fetcher) ttl(h http.Header) time.Duration {
	ttl := f.defTTL
	maxAge, noCache := -1, false
	for _, line := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(line, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), "=")
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "no-store", "no-cache":
				noCache = true
			case "max-age":
				n, err := strconv.ParseInt(strings.Trim(strings.TrimSpace(val), `"`), 10, 64)
				switch {
				case err == nil && n >= 0:
					maxAge = int(min(n, int64(f.maxTTL/time.Second)+1))
				case errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(val, "-"):
					maxAge = int(f.maxTTL/time.Second) + 1
				}
			}
		}
	}
	if !noCache && maxAge >= 0 {
		ttl = time.Duration(maxAge) * time.Second
	}
	return max(f.minTTL, min(f.maxTTL, ttl))
}

// parseDocument applies the document rules: one JSON object, UTF-8, no
// duplicate member names; client_id equal to the URL byte for byte; no
// client secret; a public client (token_endpoint_auth_method absent or
// "none"); redirect_uris present; and then whatever
// oauthstore.ValidateMetadata demands of a registration. Errors are
// storage.ErrNotFound.
func parseDocument(clientID string, body []byte) (oauthstore.ClientMetadata, error) {
	bad := func(format string, args ...any) (oauthstore.ClientMetadata, error) {
		return oauthstore.ClientMetadata{}, storage.Errorf(storage.ErrNotFound, "the client's metadata document "+format, args...)
	}
	if !utf8.Valid(body) {
		return bad("is not valid UTF-8")
	}
	doc, err := decodeObject(body)
	if err != nil {
		return bad("%s", err)
	}

	id, err := stringMember(doc, "client_id")
	switch {
	case err != nil:
		return bad("%s", err)
	case id == nil:
		return bad("has no client_id")
	case *id != clientID:
		return bad("names client_id %s, not its own URL", strconv.Quote(truncate(*id, MaxURLLength)))
	}
	for _, name := range []string{"client_secret", "client_secret_expires_at"} {
		if _, ok := doc[name]; ok {
			return bad("must not contain %s: only public clients are supported", name)
		}
	}
	method, err := stringMember(doc, "token_endpoint_auth_method")
	if err != nil {
		return bad("%s", err)
	}
	if method != nil && *method != oauthstore.AuthMethodNone {
		return bad("says token_endpoint_auth_method %s; only public clients are supported: token_endpoint_auth_method must be none", strconv.Quote(truncate(*method, 64)))
	}
	if _, ok := doc["redirect_uris"]; !ok {
		return bad("has no redirect_uris")
	}

	var m oauthstore.ClientMetadata
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"client_name", &m.ClientName},
		{"client_uri", &m.ClientURI},
		{"token_endpoint_auth_method", &m.TokenEndpointAuthMethod},
	} {
		s, err := stringMember(doc, f.name)
		if err != nil {
			return bad("%s", err)
		}
		if s != nil {
			*f.dst = *s
		}
	}
	for _, f := range []struct {
		name string
		dst  *[]string
	}{
		{"redirect_uris", &m.RedirectURIs},
		{"grant_types", &m.GrantTypes},
		{"response_types", &m.ResponseTypes},
	} {
		if *f.dst, err = stringsMember(doc, f.name); err != nil {
			return bad("%s", err)
		}
	}

	m, err = oauthstore.ValidateMetadata(m)
	if err != nil {
		var oe *oauthstore.Error
		if errors.As(err, &oe) {
			return bad("is not acceptable: %s", oe.Description)
		}
		return bad("is not acceptable: %s", err)
	}
	return m, nil
}

// decodeObject reads body as exactly one JSON object and returns its
// members undecoded. A repeated member name is refused rather than
// resolved: JSON parsers disagree on which one wins.
func decodeObject(body []byte) (map[string]json.RawMessage, error) {
	notObject := errors.New("is not a JSON object")
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, notObject
	}
	doc := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, errors.New("is not valid JSON")
		}
		name, ok := tok.(string)
		if !ok {
			return nil, errors.New("is not valid JSON")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("is not valid JSON")
		}
		if _, dup := doc[name]; dup {
			return nil, fmt.Errorf("names the member %s more than once", strconv.Quote(truncate(name, 64)))
		}
		doc[name] = v
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, errors.New("is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("has data after the JSON object")
	}
	return doc, nil
}

// stringMember returns a member that must be a JSON string, or nil if it
// is absent. null is not a string.
func stringMember(doc map[string]json.RawMessage, name string) (*string, error) {
	raw, ok := doc[name]
	if !ok {
		return nil, nil
	}
	raw = bytes.TrimSpace(raw)
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, fmt.Errorf("has %s that is not a string", name)
	}
	return &s, nil
}

// stringsMember returns a member that must be an array of strings, or nil
// if it is absent.
func stringsMember(doc map[string]json.RawMessage, name string) ([]string, error) {
	raw, ok := doc[name]
	if !ok {
		return nil, nil
	}
	raw = bytes.TrimSpace(raw)
	var items []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &items) != nil {
		return nil, fmt.Errorf("has %s that is not an array of strings", name)
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		it = bytes.TrimSpace(it)
		var s string
		if len(it) == 0 || it[0] != '"' || json.Unmarshal(it, &s) != nil {
			return nil, fmt.Errorf("has %s that is not an array of strings", name)
		}
		out = append(out, s)
	}
	return out, nil
}

// truncate shortens s to at most n bytes for an error message, on a rune
// boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
