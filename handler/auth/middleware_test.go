package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
)

const metadataURL = gw + "/.well-known/oauth-protected-resource/mcp"

// echoIdentity answers 200 with the owner and audience it found in the
// context, so tests see both that the request got through and as whom.
func echoIdentity() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := auth.IdentityFrom(r.Context())
		if !ok {
			http.Error(w, "no identity", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(id.Owner() + " " + id.Audience))
	})
}

func newMiddleware(t *testing.T, f fixture, check func(context.Context, auth.Identity) error) http.Handler {
	t.Helper()
	mw, err := auth.Authenticator(auth.AuthenticatorOptions{
		Validator:   f.v,
		Scope:       "mcp.tools",
		MetadataURL: func(*http.Request) string { return metadataURL },
		Check:       check,
	})
	if err != nil {
		t.Fatal(err)
	}
	return mw(echoIdentity())
}

func TestAuthenticator(t *testing.T) {
	f := newFixture(t)
	h := newMiddleware(t, f, nil)
	good := f.token(t, nil)
	expired := f.token(t, func(c *authtest.Claims) { c.ExpiresAt = f.now.Add(-5 * time.Minute) })

	const (
		noToken = `Bearer resource_metadata="` + metadataURL + `", scope="mcp.tools"`
		invalid = noToken + `, error="invalid_token", error_description=`
		badReq  = noToken + `, error="invalid_request", error_description=`
	)
	tests := []struct {
		name      string
		target    string
		auth      []string // Authorization header values
		status    int
		challenge string // exact WWW-Authenticate
		errCode   string // body "error"
		body      string // exact body on success
	}{
		{name: "valid", auth: []string{"Bearer " + good}, status: 200, body: owner + " " + mcp},
		{name: "lower-case scheme", auth: []string{"bearer " + good}, status: 200, body: owner + " " + mcp},
		{name: "upper-case scheme", auth: []string{"BEARER " + good}, status: 200, body: owner + " " + mcp},
		{name: "extra spaces after the scheme", auth: []string{"Bearer   " + good}, status: 200, body: owner + " " + mcp},

		{name: "no Authorization header", status: 401, challenge: noToken, errCode: "unauthorized"},
		{name: "empty Authorization header", auth: []string{""}, status: 401, challenge: noToken, errCode: "unauthorized"},
		{name: "Basic credentials", auth: []string{"Basic dXNlcjpwYXNz"}, status: 401, challenge: noToken, errCode: "unauthorized"},
		{name: "scheme only", auth: []string{"Bearer"}, status: 401, challenge: noToken, errCode: "unauthorized"},
		{name: "scheme and a space", auth: []string{"Bearer "}, status: 401, challenge: noToken, errCode: "unauthorized"},
		{name: "token without a scheme", auth: []string{good}, status: 401, challenge: noToken, errCode: "unauthorized"},
		{name: "scheme prefix only", auth: []string{"Bearerx " + good}, status: 401, challenge: noToken, errCode: "unauthorized"},

		{name: "garbage token", auth: []string{"Bearer abc.def.ghi"}, status: 401, challenge: invalid + `"token is malformed"`, errCode: "invalid_token"},
		{name: "expired token", auth: []string{"Bearer " + expired}, status: 401, challenge: invalid + `"token has expired"`, errCode: "invalid_token"},
		{name: "token with trailing text", auth: []string{"Bearer " + good + " x"}, status: 401, challenge: invalid + `"token is malformed"`, errCode: "invalid_token"},

		{name: "two Authorization headers", auth: []string{"Bearer " + good, "Bearer " + good}, status: 400,
			challenge: badReq + `"send exactly one Authorization header"`, errCode: "invalid_request"},
		{name: "token in the query", target: "/mcp?access_token=" + good, auth: []string{"Bearer " + good}, status: 400,
			challenge: badReq + `"access tokens are accepted only in the Authorization header"`, errCode: "invalid_request"},
		{name: "token only in the query", target: "/mcp?x=1&access_token=" + good, status: 400,
			challenge: badReq + `"access tokens are accepted only in the Authorization header"`, errCode: "invalid_request"},
		{name: "unrelated query", target: "/mcp/message?sessionId=abc", auth: []string{"Bearer " + good}, status: 200, body: owner + " " + mcp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := tt.target
			if target == "" {
				target = "/mcp"
			}
			r := httptest.NewRequest(http.MethodPost, target, strings.NewReader(`{}`))
			for _, v := range tt.auth {
				r.Header.Add("Authorization", v)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)

			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", w.Code, tt.status, w.Body)
			}
			if tt.status == 200 {
				if w.Body.String() != tt.body {
					t.Errorf("body = %q, want %q", w.Body, tt.body)
				}
				return
			}
			if got := w.Header().Get("WWW-Authenticate"); got != tt.challenge {
				t.Errorf("WWW-Authenticate =\n%s\nwant\n%s", got, tt.challenge)
			}
			checkErrorBody(t, w, tt.errCode)
			if strings.Contains(w.Body.String()+w.Header().Get("WWW-Authenticate"), good[:40]) {
				t.Error("response echoes the token")
			}
		})
	}
}

// checkErrorBody checks the JSON error body every refusal carries.
func checkErrorBody(t *testing.T, w *httptest.ResponseRecorder, code string) {
	t.Helper()
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	if body.Error != code || body.Description == "" {
		t.Errorf("body = %+v, want error %q with a description", body, code)
	}
}

