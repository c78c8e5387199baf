package oauthstore

import (
	"net/url"
	"strings"
	"testing"
)

var redirectSeeds = []string{
	"https://app.example.com/cb",
	"https://app.example.com:8443/cb?x=1",
	"http://127.0.0.1:33418/callback",
	"http://[::1]/cb",
	"http://localhost:6274/oauth/callback",
	"com.example.app:/oauth2redirect",
	"com.example.app://cb",
	"https://user@app.example.com/cb",
	"https://app.example.com/cb#x",
	"https://*.example.com/",
	"javascript:alert(1)",
	"data:text/html,x",
	"file:///etc/passwd",
	"http://127.0.0.1:80@evil.com/",
	"https://example.com\\@evil.com",
	"https://[fe80::1%25eth0]/",
	"http://127.0.0.1.nip.io/",
	"HTTP://127.0.0.1/",
	"https:///cb",
	"https://example.com:/",
	"",
}

// FuzzValidateRedirectURI checks that whatever the validator accepts has
// the properties FRONTDOOR section 2 demands, however it is spelled.
func FuzzValidateRedirectURI(f *testing.F) {
	for _, s := range redirectSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if ValidateRedirectURI(raw) != nil {
			return
		}
		if len(raw) > MaxRedirectURILength || strings.ContainsAny(raw, "#*\\ \t\r\n\x00") {
			t.Fatalf("accepted %q: too long or forbidden character", raw)
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("accepted %q, which net/url cannot parse: %v", raw, err)
		}
		if u.User != nil || u.Fragment != "" || u.Opaque != "" {
			t.Fatalf("accepted %q with user info, fragment or opaque part", raw)
		}
		switch {
		case u.Scheme == "https":
			if u.Hostname() == "" {
				t.Fatalf("accepted https URI %q without a host", raw)
			}
		case u.Scheme == "http":
			if h := u.Hostname(); h != "127.0.0.1" && h != "::1" && h != "localhost" {
				t.Fatalf("accepted http URI %q on host %q", raw, h)
			}
		case strings.Contains(u.Scheme, "."):
		default:
			t.Fatalf("accepted %q with scheme %q", raw, u.Scheme)
		}
		if !RedirectURIMatches(raw, raw) {
			t.Fatalf("accepted %q does not match itself", raw)
		}
		if u.Scheme == "http" && (u.Hostname() == "127.0.0.1" || u.Hostname() == "::1") {
			moved := *u
			moved.Host = u.Hostname()
			if strings.Contains(moved.Host, ":") {
				moved.Host = "[" + moved.Host + "]"
			}
			moved.Host += ":54321"
			other := moved.String()
			if other != raw && ValidateRedirectURI(other) == nil && !RedirectURIMatches(raw, other) {
				t.Fatalf("loopback %q does not match itself on another port (%q)", raw, other)
			}
		}
	})
}

// FuzzRedirectURIMatches checks that a match other than an exact one is
// only ever the loopback port exception: same scheme, loopback IP host,
// same path and query, no user info or fragment.
func FuzzRedirectURIMatches(f *testing.F) {
	for _, s := range redirectSeeds {
		f.Add(s, s)
		f.Add(s, strings.Replace(s, "33418", "1", 1))
		f.Add(s, s+"/")
	}
	f.Fuzz(func(t *testing.T, registered, requested string) {
		if !RedirectURIMatches(registered, requested) || registered == requested {
			return
		}
		r, err1 := url.Parse(registered)
		q, err2 := url.Parse(requested)
		if err1 != nil || err2 != nil {
			t.Fatalf("non-exact match of unparsable URIs %q, %q", registered, requested)
		}
		if r.Scheme != "http" || q.Scheme != "http" || r.Hostname() != q.Hostname() ||
			(q.Hostname() != "127.0.0.1" && q.Hostname() != "::1") {
			t.Fatalf("non-exact match %q ~ %q outside the loopback exception", registered, requested)
		}
		if q.User != nil || q.Fragment != "" || r.EscapedPath() != q.EscapedPath() || r.RawQuery != q.RawQuery {
			t.Fatalf("non-exact match %q ~ %q differs in more than the port", registered, requested)
		}
	})
}
