package oauthstore

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

func TestValidateRedirectURI(t *testing.T) {
	long := "https://example.com/" + strings.Repeat("a", MaxRedirectURILength-len("https://example.com/"))
	accepted := []string{
		"https://example.com/cb",
		"https://example.com",
		"https://example.com:8443/cb?x=1&y=2",
		"https://sub.example.com/a/b/",
		"https://192.0.2.1/cb",
		"https://[2001:db8::1]/cb",
		"https://example.com/p%20q",
		"http://127.0.0.1/cb",
		"http://127.0.0.1:33418/",
		"http://127.0.0.1:65535",
		"http://[::1]:8080/callback",
		"http://localhost:6274/oauth/callback",
		"http://localhost/cb",
		"com.example.app:/oauth2redirect",
		"com.example.app://callback",
		"com.example.app:/cb?x=y",
		"vscode.dev-insiders:/redirect",
		long,
	}
	for _, u := range accepted {
		if err := ValidateRedirectURI(u); err != nil {
			t.Errorf("ValidateRedirectURI(%q) = %v; want accepted", u, err)
		}
	}

	rejected := []struct{ uri, msg string }{
		{"", "empty"},
		{long + "a", "at most 512"},
		{"https://example.com/cb#frag", "fragment"},
		{"https://example.com/cb#", "fragment"},
		{"https://*.example.com/cb", "wildcard"},
		{"https://example.com/*", "wildcard"},
		{"https://user@example.com/cb", "user information"},
		{"https://user:pw@example.com/cb", "user information"},
		{"http://user@127.0.0.1/cb", "user information"},
		{"javascript:alert(1)", "javascript:"},
		{"javascript://example.com/%0aalert(1)", "javascript:"},
		{"data:text/html,hi", "data:"},
		{"file:///etc/passwd", "file:"},
		{"vbscript:msgbox", "vbscript:"},
		{"http://example.com/cb", "loopback"},
		{"http://127.0.0.2/cb", "loopback"},
		{"http://127.0.0.1.example.com/cb", "loopback"},
		{"http://localhost.example.com/cb", "loopback"},
		{"http://[::2]/cb", "loopback"},
		{"myapp://callback", "scheme"},
		{"myapp:/callback", "scheme"},
		{"ftp://example.com/cb", "scheme"},
		{"HTTPS://example.com/cb", "lower case"},
		{"Com.Example.App:/cb", "lower case"},
		{"1com.example:/cb", "malformed scheme"},
		{"/relative/cb", "absolute"},
		{"example.com/cb", "scheme"},
		{"://example.com", "absolute"},
		{"https:example.com", "hierarchical"},
		{"com.example.app:cb", "hierarchical"},
		{"com.example.app:", "path"},
		{"https://", "no host"},
		{"https:///cb", "no host"},
		{"https://example.com:/cb", "empty port"},
		{"https://example.com:0/cb", "port"},
		{"https://example.com:65536/cb", "port"},
		{"https://example.com:080/cb", "port"},
		{"https://exa mple.com/cb", "a space"},
		{"https://example.com/c b", "a space"},
		{"https://example.com\\@evil.com/", `'\'`},
		{"https://example.com/\x00", `'\x00'`},
		{"https://example.com/\ncb", `'\n'`},
		{"https://exämple.com/cb", "'ä'"},
		{"https://example.com/<script>", "'<'"},
		{"https://example.com/%zz", "not a valid URI"},
		{"https://%65xample.com/cb", "not a valid URI"},
		{"https://[fe80::1%25eth0]/cb", "IPv6"},
		{"https://ex_ample.com/cb", "host"},
	}
	for _, tt := range rejected {
		err := ValidateRedirectURI(tt.uri)
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidRedirectURI {
			t.Errorf("ValidateRedirectURI(%q) = %v; want invalid_redirect_uri", tt.uri, err)
			continue
		}
		if !strings.Contains(e.Description, tt.msg) {
			t.Errorf("ValidateRedirectURI(%q) = %q; want it to mention %q", tt.uri, e.Description, tt.msg)
		}
	}
}

