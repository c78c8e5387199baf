// Package internalapi is the HTTP API through which API Management's OAuth
// policies (send-request) reach the durable OAuth state in
// [oauthstore.Store] (FRONTDOOR.md, "Durable state"). APIM runs the
// protocol and signs access tokens; this API never mints one.
//
// # Authentication
//
// Every request must carry the header
//
//	x-internal-key: <InternalKey>
//
// equal to the handler's MCP_INTERNAL_KEY (the InternalKey named value, 32+
// random bytes in base64, sent as is), on top of the Functions host's
// function key. A missing, repeated or wrong key gets 401
// {"error":"unauthorized",...}; the answer is the same in all three cases.
// The key is checked before anything else, so without it every path is 401.
//
// # Conventions
//
// Request bodies are JSON objects (Content-Type application/json or none),
// at most 16 KiB (413 beyond that); unknown fields are ignored. Responses
// are JSON with Cache-Control: no-store. Errors have the OAuth shape
//
//	{"error":"<code>","error_description":"<sentence>"}
//
// and, for the token and registration endpoints, a status and code the
// policy can pass through to the client unchanged: 400 invalid_request,
// invalid_grant, invalid_target (RFC 8707: resource differs from the
// grant's), invalid_redirect_uri, invalid_client_metadata. Storage trouble
// (unreachable, throttled, or too much contention on one credential) is 503
// {"error":"temporarily_unavailable"} with Retry-After: 1, which the policy
// answers as 503 too; never a 500 with internals. Malformed JSON is 400
// invalid_request (invalid_client_metadata on POST /clients). A wrong method
// is 405 with Allow, an unknown path 404 {"error":"not_found"}.
//
// Descriptions never contain a code or token. Codes and refresh tokens
// appear in plain text only in the 2xx responses that issue them.
//
// # Endpoints
//
// POST /internal/oauth/clients — register a client (RFC 7591). The body is
// the client's registration request, forwarded unchanged:
//
//	{"redirect_uris":["https://app/cb"],"client_name":"...","client_uri":"https://...",
//	 "token_endpoint_auth_method":"none","grant_types":[...],"response_types":["code"]}
//
// 201 with the registration, which is also the /register response:
//
//	{"client_id":"<22 chars>","client_id_issued_at":1767225600,
//	 "redirect_uris":[...],"client_name":"...","client_uri":"...",
//	 "token_endpoint_auth_method":"none",
//	 "grant_types":["authorization_code","refresh_token"],"response_types":["code"]}
//
// 400 invalid_redirect_uri or invalid_client_metadata with a description.
// An unsupported token_endpoint_auth_method comes back as "none".
//
// GET /internal/oauth/clients/{client_id}, or GET
// /internal/oauth/clients?client_id=<client_id> for any client_id including
// a Client ID Metadata Document URL (whose slashes a path cannot carry
// through every proxy) — 200 with the registration (the same shape as
// above; for a document URL, what the document declares, fetched and
// validated) or 404 {"error":"invalid_client","error_description":"<why>"}
// for an unknown or unusable client (the policy shows an error page and
// never redirects), 503 when a document cannot be fetched right now.
//
// POST /internal/oauth/codes — store a grant after /oauth-callback:
//
//	{"client_id":"...","redirect_uri":"<as sent to /authorize>",
//	 "code_challenge":"<43-128 base64url>","code_challenge_method":"S256",
//	 "resource":"https://<gw>/mcp","scope":"mcp.tools",
//	 "tid":"<guid>","oid":"<guid>","sub":"<tid>:<oid> (optional)",
//	 "name":"...","preferred_username":"..."}
//
// 201 {"code":"<43 chars>","expires_in":300}. The client must be registered
// and redirect_uri one of its own (loopback port excepted); anything invalid
// is 400 invalid_request.
//
// POST /internal/oauth/token/authorization_code — redeem a code:
//
//	{"code":"...","client_id":"...","redirect_uri":"...",
//	 "resource":"<optional>","code_verifier":"..."}
//
// 200 with the grant to sign the access token from (see below). 400
// invalid_grant (unknown, expired or used code, other client, other
// redirect_uri, wrong verifier), invalid_request (a parameter missing),
// invalid_target (resource differs). Any failure burns the code; a second
// redeem of a code revokes the family the first one created.
//
// POST /internal/oauth/token/refresh_token — rotate a refresh token:
//
//	{"refresh_token":"...","client_id":"...","resource":"<optional>"}
//
// 200 with the same shape, carrying a new refresh token; 400 invalid_grant
// (unknown, expired, other client, revoked family, reuse: the family is then
// revoked), invalid_request, invalid_target.
//
// Both token endpoints answer 200 with
//
//	{"refresh_token":"<43 chars>","refresh_expires_in":2592000,"fid":"<family id>",
//	 "sub":"<tid>:<oid>","tid":"...","oid":"...","name":"...","preferred_username":"...",
//	 "client_id":"...","scope":"mcp.tools","resource":"https://<gw>/mcp"}
//
// from which the policy signs the access token: aud = resource, and sub,
// tid, oid, name, preferred_username, client_id, scope, fid as given.
//
// POST /internal/oauth/revoke — RFC 7009 for refresh tokens:
// {"token":"...","token_type_hint":"<ignored>"} → 200 {} whether or not the
// token was known; its family is revoked if it was a refresh token. A
// missing token is 400 invalid_request. Access tokens: the policy reads
// their fid and calls the next endpoint.
//
// POST /internal/oauth/families/{fid}/revoke — revoke a family (body empty
// or {}) → 200 {"fid":"...","status":"revoked"}, also for an unknown fid.
//
// GET /internal/oauth/families/{fid} → 200 {"fid":"...","status":"active"},
// "revoked" or "unknown". Only "active" may be honoured.
package internalapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"strings"

	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Prefix is the path every endpoint lives under; mount the handler there.
