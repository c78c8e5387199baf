package internalapi

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

const (
	redirect = "http://127.0.0.1:33418/callback"
	resource = "https://gw.example.net/mcp"
)

func newKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

type fixture struct {
	az  testenv.Azurite
	h   *Handler
	key string
	log *bytes.Buffer
}

func start(t *testing.T) *fixture {
	t.Helper()
	az := testenv.StartAzurite(t)
	c := az.Clients(t)
	st := oauthstore.New(c.Blob, oauthstore.DefaultContainer, oauthstore.Options{})
	if err := st.EnsureContainer(t.Context()); err != nil {
		t.Fatal(err)
	}
	key := newKey()
	var logs bytes.Buffer
	h, err := New(Options{Store: st, Key: key, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{az: az, h: h, key: key, log: &logs}
}

type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (f *fixture) do(t *testing.T, method, path, body string, mutate ...func(*http.Request)) response {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	r.Header.Set(HeaderKey, f.key)
	for _, m := range mutate {
		m(r)
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	res := response{status: w.Code, header: w.Header(), raw: w.Body.String()}
	if err := json.Unmarshal(w.Body.Bytes(), &res.body); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, res.raw, err)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s %s: Cache-Control = %q; want no-store", method, path, cc)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type = %q", method, path, ct)
	}
	return res
}

func (r response) str(k string) string {
	s, _ := r.body[k].(string)
	return s
}

