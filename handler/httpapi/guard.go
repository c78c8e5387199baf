package httpapi

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
)

// hostGuard implements DNS-rebinding protection (DESIGN section 3). A
// browser tricked into resolving an attacker's name to 127.0.0.1 sends that
// name as Host and the attacker's page as Origin; both are refused. Allowed
// are the public host (the gateway forwards it, and the Functions host
// proxies over loopback keeping it), the Function App's own host name, and
// loopback names, which a local run needs.
type hostGuard struct {
	hosts   map[string]bool // lower-case host names without port
	origins map[string]bool // scheme://host[:port], lower-case
}

func newHostGuard(publicOrigin *url.URL, extraHosts []string) hostGuard {
	g := hostGuard{hosts: map[string]bool{}, origins: map[string]bool{}}
	g.hosts[strings.ToLower(publicOrigin.Hostname())] = true
	g.origins[strings.ToLower(publicOrigin.Scheme+"://"+publicOrigin.Host)] = true
	for _, h := range extraHosts {
		if h = strings.TrimSpace(h); h != "" {
			g.hosts[strings.ToLower(hostname(h))] = true
		}
	}
	return g
}

// hostname strips an optional port, tolerating bracketed IPv6.
func hostname(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return strings.Trim(hostport, "[]")
}

func isLoopbackName(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (g hostGuard) hostAllowed(hostport string) bool {
	h := strings.ToLower(hostname(hostport))
	return h != "" && (g.hosts[h] || isLoopbackName(h))
}

func (g hostGuard) originAllowed(origin string) bool {
	if g.origins[strings.ToLower(origin)] {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" {
		return false
	}
	return isLoopbackName(u.Hostname())
}

func (g hostGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			writeJSONError(w, http.StatusForbidden, "forbidden", "Host header not allowed")
			return
		}
		if o := r.Header.Get("Origin"); o != "" && !g.originAllowed(o) {
			writeJSONError(w, http.StatusForbidden, "forbidden", "Origin not allowed")
			return
		}
		next.ServeHTTP(w, r)
	})
}