const Prefix = "/internal/oauth/"

// HeaderKey carries the internal key.
const HeaderKey = "x-internal-key"

// MaxBody is the largest request body, in bytes (FRONTDOOR section 2).
const MaxBody = 16 << 10

// MinKeyBytes is the least entropy accepted for the internal key.
const MinKeyBytes = 32

// Options configures the API.
type Options struct {
	// Store holds the OAuth state. Required.
	Store *oauthstore.Store
	// Key is the internal key as configured (MCP_INTERNAL_KEY): base64 of
	// at least MinKeyBytes random bytes. Callers send this string as is.
	Key string
	// Logger receives server-side failures; nothing is logged if nil.
	// Bodies, keys, codes and tokens are never logged.
	Logger *slog.Logger
}

// Handler serves the internal API.
type Handler struct {
	store   *oauthstore.Store
	keyHash [sha256.Size]byte
	log     *slog.Logger
}

// New returns the API, or an error if the key is missing or too weak.
func New(o Options) (*Handler, error) {
	if o.Store == nil {
		return nil, errors.New("internalapi: a Store is required")
	}
	if err := CheckKey(o.Key); err != nil {
		return nil, err
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{store: o.Store, keyHash: sha256.Sum256([]byte(strings.TrimSpace(o.Key))), log: o.Logger}, nil
}

// CheckKey reports whether key is acceptable as the internal key: base64
// (standard alphabet, as the key generator writes it) of at least
// MinKeyBytes bytes. The message never repeats the key.
func CheckKey(key string) error {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(key))
	if err != nil || len(b) < MinKeyBytes {
		return fmt.Errorf("internalapi: the internal key must be at least %d random bytes in base64", MinKeyBytes)
	}
	return nil
}

// authorized compares the presented key with the configured one in
// constant time. Both sides are hashed first so that neither the length
// nor a prefix of the key can be learnt from timing.
func (h *Handler) authorized(r *http.Request) bool {
	vals := r.Header.Values(HeaderKey)
	if len(vals) != 1 {
		return false
	}
	got := sha256.Sum256([]byte(vals[0]))
	return subtle.ConstantTimeCompare(got[:], h.keyHash[:]) == 1
}