func wantError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("got %d %s; want %d error %q", r.status, r.raw, status, code)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func guid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func pkce() (verifier, challenge string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func TestNewRejectsBadKeys(t *testing.T) {
	st := oauthstore.New(nil, "x", oauthstore.Options{})
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	for _, k := range []string{"", "not base64!", short, strings.Repeat("a", 10)} {
		_, err := New(Options{Store: st, Key: k})
		if err == nil {
			t.Errorf("New with key %q succeeded", k)
			continue
		}
		if k != "" && strings.Contains(err.Error(), k) {
			t.Errorf("the error repeats the key: %v", err)
		}
	}
	if _, err := New(Options{Key: newKey()}); err == nil {
		t.Error("New without a store succeeded")
	}
	if _, err := New(Options{Store: st, Key: newKey()}); err != nil {
		t.Errorf("New with a good key: %v", err)
	}
}

// The key check needs no storage: a Store without a client never gets
// called when the key is wrong.
func TestKeyRequired(t *testing.T) {
	st := oauthstore.New(nil, "x", oauthstore.Options{})
	key := newKey()
	h, err := New(Options{Store: st, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{h: h, key: key}
	paths := []struct{ method, path string }{
		{"POST", "/internal/oauth/clients"},
		{"GET", "/internal/oauth/clients/abc"},
		{"POST", "/internal/oauth/codes"},
		{"POST", "/internal/oauth/token/authorization_code"},
		{"POST", "/internal/oauth/token/refresh_token"},
		{"POST", "/internal/oauth/revoke"},
		{"GET", "/internal/oauth/families/abc"},
		{"POST", "/internal/oauth/families/abc/revoke"},
		{"GET", "/internal/oauth/nothing-here"},
	}
	cases := map[string]func(*http.Request){
		"missing":       func(r *http.Request) { r.Header.Del(HeaderKey) },
		"empty":         func(r *http.Request) { r.Header.Set(HeaderKey, "") },
		"wrong":         func(r *http.Request) { r.Header.Set(HeaderKey, newKey()) },
		"prefix":        func(r *http.Request) { r.Header.Set(HeaderKey, key[:20]) },
		"with suffix":   func(r *http.Request) { r.Header.Set(HeaderKey, key+"x") },
		"case changed":  func(r *http.Request) { r.Header.Set(HeaderKey, strings.ToUpper(key)) },
		"twice":         func(r *http.Request) { r.Header.Add(HeaderKey, key) },
		"in query only": func(r *http.Request) { r.Header.Del(HeaderKey); r.URL.RawQuery = HeaderKey + "=" + key },
	}
	var bodies []string
	for _, p := range paths {
		for name, mutate := range cases {
			res := f.do(t, p.method, p.path, "", mutate)
			if res.status != http.StatusUnauthorized || res.str("error") != "unauthorized" {
				t.Errorf("%s %s with %s key = %d %s; want 401", p.method, p.path, name, res.status, res.raw)
			}
			bodies = append(bodies, res.raw)
		}
	}
	for _, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("401 bodies differ (%q vs %q): they must not reveal why", b, bodies[0])
		}
	}
	// The right key passes the check: an unknown path is then a 404.
	res := f.do(t, "GET", "/internal/oauth/nothing-here", "")
	wantError(t, res, http.StatusNotFound, "not_found")
}

func TestRouting(t *testing.T) {
	st := oauthstore.New(nil, "x", oauthstore.Options{})
	key := newKey()
	h, _ := New(Options{Store: st, Key: key})
	f := &fixture{h: h, key: key}
	for _, p := range []string{"/internal/oauth/", "/internal/oauth/clients/", "/internal/oauth/clients/a/b",
		"/internal/oauth/families//revoke", "/internal/oauth/token", "/internal/oauth/token/password", "/other"} {
		wantError(t, f.do(t, "POST", p, ""), http.StatusNotFound, "not_found")
	}
	for _, m := range []struct{ method, path, allow string }{
		{"PUT", "/internal/oauth/clients", "GET, POST"},
		{"DELETE", "/internal/oauth/clients/abc", "GET"},
		{"GET", "/internal/oauth/codes", "POST"},
		{"GET", "/internal/oauth/token/authorization_code", "POST"},
		{"PUT", "/internal/oauth/token/refresh_token", "POST"},
		{"GET", "/internal/oauth/revoke", "POST"},
		{"POST", "/internal/oauth/families/abc", "GET"},
		{"GET", "/internal/oauth/families/abc/revoke", "POST"},
	} {
		res := f.do(t, m.method, m.path, "")
		wantError(t, res, http.StatusMethodNotAllowed, "invalid_request")
		if res.header.Get("Allow") != m.allow {
			t.Errorf("%s %s: Allow = %q; want %q", m.method, m.path, res.header.Get("Allow"), m.allow)
		}
	}
}

func TestBodies(t *testing.T) {
	st := oauthstore.New(nil, "x", oauthstore.Options{})
	key := newKey()
	h, _ := New(Options{Store: st, Key: key})
	f := &fixture{h: h, key: key}
	posts := map[string]string{
		"/internal/oauth/clients":                  "invalid_client_metadata",
		"/internal/oauth/codes":                    "invalid_request",
		"/internal/oauth/token/authorization_code": "invalid_request",
		"/internal/oauth/token/refresh_token":      "invalid_request",
		"/internal/oauth/revoke":                   "invalid_request",
	}
	huge := `{"x":"` + strings.Repeat("a", MaxBody) + `"}`
	for path, code := range posts {
		for _, body := range []string{"{", "[]", "null", `"x"`, "{} {}", `{"a":1}x`, "not json", " "} {
			wantError(t, f.do(t, "POST", path, body), http.StatusBadRequest, code)
		}
		wantError(t, f.do(t, "POST", path, ""), http.StatusBadRequest, code)
		wantError(t, f.do(t, "POST", path, huge), http.StatusRequestEntityTooLarge, "invalid_request")
		// Without Content-Length (chunked) the limit holds too.
		wantError(t, f.do(t, "POST", path, huge, func(r *http.Request) {
			r.ContentLength = -1
			r.Body = io.NopCloser(strings.NewReader(huge))
		}), http.StatusRequestEntityTooLarge, "invalid_request")
		wantError(t, f.do(t, "POST", path, "{}", func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") }),
			http.StatusUnsupportedMediaType, "invalid_request")
	}
	res := f.do(t, "POST", "/internal/oauth/clients", `{"redirect_uris":"https://a.example/cb"}`)
	wantError(t, res, http.StatusBadRequest, "invalid_client_metadata")
	if !strings.Contains(res.str("error_description"), "redirect_uris must be an array of strings") {
		t.Errorf("type error description = %q", res.str("error_description"))
	}
	res = f.do(t, "POST", "/internal/oauth/codes", `{"tid":5}`)
	if !strings.Contains(res.str("error_description"), "tid must be a string") {
		t.Errorf("type error description = %q", res.str("error_description"))
	}
	wantError(t, f.do(t, "POST", "/internal/oauth/revoke", `{}`), http.StatusBadRequest, "invalid_request")
	wantError(t, f.do(t, "POST", "/internal/oauth/families/abc/revoke", `[`), http.StatusBadRequest, "invalid_request")
}

func TestClients(t *testing.T) {
	f := start(t)
	res := f.do(t, "POST", "/internal/oauth/clients", mustJSON(map[string]any{
		"redirect_uris":              []string{redirect, "https://app.example.com/cb"},
		"client_name":                "VS Code",
		"client_uri":                 "https://code.visualstudio.com",
		"token_endpoint_auth_method": "client_secret_basic",
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"scope":                      "ignored",
		"software_id":                "ignored",
	}))
	if res.status != http.StatusCreated {
		t.Fatalf("register = %d %s", res.status, res.raw)
	}
	id := res.str("client_id")
	if len(id) < 22 || res.str("token_endpoint_auth_method") != "none" || res.str("client_name") != "VS Code" ||
		res.body["client_id_issued_at"].(float64) < 1e9 {
		t.Errorf("registration = %s", res.raw)
	}
	if _, ok := res.body["client_secret"]; ok {
		t.Error("a public client got a secret")
	}

	got := f.do(t, "GET", "/internal/oauth/clients/"+id, "")
	if got.status != http.StatusOK || got.str("client_id") != id || len(got.body["redirect_uris"].([]any)) != 2 {
		t.Errorf("get = %d %s", got.status, got.raw)
	}
	wantError(t, f.do(t, "GET", "/internal/oauth/clients/unknown", ""), http.StatusNotFound, "invalid_client")
	wantError(t, f.do(t, "GET", "/internal/oauth/clients/a.b", ""), http.StatusNotFound, "invalid_client")

	for body, code := range map[string]string{
		`{"redirect_uris":["http://evil.example/cb"]}`: "invalid_redirect_uri",
		`{"redirect_uris":["https://a.example/cb#x"]}`: "invalid_redirect_uri",
		`{}`: "invalid_redirect_uri",
		`{"redirect_uris":["https://a.example/cb"],"client_uri":"javascript:x"}`: "invalid_client_metadata",
		`{"redirect_uris":["https://a.example/cb"],"grant_types":["implicit"]}`:  "invalid_client_metadata",
	} {
		res := f.do(t, "POST", "/internal/oauth/clients", body)
		wantError(t, res, http.StatusBadRequest, code)
		if res.str("error_description") == "" {
			t.Errorf("%s: no error_description", body)
		}
	}
}

// register creates a client and returns its id.
func (f *fixture) register(t *testing.T) string {
	t.Helper()
	res := f.do(t, "POST", "/internal/oauth/clients", `{"redirect_uris":["`+redirect+`"],"client_name":"t"}`)
	if res.status != http.StatusCreated {
		t.Fatalf("register = %d %s", res.status, res.raw)
	}
	return res.str("client_id")
}

// code creates a code and returns it with its verifier.
func (f *fixture) code(t *testing.T, clientID, tid, oid string) (code, verifier string) {
	t.Helper()
	verifier, challenge := pkce()
	res := f.do(t, "POST", "/internal/oauth/codes", mustJSON(map[string]string{
		"client_id": clientID, "redirect_uri": "http://127.0.0.1:50000/callback",
		"code_challenge": challenge, "code_challenge_method": "S256",
		"resource": resource, "scope": "mcp.tools", "tid": tid, "oid": oid,
		"name": "Ada", "preferred_username": "ada@example.com",
	}))
	if res.status != http.StatusCreated || res.body["expires_in"].(float64) != 300 || len(res.str("code")) != 43 {
		t.Fatalf("create code = %d %s", res.status, res.raw)
	}
	return res.str("code"), verifier
}

func TestTokenFlow(t *testing.T) {
	f := start(t)
	clientID := f.register(t)
	tid, oid := guid(), guid()

	// A bad grant is the policy's bug: 400 invalid_request.
	for _, body := range []string{
		`{"client_id":"` + clientID + `","redirect_uri":"https://evil.example/cb","code_challenge":"` + strings.Repeat("a", 43) + `","resource":"r","tid":"` + tid + `","oid":"` + oid + `"}`,
		`{"client_id":"` + clientID + `","redirect_uri":"` + redirect + `","code_challenge":"short","resource":"r","tid":"` + tid + `","oid":"` + oid + `"}`,
		`{"client_id":"` + clientID + `","redirect_uri":"` + redirect + `","code_challenge":"` + strings.Repeat("a", 43) + `","code_challenge_method":"plain","resource":"r","tid":"` + tid + `","oid":"` + oid + `"}`,
		`{"client_id":"nope","redirect_uri":"` + redirect + `","code_challenge":"` + strings.Repeat("a", 43) + `","resource":"r","tid":"` + tid + `","oid":"` + oid + `"}`,
	} {
		wantError(t, f.do(t, "POST", "/internal/oauth/codes", body), http.StatusBadRequest, "invalid_request")
	}

	code, verifier := f.code(t, clientID, tid, oid)
	redeem := map[string]string{"code": code, "client_id": clientID, "redirect_uri": "http://127.0.0.1:50000/callback",
		"resource": resource, "code_verifier": verifier}
	res := f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(redeem))
	if res.status != http.StatusOK {
		t.Fatalf("redeem = %d %s", res.status, res.raw)
	}
	want := map[string]string{"sub": tid + ":" + oid, "tid": tid, "oid": oid, "name": "Ada",
		"preferred_username": "ada@example.com", "client_id": clientID, "scope": "mcp.tools", "resource": resource}
	for k, v := range want {
		if res.str(k) != v {
			t.Errorf("redeem %s = %q; want %q", k, res.str(k), v)
		}
	}
	if len(res.str("refresh_token")) != 43 || res.str("fid") == "" || res.body["refresh_expires_in"].(float64) != 30*24*3600 {
		t.Errorf("redeem = %s", res.raw)
	}
	fid, a := res.str("fid"), res.str("refresh_token")

	// Replay: invalid_grant, and the family is revoked.
	replay := f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(redeem))
	wantError(t, replay, http.StatusBadRequest, "invalid_grant")
	if strings.Contains(replay.raw, code) {
		t.Error("an error repeats the code")
	}
	if st := f.do(t, "GET", "/internal/oauth/families/"+fid, ""); st.str("status") != "revoked" || st.str("fid") != fid {
		t.Errorf("family after replay = %s", st.raw)
	}
	wantError(t, f.do(t, "POST", "/internal/oauth/token/refresh_token", mustJSON(map[string]string{"refresh_token": a, "client_id": clientID})),
		http.StatusBadRequest, "invalid_grant")

	// A fresh sign-in, then rotation and reuse.
	code, verifier = f.code(t, clientID, tid, oid)
	redeem["code"], redeem["code_verifier"] = code, verifier
	redeem["resource"] = resource + "/sse"
	wantError(t, f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(redeem)), http.StatusBadRequest, "invalid_target")
	code, verifier = f.code(t, clientID, tid, oid)
	redeem["code"], redeem["code_verifier"], redeem["resource"] = code, verifier, ""
	res = f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(redeem))
	if res.status != http.StatusOK {
		t.Fatalf("redeem = %d %s", res.status, res.raw)
	}
	fid, a = res.str("fid"), res.str("refresh_token")
	refresh := func(token, client string) response {
		return f.do(t, "POST", "/internal/oauth/token/refresh_token", mustJSON(map[string]string{"refresh_token": token, "client_id": client}))
	}
	b := refresh(a, clientID)
	if b.status != http.StatusOK || b.str("fid") != fid || b.str("sub") != tid+":"+oid || b.str("refresh_token") == a {
		t.Fatalf("rotate = %d %s", b.status, b.raw)
	}
	wantError(t, refresh(b.str("refresh_token"), "other-client"), http.StatusBadRequest, "invalid_grant")
	wantError(t, refresh("", clientID), http.StatusBadRequest, "invalid_request")
	c := refresh(b.str("refresh_token"), clientID)
	if c.status != http.StatusOK {
		t.Fatalf("rotate B = %d %s", c.status, c.raw)
	}
	wantError(t, refresh(a, clientID), http.StatusBadRequest, "invalid_grant") // reuse
	if st := f.do(t, "GET", "/internal/oauth/families/"+fid, ""); st.str("status") != "revoked" {
		t.Errorf("family after reuse = %s", st.raw)
	}
	wantError(t, refresh(c.str("refresh_token"), clientID), http.StatusBadRequest, "invalid_grant")

	// Wrong verifier burns a code.
	code, _ = f.code(t, clientID, tid, oid)
	redeem["code"], redeem["code_verifier"] = code, strings.Repeat("x", 43)
	wantError(t, f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(redeem)), http.StatusBadRequest, "invalid_grant")
	wantError(t, f.do(t, "POST", "/internal/oauth/token/authorization_code", `{"client_id":"x"}`), http.StatusBadRequest, "invalid_request")
}

