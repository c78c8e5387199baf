package auth

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
)

// ProtectedResource is the content of an RFC 9728 protected resource
// metadata document.
type ProtectedResource struct {
	// Resource is the resource identifier; it must equal the URL of the
	// endpoint the document describes (RFC 9728 section 3.3).
	Resource string
	// AuthorizationServers lists issuer identifiers, byte-identical to the
	// authorization server's issuer (FRONTDOOR: ["<gw>"]).
	AuthorizationServers []string
	// ScopesSupported defaults to [DefaultScope] when empty.
	ScopesSupported []string
	// ResourceName is an optional human-readable name.
	ResourceName string
}

// MetadataHandler serves doc as an RFC 9728 document. Only the header bearer
// method is advertised because Authenticator refuses every other one.
//
// The document is public and identical for everybody, so it is cacheable and
// readable cross-origin: browser-based MCP clients fetch it before they have
// any token.
func MetadataHandler(doc ProtectedResource) http.Handler {
	scopes := slices.Clone(doc.ScopesSupported)
	if len(scopes) == 0 {
		scopes = []string{DefaultScope}
	}
	servers := slices.Clone(doc.AuthorizationServers)
	if servers == nil {
		// An empty array, not null, keeps strict client parsers happy.
		servers = []string{}
	}
	body, err := json.Marshal(struct {
		Resource               string   `json:"resource"`
		AuthorizationServers   []string `json:"authorization_servers"`
		ScopesSupported        []string `json:"scopes_supported"`
		BearerMethodsSupported []string `json:"bearer_methods_supported"`
		ResourceName           string   `json:"resource_name,omitempty"`
	}{doc.Resource, servers, scopes, []string{"header"}, doc.ResourceName})
	if err != nil {
		// Strings and string slices always marshal.
		panic("auth: marshal protected resource metadata: " + err.Error())
	}
	body = append(body, '\n')
	length := strconv.Itoa(len(body))

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "public, max-age=300")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Content-Length", length)
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				_, _ = w.Write(body)
			}
		case http.MethodOptions:
			h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
			// MCP SDKs send MCP-Protocol-Version on discovery, which makes
			// the browser preflight; echoing the requested headers lets any
			// such header through, and nothing here depends on them.
			if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
				h.Set("Access-Control-Allow-Headers", headerNameList(req))
			}
			h.Set("Access-Control-Max-Age", "86400")
			h.Add("Vary", "Access-Control-Request-Headers")
			w.WriteHeader(http.StatusNoContent)
		default:
			h.Set("Allow", "GET, HEAD, OPTIONS")
			writeJSON(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		}
	})
}

// headerNameList keeps only header-name characters, commas and spaces,
// so an echoed request header cannot smuggle anything into the response.
func headerNameList(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == ',' || c == ' ' || c == '-' || c == '_' || c == '.' ||
			'0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' {
			b = append(b, c)
		}
	}
	return string(b)
}
