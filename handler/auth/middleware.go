package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// DefaultScope is the one scope of the MCP API (FRONTDOOR, "Public URLs and
// resource identifiers").
const DefaultScope = "mcp.tools"

// AuthenticatorOptions configures Authenticator. Exactly one of Validator and
// LocalUser is set.
type AuthenticatorOptions struct {
	// Validator checks bearer tokens. Nil only when auth is off.
	Validator *Validator

	// LocalUser, when auth is off, is the identity of every request and no
	// token is looked at. Its tid and oid must be GUIDs, as a token's would be.
	LocalUser *Identity

	// Scope is advertised in the 401's scope= parameter; empty means DefaultScope.
	Scope string

	// MetadataURL returns the absolute URL of the RFC 9728 document of the
	// endpoint r was sent to. Each MCP endpoint names its own document, and
	// only the caller knows its public base URL, so the caller decides.
	// Required with a Validator.
	MetadataURL func(r *http.Request) string

	// Check, if set, runs after a token has validated and before the request
	// proceeds. It is where the refusal of revoked families (DESIGN section
	// 5) plugs in, so that refusal gets the same 401 as any bad token: a
	// *TokenError from Check is answered 401 invalid_token with its Reason;
	// any other error 503, because an unknown revocation status must not
	// let a possibly revoked token through.
	Check func(ctx context.Context, id Identity) error
}

// Authenticator returns middleware that lets a request through only with a
// valid bearer token in the Authorization header and puts the token's
// Identity in the request context (see IdentityFrom). Requests without one
// get the 401 challenge MCP clients use to discover the authorization server
// (MCP authorization spec, RFC 9728 section 5.1).
func Authenticator(opts AuthenticatorOptions) (func(http.Handler) http.Handler, error) {
	switch {
	case opts.Validator == nil && opts.LocalUser == nil:
		return nil, errors.New("auth: authenticator needs a Validator, or a LocalUser when auth is off")
	case opts.Validator != nil && opts.LocalUser != nil:
		return nil, errors.New("auth: authenticator takes a Validator or a LocalUser, not both")
	}
	if opts.LocalUser != nil {
		local := *opts.LocalUser
		if err := local.checkNamespace(); err != nil {
			return nil, fmt.Errorf("auth: local user: %w", err)
		}
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), local)))
			})
		}, nil
	}
	if opts.MetadataURL == nil {
		return nil, errors.New("auth: authenticator needs MetadataURL: the 401 must name the endpoint's RFC 9728 document")
	}
	scope := opts.Scope
	if scope == "" {
		scope = DefaultScope
	}
	if !isScopeList(scope) {
		return nil, fmt.Errorf("auth: scope %q is not a valid OAuth scope list", scope)
	}
	a := &authenticator{
		validator:   opts.Validator,
		scope:       scope,
		metadataURL: opts.MetadataURL,
		check:       opts.Check,
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.serve(w, r, next)
		})
	}, nil
}

type authenticator struct {
	validator   *Validator
	scope       string
	metadataURL func(r *http.Request) string
	check       func(ctx context.Context, id Identity) error
}

func (a *authenticator) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	// RFC 6750 section 2.3 tokens end up in proxy logs and browser history;
	// refuse them outright so clients learn to stop, and never look at the value.
	if r.URL.Query().Has("access_token") {
		a.refuse(w, r, http.StatusBadRequest, "invalid_request",
			"access tokens are accepted only in the Authorization header")
		return
	}
	values := r.Header.Values("Authorization")
	if len(values) > 1 {
		// Two headers would let a proxy and the handler disagree on who the
		// caller is.
		a.refuse(w, r, http.StatusBadRequest, "invalid_request",
			"send exactly one Authorization header")
		return
	}
	var token string
	if len(values) == 1 {
		token = bearerToken(values[0])
	}
	if token == "" {
		// RFC 6750 section 3.1: a request without credentials gets no error code.
		a.refuse(w, r, http.StatusUnauthorized, "", "")
		return
	}
	id, err := a.validator.Validate(token)
	if err == nil && a.check != nil {
		err = a.check(r.Context(), id)
	}
	if err != nil {
		var te *TokenError
		if !errors.As(err, &te) {
			writeJSON(w, http.StatusServiceUnavailable, "server_error",
				"the token's status could not be checked; try again shortly")
			return
		}
		a.refuse(w, r, http.StatusUnauthorized, "invalid_token", te.Reason)
		return
	}
	next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
}

// refuse answers with the Bearer challenge. An empty code means "no token was
// sent", which gets neither error parameter in the header.
func (a *authenticator) refuse(w http.ResponseWriter, r *http.Request, status int, code, desc string) {
	w.Header().Set("WWW-Authenticate", challenge(a.metadataURL(r), a.scope, code, desc))
	if code == "" {
		writeJSON(w, status, "unauthorized", "a bearer token is required")
		return
	}
	writeJSON(w, status, code, desc)
}

// challenge builds the WWW-Authenticate value, parameters in the order
// FRONTDOOR section 8 gives them.
func challenge(metadataURL, scope, code, desc string) string {
	var params []string
	if metadataURL != "" {
		params = append(params, `resource_metadata="`+quotable(metadataURL)+`"`)
	}
	params = append(params, `scope="`+quotable(scope)+`"`)
	if code != "" {
		params = append(params, `error="`+quotable(code)+`"`)
		if desc != "" {
			params = append(params, `error_description="`+quotable(desc)+`"`)
		}
	}
	return "Bearer " + strings.Join(params, ", ")
}

// quotable drops the bytes RFC 6750 section 3 does not allow inside its
// quoted strings (controls, '"', '\' and non-ASCII), so no value can break
// out of the header syntax.
func quotable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return -1
		}
		return r
	}, s)
}

// bearerToken returns the token of a "Bearer <token>" header value, or ""
// for any other scheme. The scheme is case-insensitive (RFC 7235 section 2.1).
func bearerToken(h string) string {
	scheme, rest, _ := strings.Cut(h, " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimLeft(rest, " ")
}

// isScopeList checks RFC 6749 section 3.3 scope syntax, which also keeps the
// value safe inside the challenge's quoted string.
func isScopeList(s string) bool {
	for tok := range strings.SplitSeq(s, " ") {
		if tok == "" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
				return false
			}
		}
	}
	return true
}

// writeJSON writes the small error body of every refusal.
func writeJSON(w http.ResponseWriter, status int, code, desc string) {
	body, err := json.Marshal(struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{code, desc})
	if err != nil {
		// Two strings always marshal; fall back to a fixed body regardless.
		body = []byte(`{"error":"server_error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