// ServeHTTP authenticates the caller, then routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.authorized(r) {
		writeError(w, http.StatusUnauthorized, "unauthorized", "missing or invalid internal key")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		h.notFound(w)
		return
	}
	parts := strings.Split(rest, "/")
	switch {
	case rest == "clients" && r.Method == http.MethodGet:
		h.getClient(w, r, r.URL.Query().Get("client_id"))
	case rest == "clients":
		h.method(w, r, http.MethodPost, h.registerClient, http.MethodGet)
	case len(parts) == 2 && parts[0] == "clients" && parts[1] != "":
		h.method(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request) { h.getClient(w, r, parts[1]) })
	case rest == "codes":
		h.method(w, r, http.MethodPost, h.createCode)
	case rest == "token/authorization_code":
		h.method(w, r, http.MethodPost, h.redeemCode)
	case rest == "token/refresh_token":
		h.method(w, r, http.MethodPost, h.rotate)
	case rest == "revoke":
		h.method(w, r, http.MethodPost, h.revoke)
	case len(parts) == 2 && parts[0] == "families" && parts[1] != "":
		h.method(w, r, http.MethodGet, func(w http.ResponseWriter, r *http.Request) { h.familyStatus(w, r, parts[1]) })
	case len(parts) == 3 && parts[0] == "families" && parts[1] != "" && parts[2] == "revoke":
		h.method(w, r, http.MethodPost, func(w http.ResponseWriter, r *http.Request) { h.revokeFamily(w, r, parts[1]) })
	default:
		h.notFound(w)
	}
}

func (h *Handler) notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "not_found", "no such internal endpoint")
}

// method runs next for requests with method m, and answers others 405
// naming m and the path's other methods (served elsewhere) in Allow.
func (h *Handler) method(w http.ResponseWriter, r *http.Request, m string, next http.HandlerFunc, others ...string) {
	if r.Method != m {
		allowed := strings.Join(append(others, m), ", ")
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "use "+allowed)
		return
	}
	next(w, r)
}