// Each endpoint names its own metadata document, as the caller decides.
func TestAuthenticatorMetadataURLPerRequest(t *testing.T) {
	f := newFixture(t)
	mw, err := auth.Authenticator(auth.AuthenticatorOptions{
		Validator: f.v,
		MetadataURL: func(r *http.Request) string {
			return gw + "/.well-known/oauth-protected-resource" + r.URL.Path
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	mw(echoIdentity()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/mcp/sse", nil))
	want := `Bearer resource_metadata="` + gw + `/.well-known/oauth-protected-resource/mcp/sse", scope="mcp.tools"`
	if got := w.Header().Get("WWW-Authenticate"); got != want {
		t.Errorf("WWW-Authenticate = %s, want %s", got, want)
	}
}

func TestAuthenticatorCheck(t *testing.T) {
	f := newFixture(t)
	good := f.token(t, nil)
	revoked := &auth.TokenError{Reason: "token has been revoked"}
	tests := []struct {
		name    string
		err     error
		status  int
		errCode string
	}{
		{"allowed", nil, 200, ""},
		{"revoked family", revoked, 401, "invalid_token"},
		{"wrapped revoked family", errors.Join(errors.New("family"), revoked), 401, "invalid_token"},
		{"status unknown", errors.New("blob storage unreachable"), 503, "server_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen auth.Identity
			h := newMiddleware(t, f, func(ctx context.Context, id auth.Identity) error {
				seen = id
				return tt.err
			})
			r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
			r.Header.Set("Authorization", "Bearer "+good)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status = %d, want %d", w.Code, tt.status)
			}
			if seen.FamilyID == "" || seen.Owner() != owner {
				t.Errorf("Check saw %+v", seen)
			}
			if tt.status == 200 {
				return
			}
			checkErrorBody(t, w, tt.errCode)
			if strings.Contains(w.Body.String(), "blob") {
				t.Errorf("body leaks the internal error: %s", w.Body)
			}
			if tt.status == 401 {
				want := `Bearer resource_metadata="` + metadataURL + `", scope="mcp.tools", error="invalid_token", error_description="token has been revoked"`
				if got := w.Header().Get("WWW-Authenticate"); got != want {
					t.Errorf("WWW-Authenticate = %s", got)
				}
			}
		})
	}
}

// A validation failure never reaches Check, and a refused request never
// reaches the next handler.
func TestAuthenticatorStopsRefusedRequests(t *testing.T) {
	f := newFixture(t)
	mw, err := auth.Authenticator(auth.AuthenticatorOptions{
		Validator:   f.v,
		MetadataURL: func(*http.Request) string { return metadataURL },
		Check: func(context.Context, auth.Identity) error {
			t.Error("Check called for an invalid token")
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Error("next handler called") }))
	r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
	r.Header.Set("Authorization", "Bearer x.y.z")
	h.ServeHTTP(httptest.NewRecorder(), r)
}

func TestAuthenticatorLocalUser(t *testing.T) {
	local := auth.Identity{Subject: tid + ":" + oid, TenantID: tid, ObjectID: oid, Name: "Local Developer"}
	mw, err := auth.Authenticator(auth.AuthenticatorOptions{LocalUser: &local})
	if err != nil {
		t.Fatal(err)
	}
	// With auth off any Authorization header, even garbage, is ignored.
	for _, hdr := range []string{"", "Bearer garbage"} {
		r := httptest.NewRequest(http.MethodPost, "/mcp", nil)
		if hdr != "" {
			r.Header.Set("Authorization", hdr)
		}
		w := httptest.NewRecorder()
		mw(echoIdentity()).ServeHTTP(w, r)
		if w.Code != 200 || w.Body.String() != owner+" " {
			t.Errorf("Authorization %q: %d %q", hdr, w.Code, w.Body)
		}
	}
	// The middleware keeps its own copy.
	local.ObjectID = "changed"
	w := httptest.NewRecorder()
	mw(echoIdentity()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/mcp", nil))
	if w.Body.String() != owner+" " {
		t.Errorf("identity changed after construction: %q", w.Body)
	}
}

func TestAuthenticatorOptionsErrors(t *testing.T) {
	f := newFixture(t)
	meta := func(*http.Request) string { return metadataURL }
	local := &auth.Identity{TenantID: tid, ObjectID: oid}
	tests := []struct {
		name string
		opts auth.AuthenticatorOptions
		want string
	}{
		{"nothing", auth.AuthenticatorOptions{}, "needs a Validator"},
		{"both", auth.AuthenticatorOptions{Validator: f.v, LocalUser: local, MetadataURL: meta}, "not both"},
		{"local user without GUIDs", auth.AuthenticatorOptions{LocalUser: &auth.Identity{TenantID: "local", ObjectID: "me"}}, "tid must be a GUID"},
		{"local user with a bad oid", auth.AuthenticatorOptions{LocalUser: &auth.Identity{TenantID: tid, ObjectID: "../x"}}, "oid must be a GUID"},
		{"no metadata URL", auth.AuthenticatorOptions{Validator: f.v}, "MetadataURL"},
		{"scope with a quote", auth.AuthenticatorOptions{Validator: f.v, MetadataURL: meta, Scope: `mcp"tools`}, "not a valid OAuth scope"},
		{"scope with double space", auth.AuthenticatorOptions{Validator: f.v, MetadataURL: meta, Scope: "a  b"}, "not a valid OAuth scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.Authenticator(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Authenticator error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// Empty Scope means the default, and a metadata URL that could break the
// header's quoting is defused.
func TestAuthenticatorChallengeDefaults(t *testing.T) {
	f := newFixture(t)
	mw, err := auth.Authenticator(auth.AuthenticatorOptions{
		Validator:   f.v,
		MetadataURL: func(*http.Request) string { return gw + `/x"y\z` },
	})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	mw(echoIdentity()).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/mcp", nil))
	want := `Bearer resource_metadata="` + gw + `/xyz", scope="mcp.tools"`
	if got := w.Header().Get("WWW-Authenticate"); got != want {
		t.Errorf("WWW-Authenticate = %s, want %s", got, want)
	}
}