func TestRevokeEndpoints(t *testing.T) {
	f := start(t)
	clientID := f.register(t)
	code, verifier := f.code(t, clientID, guid(), guid())
	res := f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(map[string]string{
		"code": code, "client_id": clientID, "redirect_uri": "http://127.0.0.1:50000/callback", "code_verifier": verifier}))
	if res.status != http.StatusOK {
		t.Fatalf("redeem = %d %s", res.status, res.raw)
	}
	fid, token := res.str("fid"), res.str("refresh_token")

	if st := f.do(t, "GET", "/internal/oauth/families/"+fid, ""); st.status != http.StatusOK || st.str("status") != "active" {
		t.Fatalf("family = %d %s", st.status, st.raw)
	}
	for _, tok := range []string{"unknown-token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln", strings.Repeat("z", 2000)} {
		if r := f.do(t, "POST", "/internal/oauth/revoke", mustJSON(map[string]string{"token": tok, "token_type_hint": "access_token"})); r.status != http.StatusOK || r.raw != "{}\n" {
			t.Errorf("revoke unknown = %d %q; want 200 {}", r.status, r.raw)
		}
	}
	if st := f.do(t, "GET", "/internal/oauth/families/"+fid, ""); st.str("status") != "active" {
		t.Fatal("revoking unknown tokens touched the family")
	}
	if r := f.do(t, "POST", "/internal/oauth/revoke", mustJSON(map[string]string{"token": token})); r.status != http.StatusOK {
		t.Fatalf("revoke = %d %s", r.status, r.raw)
	}
	if st := f.do(t, "GET", "/internal/oauth/families/"+fid, ""); st.str("status") != "revoked" {
		t.Errorf("family after revoke = %s", st.raw)
	}

	// By family id, with an empty body, {} or no Content-Type at all.
	code, verifier = f.code(t, clientID, guid(), guid())
	res = f.do(t, "POST", "/internal/oauth/token/authorization_code", mustJSON(map[string]string{
		"code": code, "client_id": clientID, "redirect_uri": "http://127.0.0.1:50000/callback", "code_verifier": verifier}))
	fid = res.str("fid")
	for _, body := range []string{"", "{}"} {
		r := f.do(t, "POST", "/internal/oauth/families/"+fid+"/revoke", body)
		if r.status != http.StatusOK || r.str("status") != "revoked" || r.str("fid") != fid {
			t.Errorf("revoke family = %d %s", r.status, r.raw)
		}
	}
	if st := f.do(t, "GET", "/internal/oauth/families/"+fid, ""); st.str("status") != "revoked" {
		t.Errorf("family after revoke = %s", st.raw)
	}
	if r := f.do(t, "POST", "/internal/oauth/families/unknownfamily/revoke", ""); r.status != http.StatusOK {
		t.Errorf("revoke unknown family = %d %s", r.status, r.raw)
	}
	if st := f.do(t, "GET", "/internal/oauth/families/unknownfamily", ""); st.str("status") != "unknown" {
		t.Errorf("unknown family = %s", st.raw)
	}
	if st := f.do(t, "GET", "/internal/oauth/families/a.b", ""); st.str("status") != "unknown" {
		t.Errorf("malformed family = %s", st.raw)
	}
}

func TestStorageUnavailable(t *testing.T) {
	f := start(t)
	clientID := f.register(t)
	f.az.Stop()
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/internal/oauth/clients", `{"redirect_uris":["https://a.example/cb"]}`},
		{"GET", "/internal/oauth/clients/" + clientID, ""},
		{"POST", "/internal/oauth/token/refresh_token", `{"refresh_token":"abc","client_id":"x"}`},
		{"POST", "/internal/oauth/revoke", `{"token":"abc"}`},
		{"GET", "/internal/oauth/families/abc", ""},
	} {
		res := f.do(t, c.method, c.path, c.body)
		wantError(t, res, http.StatusServiceUnavailable, "temporarily_unavailable")
		if res.header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", c.path)
		}
		if strings.Contains(res.raw, "127.0.0.1") || strings.Contains(res.raw, testenv.AzuriteAccountName) {
			t.Errorf("%s: the 503 reveals storage details: %s", c.path, res.raw)
		}
	}
	if !strings.Contains(f.log.String(), "internal OAuth API request failed") {
		t.Error("storage failures were not logged")
	}
}