func TestValidateMetadata(t *testing.T) {
	ok := []string{"https://app.example.com/cb"}
	tests := []struct {
		name string
		in   ClientMetadata
		code string // "" when accepted
		msg  string
	}{
		{"minimal", ClientMetadata{RedirectURIs: ok}, "", ""},
		{"no redirect uris", ClientMetadata{}, CodeInvalidRedirectURI, "required"},
		{"six redirect uris", ClientMetadata{RedirectURIs: slices.Repeat(ok, 6)}, CodeInvalidRedirectURI, "at most 5"},
		{"bad second uri", ClientMetadata{RedirectURIs: []string{ok[0], "http://evil.example/cb"}}, CodeInvalidRedirectURI, "redirect_uris[1]"},
		{"name at limit", ClientMetadata{RedirectURIs: ok, ClientName: strings.Repeat("é", MaxClientNameLength)}, "", ""},
		{"name too long", ClientMetadata{RedirectURIs: ok, ClientName: strings.Repeat("é", MaxClientNameLength+1)}, CodeInvalidClientMetadata, "client_name"},
		{"name with bidi override", ClientMetadata{RedirectURIs: ok, ClientName: "Safe\u202eppa"}, CodeInvalidClientMetadata, "format character"},
		{"name with newline", ClientMetadata{RedirectURIs: ok, ClientName: "a\nb"}, CodeInvalidClientMetadata, "control"},
		{"client uri", ClientMetadata{RedirectURIs: ok, ClientURI: "https://app.example.com/"}, "", ""},
		{"client uri javascript", ClientMetadata{RedirectURIs: ok, ClientURI: "javascript:alert(1)"}, CodeInvalidClientMetadata, "client_uri"},
		{"client uri http", ClientMetadata{RedirectURIs: ok, ClientURI: "http://app.example.com/"}, CodeInvalidClientMetadata, "https"},
		{"client uri userinfo", ClientMetadata{RedirectURIs: ok, ClientURI: "https://u@app.example.com/"}, CodeInvalidClientMetadata, "user information"},
		{"client uri too long", ClientMetadata{RedirectURIs: ok, ClientURI: "https://a.example/" + strings.Repeat("a", MaxClientURILength)}, CodeInvalidClientMetadata, "at most 512"},
		{"secret auth method replaced", ClientMetadata{RedirectURIs: ok, TokenEndpointAuthMethod: "client_secret_basic"}, "", ""},
		{"extra grant types narrowed", ClientMetadata{RedirectURIs: ok, GrantTypes: []string{"authorization_code", "client_credentials"}}, "", ""},
		{"no authorization_code", ClientMetadata{RedirectURIs: ok, GrantTypes: []string{"client_credentials"}}, CodeInvalidClientMetadata, "grant_types"},
		{"token response type", ClientMetadata{RedirectURIs: ok, ResponseTypes: []string{"token"}}, CodeInvalidClientMetadata, "response_types"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ValidateMetadata(tt.in)
			if tt.code == "" {
				if err != nil {
					t.Fatalf("ValidateMetadata = %v; want accepted", err)
				}
				if got.TokenEndpointAuthMethod != "none" ||
					!slices.Equal(got.GrantTypes, []string{"authorization_code", "refresh_token"}) ||
					!slices.Equal(got.ResponseTypes, []string{"code"}) {
					t.Errorf("normalized = %+v; want none, [authorization_code refresh_token], [code]", got)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code || !strings.Contains(e.Description, tt.msg) {
				t.Fatalf("ValidateMetadata = %v; want %s mentioning %q", err, tt.code, tt.msg)
			}
		})
	}

	got, err := ValidateMetadata(ClientMetadata{RedirectURIs: []string{ok[0], testRedirect, ok[0]}})
	if err != nil || !slices.Equal(got.RedirectURIs, []string{ok[0], testRedirect}) {
		t.Errorf("duplicates: got %v, %v; want them dropped, order kept", got.RedirectURIs, err)
	}
}

func TestRedirectURIMatches(t *testing.T) {
	tests := []struct {
		name                string
		registered, request string
		want                bool
	}{
		{"identical https", "https://app.example.com/cb", "https://app.example.com/cb", true},
		{"identical private-use", "com.example.app:/cb", "com.example.app:/cb", true},
		{"not registered host", "https://app.example.com/cb", "https://evil.example.com/cb", false},
		{"host suffix", "https://app.example.com/cb", "https://app.example.com.evil.com/cb", false},
		{"path differs", "https://app.example.com/cb", "https://app.example.com/cb2", false},
		{"path prefix", "https://app.example.com/cb", "https://app.example.com/cb/../evil", false},
		{"path case", "https://app.example.com/cb", "https://app.example.com/CB", false},
		{"query added", "https://app.example.com/cb", "https://app.example.com/cb?x=1", false},
		{"query differs", "https://app.example.com/cb?a=1", "https://app.example.com/cb?a=2", false},
		{"port added", "https://app.example.com/cb", "https://app.example.com:8443/cb", false},
		{"port differs", "https://app.example.com:443/cb", "https://app.example.com/cb", false},
		{"scheme differs", "https://app.example.com/cb", "http://app.example.com/cb", false},
		{"scheme case", "https://app.example.com/cb", "HTTPS://app.example.com/cb", false},
		{"userinfo added", "https://app.example.com/cb", "https://user@app.example.com/cb", false},
		{"trailing slash added", "https://app.example.com/cb", "https://app.example.com/cb/", false},
		{"trailing slash removed", "https://app.example.com/cb/", "https://app.example.com/cb", false},
		{"fragment added", "https://app.example.com/cb", "https://app.example.com/cb#x", false},
		{"percent-encoded", "https://app.example.com/cb", "https://app.example.com/%63b", false},
		{"empty request", "https://app.example.com/cb", "", false},
		{"empty registered", "", "", false},
		{"loopback port differs", "http://127.0.0.1:33418/cb", "http://127.0.0.1:50000/cb", true},
		{"loopback port added", "http://127.0.0.1/cb", "http://127.0.0.1:50000/cb", true},
		{"loopback port removed", "http://127.0.0.1:33418/cb", "http://127.0.0.1/cb", true},
		{"loopback no path", "http://127.0.0.1:1", "http://127.0.0.1:2", true},
		{"loopback ipv6 port differs", "http://[::1]:8080/cb", "http://[::1]:9090/cb", true},
		{"loopback family differs", "http://127.0.0.1:8080/cb", "http://[::1]:8080/cb", false},
		{"loopback path differs", "http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/cb2", false},
		{"loopback query differs", "http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/cb?x", false},
		{"loopback trailing slash", "http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/cb/", false},
		{"loopback fragment", "http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/cb#x", false},
		{"loopback userinfo", "http://127.0.0.1:8080/cb", "http://evil@127.0.0.1:9090/cb", false},
		{"loopback host suffix", "http://127.0.0.1:8080/cb", "http://127.0.0.1.evil.com:9090/cb", false},
		{"loopback to https", "http://127.0.0.1:8080/cb", "https://127.0.0.1:9090/cb", false},
		{"loopback bad port", "http://127.0.0.1:8080/cb", "http://127.0.0.1:99999/cb", false},
		{"loopback empty port", "http://127.0.0.1:8080/cb", "http://127.0.0.1:/cb", false},
		{"loopback signed port", "http://127.0.0.1:8080/cb", "http://127.0.0.1:+1/cb", false},
		{"loopback port zero", "http://127.0.0.1:8080/cb", "http://127.0.0.1:0/cb", false},
		{"loopback port then at", "http://127.0.0.1:8080/cb", "http://127.0.0.1:80@evil.com/cb", false},
		{"localhost port differs", "http://localhost:8080/cb", "http://localhost:9090/cb", false},
		{"localhost port dropped", "http://localhost:8080/cb", "http://localhost/cb", false},
		{"portless localhost, any port", "http://localhost/callback", "http://localhost:54321/callback", true},
		{"portless localhost, no port", "http://localhost/callback", "http://localhost/callback", true},
		{"portless localhost, other path", "http://localhost/callback", "http://localhost:54321/cb", false},
		{"portless localhost lookalike", "http://localhost/callback", "http://localhost.evil.com:54321/callback", false},
		{"portless localhost to loopback ip", "http://localhost/callback", "http://127.0.0.1:54321/callback", false},
		{"portless localhost userinfo", "http://localhost/callback", "http://x@localhost:54321/callback", false},
		{"portless localhost bad port", "http://localhost/callback", "http://localhost:0/callback", false},
		{"portless localhost https", "http://localhost/callback", "https://localhost:54321/callback", false},
		{"localhost identical", "http://localhost:8080/cb", "http://localhost:8080/cb", true},
		{"localhost to loopback ip", "http://localhost:8080/cb", "http://127.0.0.1:8080/cb", false},
		{"https loopback port differs", "https://127.0.0.1:8080/cb", "https://127.0.0.1:9090/cb", false},
	}
	for _, tt := range tests {
		if got := RedirectURIMatches(tt.registered, tt.request); got != tt.want {
			t.Errorf("%s: RedirectURIMatches(%q, %q) = %v; want %v", tt.name, tt.registered, tt.request, got, tt.want)
		}
	}
}

func TestClients(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)
	ctx := t.Context()

	c, err := st.RegisterClient(ctx, ClientMetadata{
		RedirectURIs:            []string{testRedirect},
		ClientName:              "Claude",
		ClientURI:               "https://claude.ai",
		TokenEndpointAuthMethod: "client_secret_post",
	})
	if err != nil {
		t.Fatal(err)
	}
	if !isID(c.ClientID) || len(c.ClientID) < 22 {
		t.Errorf("client_id %q is not 128 random bits in base64url", c.ClientID)
	}
	if c.TokenEndpointAuthMethod != "none" || !c.Created.Equal(clk.Now()) {
		t.Errorf("registration = %+v; want auth method none, created now", c)
	}
	c2 := registerClient(t, st)
	if c2.ClientID == c.ClientID {
		t.Fatal("two registrations got the same client_id")
	}

	got, err := st.GetClient(ctx, c.ClientID)
	if err != nil || got.ClientName != "Claude" || !slices.Equal(got.RedirectURIs, []string{testRedirect}) {
		t.Fatalf("GetClient = %+v, %v", got, err)
	}

	_, err = st.RegisterClient(ctx, ClientMetadata{RedirectURIs: []string{"http://evil.example/cb"}})
	wantOAuth(t, err, CodeInvalidRedirectURI)

	for _, id := range []string{"unknown-client", "", "../clients/" + c.ClientID, "a/b", strings.Repeat("a", 129)} {
		if _, err := st.GetClient(ctx, id); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("GetClient(%q) = %v; want ErrNotFound", id, err)
		}
	}

	// last_used moves at most daily.
	clk.Advance(time.Hour)
	got, _ = st.GetClient(ctx, c.ClientID)
	if !got.LastUsed.Equal(c.Created) {
		t.Errorf("after an hour last_used = %v; want unchanged %v", got.LastUsed, c.Created)
	}
	clk.Advance(24 * time.Hour)
	got, _ = st.GetClient(ctx, c.ClientID)
	if !got.LastUsed.Equal(clk.Now()) {
		t.Errorf("after a day last_used = %v; want %v", got.LastUsed, clk.Now())
	}
	got, _ = st.GetClient(ctx, c.ClientID)
	if !got.LastUsed.Equal(clk.Now()) {
		t.Errorf("touch was not stored: last_used = %v", got.LastUsed)
	}

	// A registration unused for 90 days is gone; a used one is not.
	clk.Advance(DefaultClientIdleTTL - time.Hour)
	if _, err := st.GetClient(ctx, c.ClientID); err != nil {
		t.Errorf("GetClient just inside the idle limit: %v", err)
	}
	if _, err := st.GetClient(ctx, c2.ClientID); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetClient after 90 idle days = %v; want ErrNotFound", err)
	}
}