// clientJSON is a registration as RFC 7591 section 3.2.1 returns it.
type clientJSON struct {
	ClientID                string   `json:"client_id"`
	ClientIDIssuedAt        int64    `json:"client_id_issued_at"`
	RedirectURIs            []string `json:"redirect_uris"`
	ClientName              string   `json:"client_name,omitempty"`
	ClientURI               string   `json:"client_uri,omitempty"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
}

func toClientJSON(c oauthstore.Client) clientJSON {
	return clientJSON{
		ClientID:                c.ClientID,
		ClientIDIssuedAt:        c.Created.Unix(),
		RedirectURIs:            c.RedirectURIs,
		ClientName:              c.ClientName,
		ClientURI:               c.ClientURI,
		TokenEndpointAuthMethod: c.TokenEndpointAuthMethod,
		GrantTypes:              c.GrantTypes,
		ResponseTypes:           c.ResponseTypes,
	}
}

func (h *Handler) registerClient(w http.ResponseWriter, r *http.Request) {
	var m oauthstore.ClientMetadata
	// The body is the client's own registration request, so a malformed
	// one is the client's metadata error (RFC 7591 section 3.2.2).
	if !decode(w, r, &m, oauthstore.CodeInvalidClientMetadata) {
		return
	}
	c, err := h.store.RegisterClient(r.Context(), m)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, toClientJSON(c))
}

func (h *Handler) getClient(w http.ResponseWriter, r *http.Request, id string) {
	c, err := h.store.GetClient(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		msg := "the client is not registered"
		var se *storage.Error
		if oauthstore.IsDocumentClientID(id) && errors.As(err, &se) {
			msg = se.Msg // why the document is unusable, for the error page
		}
		writeError(w, http.StatusNotFound, "invalid_client", msg)
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toClientJSON(c))
}

type codeRequest struct {
	ClientID            string `json:"client_id"`
	RedirectURI         string `json:"redirect_uri"`
	CodeChallenge       string `json:"code_challenge"`
	CodeChallengeMethod string `json:"code_challenge_method"`
	Resource            string `json:"resource"`
	Scope               string `json:"scope"`
	Sub                 string `json:"sub"`
	TID                 string `json:"tid"`
	OID                 string `json:"oid"`
	Name                string `json:"name"`
	PreferredUsername   string `json:"preferred_username"`
}

func (h *Handler) createCode(w http.ResponseWriter, r *http.Request) {
	var req codeRequest
	if !decode(w, r, &req, oauthstore.CodeInvalidRequest) {
		return
	}
	code, err := h.store.CreateCode(r.Context(), oauthstore.Grant{
		ClientID:            req.ClientID,
		RedirectURI:         req.RedirectURI,
		CodeChallenge:       req.CodeChallenge,
		CodeChallengeMethod: req.CodeChallengeMethod,
		Resource:            req.Resource,
		Scope:               req.Scope,
		User: oauthstore.User{
			Subject: req.Sub, TenantID: req.TID, ObjectID: req.OID,
			Name: req.Name, PreferredUsername: req.PreferredUsername,
		},
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		Code      string `json:"code"`
		ExpiresIn int64  `json:"expires_in"`
	}{code, int64(h.store.CodeTTL().Seconds())})
}

// issuedJSON is what both token endpoints return: the new refresh token and
// the claims of the access token the policy signs beside it.
type issuedJSON struct {
	RefreshToken      string `json:"refresh_token"`
	RefreshExpiresIn  int64  `json:"refresh_expires_in"`
	FamilyID          string `json:"fid"`
	Sub               string `json:"sub"`
	TID               string `json:"tid"`
	OID               string `json:"oid"`
	Name              string `json:"name"`
	PreferredUsername string `json:"preferred_username"`
	ClientID          string `json:"client_id"`
	Scope             string `json:"scope"`
	Resource          string `json:"resource"`
}

func (h *Handler) writeIssued(w http.ResponseWriter, is oauthstore.Issued) {
	writeJSON(w, http.StatusOK, issuedJSON{
		RefreshToken: is.RefreshToken,
		// A token is issued with the full lifetime, so this is exact.
		RefreshExpiresIn:  int64(h.store.RefreshTTL().Seconds()),
		FamilyID:          is.FamilyID,
		Sub:               is.User.Subject,
		TID:               is.User.TenantID,
		OID:               is.User.ObjectID,
		Name:              is.User.Name,
		PreferredUsername: is.User.PreferredUsername,
		ClientID:          is.ClientID,
		Scope:             is.Scope,
		Resource:          is.Resource,
	})
}

func (h *Handler) redeemCode(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Code         string `json:"code"`
		ClientID     string `json:"client_id"`
		RedirectURI  string `json:"redirect_uri"`
		Resource     string `json:"resource"`
		CodeVerifier string `json:"code_verifier"`
	}
	if !decode(w, r, &req, oauthstore.CodeInvalidRequest) {
		return
	}
	is, err := h.store.RedeemCode(r.Context(), oauthstore.RedeemRequest{
		Code: req.Code, ClientID: req.ClientID, RedirectURI: req.RedirectURI,
		Resource: req.Resource, CodeVerifier: req.CodeVerifier,
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeIssued(w, is)
}

func (h *Handler) rotate(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
		ClientID     string `json:"client_id"`
		Resource     string `json:"resource"`
	}
	if !decode(w, r, &req, oauthstore.CodeInvalidRequest) {
		return
	}
	is, err := h.store.Rotate(r.Context(), oauthstore.RotateRequest{
		RefreshToken: req.RefreshToken, ClientID: req.ClientID, Resource: req.Resource,
	})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.writeIssued(w, is)
}

func (h *Handler) revoke(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if !decode(w, r, &req, oauthstore.CodeInvalidRequest) {
		return
	}
	if req.Token == "" {
		writeError(w, http.StatusBadRequest, oauthstore.CodeInvalidRequest, "token is required")
		return
	}
	if err := h.store.RevokeToken(r.Context(), req.Token); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

type familyJSON struct {
	FamilyID string `json:"fid"`
	Status   string `json:"status"`
}

func (h *Handler) familyStatus(w http.ResponseWriter, r *http.Request, fid string) {
	state, err := h.store.FamilyState(r.Context(), fid)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, familyJSON{fid, state})
}

func (h *Handler) revokeFamily(w http.ResponseWriter, r *http.Request, fid string) {
	// The body carries nothing, but it is still read within the limit so
	// that a huge one is refused rather than drained.
	var ignored struct{}
	if !decodeOptional(w, r, &ignored) {
		return
	}
	if err := h.store.RevokeFamily(r.Context(), fid); err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, familyJSON{fid, oauthstore.FamilyRevoked})
}

// fail answers a store error: OAuth errors pass through as 400, storage
// trouble is 503, anything else a bare 500 (and a log line).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthstore.Error
	switch {
	case errors.As(err, &oe):
		writeError(w, http.StatusBadRequest, oe.Code, oe.Description)
	case errors.Is(err, storage.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no such item")
	case errors.Is(err, storage.ErrInvalid), errors.Is(err, storage.ErrTooLarge):
		writeError(w, http.StatusBadRequest, oauthstore.CodeInvalidRequest, err.Error())
	case errors.Is(err, storage.ErrUnavailable), errors.Is(err, storage.ErrConflict),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		h.logFailure(r, slog.LevelWarn, err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "OAuth storage is unavailable; try again shortly")
	default:
		h.logFailure(r, slog.LevelError, err)
		writeError(w, http.StatusInternalServerError, "server_error", "internal error")
	}
}

// logFailure logs the error and, for classified storage errors, the cause
// with its storage details. Messages of this module never contain codes or
// tokens, and the path holds at most a client or family id.
func (h *Handler) logFailure(r *http.Request, level slog.Level, err error) {
	attrs := []slog.Attr{slog.String("path", r.URL.Path), slog.String("err", err.Error())}
	var se *storage.Error
	if errors.As(err, &se) && se.Cause() != nil {
		attrs = append(attrs, slog.String("cause", se.Cause().Error()))
	}
	h.log.LogAttrs(r.Context(), level, "internal OAuth API request failed", attrs...)
}

// decode reads a JSON object of at most MaxBody bytes into v. On failure it
// has answered, with errCode for malformed JSON, and returns false.
func decode(w http.ResponseWriter, r *http.Request, v any, errCode string) bool {
	body, ok := readBody(w, r)
	if !ok {
		return false
	}
	if err := unmarshalObject(body, v); err != nil {
		writeError(w, http.StatusBadRequest, errCode, err.Error())
		return false
	}
	return true
}

// decodeOptional is decode for endpoints whose body may also be empty.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	body, ok := readBody(w, r)
	if !ok {
		return false
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return true
	}
	if err := unmarshalObject(body, v); err != nil {
		writeError(w, http.StatusBadRequest, oauthstore.CodeInvalidRequest, err.Error())
		return false
	}
	return true
}

// readBody reads at most MaxBody bytes of a JSON (or untyped) body. On
// failure it has answered and returns false.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			writeError(w, http.StatusUnsupportedMediaType, oauthstore.CodeInvalidRequest, "send the body as application/json")
			return nil, false
		}
	}
	if r.ContentLength > MaxBody {
		tooLarge(w)
		return nil, false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			tooLarge(w)
			return nil, false
		}
		writeError(w, http.StatusBadRequest, oauthstore.CodeInvalidRequest, "could not read the request body")
		return nil, false
	}
	return body, true
}

// unmarshalObject accepts exactly one JSON object. Its errors say what is
// wrong in general terms; they never echo the body.
func unmarshalObject(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return errors.New("the request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%s must be %s", te.Field, jsonKind(te.Type))
		}
		return errors.New("the request body is not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("the request body must hold exactly one JSON object")
	}
	return nil
}

// jsonKind names a Go type the way the JSON it decodes from looks.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array of " + strings.TrimPrefix(strings.TrimPrefix(jsonKind(t.Elem()), "a "), "an ") + "s"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Bool:
		return "a boolean"
	}
	return "a number"
}

func tooLarge(w http.ResponseWriter) {
	writeError(w, http.StatusRequestEntityTooLarge, oauthstore.CodeInvalidRequest, fmt.Sprintf("the request body is larger than %d bytes", MaxBody))
}

func writeError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}{code, desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only fixed structs of strings and numbers are written here.
		status, body = http.StatusInternalServerError, []byte(`{"error":"server_error"}`)
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Pragma", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
