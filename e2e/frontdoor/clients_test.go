//go:build unix

package frontdoor

// TestRealClientsSignIn: three independent, real MCP clients each go through
// the whole OAuth front door on their own, headlessly, against the gateway
// executing the real policy bundle in front of the real handler:
// discovery (401 -> RFC 9728 -> RFC 8414), dynamic client registration,
// /authorize with PKCE S256, the consent page (cookies + CSRF), the Entra
// stand-in, /oauth-callback, the redirect to the client's loopback
// redirect_uri, /token, and then MCP tool calls with the access token.
//
//   - the official go-sdk (auth.AuthorizationCodeHandler on a
//     StreamableClientTransport, /mcp);
//   - mcp-go's OAuth client (NewOAuthSSEClient, /mcp/sse), step by step as
//     its API asks: Start -> OAuthAuthorizationRequiredError ->
//     RegisterClient -> GetAuthorizationURL (PKCE) -> browser ->
//     ProcessAuthorizationResponse -> Start again;
//   - MCP Inspector's CLI (Node.js 22, Streamable HTTP), which runs its own
//     callback listener and "opens the browser" through the `open` package:
//     the bundled xdg-open, which (with no desktop session) runs $BROWSER.
//
// Only the browser is simulated (cliBrowser): it follows the redirects as a
// browser does, keeps cookies in a jar, submits the consent form like a
// user pressing "Allow" (Origin, Referer, Sec-Fetch-Site), picks the user at
// the stand-in with login_hint (FRONTDOOR: /authorize passes it on) and lets
// the last redirect reach the client's own loopback listener.
//
// Each client signs in two users, A and B, and shows they are isolated:
// A's snippet round-trips, B cannot see it, B's snippet of the same name is
// B's own, and A still reads A's. Then each client refreshes A's token with
// its own refresh code and keeps working: the Go clients find their stored
// token expired (its expiry time is moved into the past), the Inspector CLI,
// which keeps no expiry time, gets a 401 for its stored token (replaced by
// the same token, expired and re-signed) and refreshes after it.
//
// Two things of the clients, not of the server, that a real integration
// must know (found writing this test): mcp-go's SSE stream lives only as
// long as the context given to Start; and the Inspector CLI keeps its tokens
// in memory only (lost when the process exits) where there is no OS
// keychain, unless MCP_INSPECTOR_SECRET_STORE=file.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	mcpgoclient "github.com/mark3labs/mcp-go/client"
	mcpgotransport "github.com/mark3labs/mcp-go/client/transport"
	mcpgo "github.com/mark3labs/mcp-go/mcp"
	sdkauth "github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"golang.org/x/oauth2"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// cliInspectorEntry is MCP Inspector's launcher, relative to the repository root.
const cliInspectorEntry = "node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"

// Budgets, generous for a loaded 2-core machine (the gateway runs on Mono).
const (
	cliClientBudget  = 5 * time.Minute  // one client's whole scenario
	cliCallTimeout   = 60 * time.Second // one MCP call
	cliSignInTimeout = 90 * time.Second // one browser sign-in
	cliNodeTimeout   = 2 * time.Minute  // one Inspector CLI run
)

// cliOtherTenant is a second allowed tenant, so user B differs from A in
// tenant and object id.
var cliOtherTenant = authtest.GUID()

func TestRealClientsSignIn(t *testing.T) {
	t.Parallel()
	sys := testenv.StartSystem(t, testenv.SystemOptions{
		AllowedTenants: []string{testenv.LocalTenantID, cliOtherTenant},
	})
	t.Logf("system started in %v: gateway %s", sys.StartUp.Round(time.Millisecond), sys.GatewayURL)

	t.Run("go-sdk", func(t *testing.T) {
		cliScenario(t, sys, func(t *testing.T, ctx context.Context, u cliUser) cliConn {
			return cliConnectGoSDK(t, ctx, sys, u, "")
		})
	})
	t.Run("mcp-go", func(t *testing.T) {
		cliScenario(t, sys, func(t *testing.T, ctx context.Context, u cliUser) cliConn {
			return cliConnectMCPGo(t, ctx, sys, u)
		})
	})
	t.Run("inspector-cli", func(t *testing.T) {
		cliScenario(t, sys, func(t *testing.T, ctx context.Context, u cliUser) cliConn {
			return cliConnectInspector(t, ctx, sys, u, "")
		})
	})
}

// ---- the scenario every client runs ----

// cliUser is a user the Entra stand-in signs in (login_hint tid:oid:name).
type cliUser struct{ TID, OID, Name string }

func (u cliUser) hint() string    { return u.TID + ":" + u.OID + ":" + u.Name }
func (u cliUser) subject() string { return u.TID + ":" + u.OID }

// cliConn is one signed-in client session.
type cliConn interface {
	// Call calls a tool; a failed call fails the test.
	Call(t *testing.T, ctx context.Context, tool string, args map[string]any) cliResult
	// SignIn is the browser half of the sign-in that made this session.
	SignIn() *cliSignIn
	// Resource is the resource identifier of the endpoint the client uses.
	Resource() string
	Close()
}

// cliRefresher is a session whose client can refresh its token.
type cliRefresher interface {
	// ExpireAndRefresh makes the client's stored access token look expired,
	// calls fn (which makes the client refresh before its next request) and
	// returns the tokens before and after.
	ExpireAndRefresh(t *testing.T, ctx context.Context, fn func()) (before, after cliTokens)
}

type cliTokens struct{ Access, Refresh string }

// cliResult is a tools/call result, whatever the client.
type cliResult struct {
	IsError    bool
	Text       string // the text content blocks, joined
	Structured json.RawMessage
}

func (r cliResult) decode(t *testing.T, what string, v any) {
	t.Helper()
	if r.IsError {
		t.Fatalf("%s failed: %s", what, r.Text)
	}
	if len(r.Structured) == 0 {
		t.Fatalf("%s: no structured content (text %q)", what, r.Text)
	}
	if err := json.Unmarshal(r.Structured, v); err != nil {
		t.Fatalf("%s: structured content: %v: %s", what, err, r.Structured)
	}
}

type cliWho struct {
	Subject  string `json:"subject"`
	TenantID string `json:"tenant_id"`
	ObjectID string `json:"object_id"`
	Name     string `json:"name"`
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	Resource string `json:"resource"`
	AuthMode string `json:"auth_mode"`
}

type cliSnippet struct {
	Name        string `json:"name"`
	Content     string `json:"content"`
	ContentType string `json:"content_type"`
	ETag        string `json:"etag"`
	Size        int64  `json:"size"`
}

// cliScenario signs users A and B in with one client and checks the
// sign-in, the identity the server sees, a snippet round trip, isolation
// and (where the client can) a refresh.
func cliScenario(t *testing.T, sys *testenv.System, connect func(*testing.T, context.Context, cliUser) cliConn) {
	ctx, cancel := context.WithTimeout(t.Context(), cliClientBudget)
	defer cancel()
	start := time.Now()
	leaf := t.Name()[strings.LastIndex(t.Name(), "/")+1:]
	a := cliUser{testenv.LocalTenantID, authtest.GUID(), "Ada " + leaf}
	b := cliUser{cliOtherTenant, authtest.GUID(), "Bob " + leaf}
	name := "notes-" + leaf + ".md"
	contentA := "# A's notes = \"private\"\nonly for " + a.subject() + " ✓\n"
	contentB := "B was here\n"

	whoAmI := func(t *testing.T, c cliConn, u cliUser) cliWho {
		t.Helper()
		var who cliWho
		c.Call(t, ctx, "hello", map[string]any{}).decode(t, "hello", &who)
		s := c.SignIn()
		if who.Subject != u.subject() || who.TenantID != u.TID || who.ObjectID != u.OID || who.Name != u.Name || who.AuthMode != "token" {
			t.Errorf("hello = %+v, want user %s (%s), auth_mode token", who, u.subject(), u.Name)
		}
		if want := s.Authorize.Get("client_id"); who.ClientID != want {
			t.Errorf("hello: client_id %q, want the client's registered id %q", who.ClientID, want)
		}
		if !slices.Contains(strings.Fields(who.Scope), "mcp.tools") {
			t.Errorf("hello: scope %q lacks mcp.tools", who.Scope)
		}
		// aud is the resource the client asked for, or <gw>/mcp when it
		// sent none (FRONTDOOR: Public URLs).
		wantAud := s.Authorize.Get("resource")
		if wantAud == "" {
			wantAud = sys.GatewayURL + "/mcp"
		}
		if who.Resource != wantAud {
			t.Errorf("hello: resource %q, want %q", who.Resource, wantAud)
		}
		return who
	}

	// User A signs in, saves a snippet and reads it back.
	t0 := time.Now()
	connA := connect(t, ctx, a)
	defer connA.Close()
	t.Logf("user A signed in and connected in %v (browser part %v)", time.Since(t0).Round(time.Millisecond), connA.SignIn().Took.Round(time.Millisecond))
	cliCheckSignIn(t, sys, connA.SignIn(), connA.Resource())
	whoA := whoAmI(t, connA, a)

	var saved cliSnippet
	connA.Call(t, ctx, "save_snippet", map[string]any{"name": name, "content": contentA, "content_type": "text/markdown"}).decode(t, "save_snippet", &saved)
	if saved.Name != name || saved.ETag == "" || saved.Size != int64(len(contentA)) {
		t.Fatalf("save_snippet = %+v", saved)
	}
	var got cliSnippet
	connA.Call(t, ctx, "get_snippet", map[string]any{"name": name}).decode(t, "get_snippet", &got)
	if got.Content != contentA || got.ContentType != "text/markdown" || got.ETag != saved.ETag {
		t.Fatalf("get_snippet = %+v, want content %q, text/markdown, etag %s", got, contentA, saved.ETag)
	}

	// User B, with another sign-in of the same kind of client, sees none of it.
	t0 = time.Now()
	connB := connect(t, ctx, b)
	defer connB.Close()
	t.Logf("user B signed in and connected in %v", time.Since(t0).Round(time.Millisecond))
	cliCheckSignIn(t, sys, connB.SignIn(), connB.Resource())
	whoB := whoAmI(t, connB, b)
	switch document := strings.HasPrefix(whoA.ClientID, "https://"); {
	case document && whoB.ClientID != whoA.ClientID:
		t.Errorf("client_ids %s and %s: a client identified by its metadata document has one client_id", whoA.ClientID, whoB.ClientID)
	case !document && whoB.ClientID == whoA.ClientID:
		t.Errorf("both sign-ins have client_id %s: each client instance should have registered itself", whoA.ClientID)
	}
	res := connB.Call(t, ctx, "get_snippet", map[string]any{"name": name})
	if !res.IsError || !strings.Contains(res.Text, "does not exist") {
		t.Fatalf("user B reading user A's snippet %q: isError %v, %q; want an error saying it does not exist", name, res.IsError, res.Text)
	}
	var list struct {
		Snippets []cliSnippet `json:"snippets"`
	}
	connB.Call(t, ctx, "list_snippets", map[string]any{}).decode(t, "list_snippets", &list)
	for _, s := range list.Snippets {
		if s.Name == name {
			t.Fatalf("user B's list_snippets shows user A's %q", name)
		}
	}
	var savedB cliSnippet
	connB.Call(t, ctx, "save_snippet", map[string]any{"name": name, "content": contentB}).decode(t, "save_snippet as B", &savedB)
	connB.Call(t, ctx, "get_snippet", map[string]any{"name": name}).decode(t, "get_snippet as B", &got)
	if got.Content != contentB {
		t.Fatalf("user B's own %q: content %q, want %q", name, got.Content, contentB)
	}
	connA.Call(t, ctx, "get_snippet", map[string]any{"name": name}).decode(t, "get_snippet as A again", &got)
	if got.Content != contentA || got.ETag != saved.ETag {
		t.Fatalf("user A's %q after B saved the same name: %+v, want A's content and etag %s", name, got, saved.ETag)
	}

	// Refresh through the client's own code, on the live session.
	if r, ok := connA.(cliRefresher); ok {
		t0 = time.Now()
		var who cliWho
		before, after := r.ExpireAndRefresh(t, ctx, func() {
			connA.Call(t, ctx, "hello", map[string]any{}).decode(t, "hello after refresh", &who)
		})
		if after.Access == "" || after.Access == before.Access {
			t.Errorf("the client did not get a new access token")
		}
		if after.Refresh == "" || after.Refresh == before.Refresh {
			t.Errorf("the refresh token was not rotated")
		}
		if who.Subject != a.subject() || who.ClientID != whoA.ClientID {
			t.Errorf("hello after refresh = %+v", who)
		}
		_, c1 := jwtParts(t, before.Access)
		_, c2 := jwtParts(t, after.Access)
		if c1["fid"] != c2["fid"] || c1["jti"] == c2["jti"] {
			t.Errorf("refreshed token: fid %v -> %v, jti %v -> %v; want the same family, a new jti", c1["fid"], c2["fid"], c1["jti"], c2["jti"])
		}
		connA.Call(t, ctx, "get_snippet", map[string]any{"name": name}).decode(t, "get_snippet after refresh", &got)
		if got.Content != contentA {
			t.Errorf("get_snippet after refresh: %q", got.Content)
		}
		t.Logf("refresh through the client: %v", time.Since(t0).Round(time.Millisecond))
	}
	t.Logf("%s: whole scenario %v", t.Name(), time.Since(start).Round(time.Millisecond))
}

// cliCheckSignIn checks what the client asked for and the browser's path.
func cliCheckSignIn(t *testing.T, sys *testenv.System, s *cliSignIn, resource string) {
	t.Helper()
	q := s.Authorize
	t.Logf("authorization request: response_type=%s code_challenge_method=%s challenge %d chars, scope=%q, resource=%q, redirect_uri=%s; path %s",
		q.Get("response_type"), q.Get("code_challenge_method"), len(q.Get("code_challenge")), q.Get("scope"), q.Get("resource"),
		q.Get("redirect_uri"), strings.Join(s.Hops, " -> "))
	if q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || q.Get("state") == "" {
		t.Errorf("the client's authorization request is not code + PKCE S256 + state: %v", q)
	}
	if r := q.Get("resource"); r != "" && r != resource {
		t.Errorf("resource %q, want the endpoint's %q", r, resource)
	}
	if ru, err := url.Parse(q.Get("redirect_uri")); err != nil || ru.Scheme != "http" || (ru.Hostname() != "127.0.0.1" && ru.Hostname() != "localhost" && ru.Hostname() != "::1") {
		t.Errorf("redirect_uri %q is not a loopback http URI", q.Get("redirect_uri"))
	}
	want := []string{"GET /authorize", "GET /consent", "POST /consent", "GET entra", "GET /oauth-callback", "GET client"}
	if !slices.Equal(s.Kinds, want) {
		t.Errorf("browser path %v, want %v", s.Kinds, want)
	}
	// The consent page names the client (its registered name and id) and
	// says the code goes back to this computer.
	if m := regexp.MustCompile(`<strong>([^<]*)</strong> wants to use`).FindStringSubmatch(s.Consent); m != nil {
		t.Logf("the consent page names the client %q", html.UnescapeString(m[1]))
	}
	if !strings.Contains(s.Consent, html.EscapeString(q.Get("client_id"))) || !strings.Contains(s.Consent, "on this computer") {
		t.Errorf("the consent page does not name client %s or does not say the redirect is local:\n%s", q.Get("client_id"), s.Consent)
	}
}

// ---- the browser ----

// cliBrowser is a headless browser for one user: a cookie jar, redirects
// followed one by one, the consent form submitted with "Allow".
type cliBrowser struct {
	sys  *testenv.System
	user cliUser
	c    *http.Client
}

// cliSignIn is what one visit of an authorization URL did.
type cliSignIn struct {
	Authorize url.Values // the client's authorization request, as the client built it
	Hops      []string   // "METHOD scheme://host/path" of every request, queries left out
	Kinds     []string   // the hops classified: GET /authorize, GET entra, GET client...
	Consent   string     // the consent page
	Client    url.Values // the query of the redirect to the client (code, state, iss)
	Final     int        // status of the client's answer to that redirect
	FinalBody string
	Took      time.Duration
}

func cliNewBrowser(t *testing.T, sys *testenv.System, u cliUser) *cliBrowser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &cliBrowser{sys: sys, user: u, c: &http.Client{
		Jar:           jar,
		Transport:     tr,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

var (
	cliFormRE   = regexp.MustCompile(`(?is)<form\b([^>]*)>(.*?)</form>`)
	cliFieldRE  = regexp.MustCompile(`(?i)<(input|button)\b([^>]*)>`)
	cliAttrRE   = regexp.MustCompile(`(?i)\b([a-z-]+)\s*=\s*"([^"]*)"`)
	cliCodeLike = regexp.MustCompile(`([?&](?:code|state|code_challenge|login_hint|txn)=)[^&\s"]+`)
)

func cliAttrs(s string) map[string]string {
	m := map[string]string{}
	for _, a := range cliAttrRE.FindAllStringSubmatch(s, -1) {
		m[strings.ToLower(a[1])] = html.UnescapeString(a[2])
	}
	return m
}

// SignIn visits authURL as the user would after the client opened it: it
// adds login_hint, follows every redirect, approves on the consent page,
// and stops after the client's loopback redirect_uri has answered.
func (b *cliBrowser) SignIn(ctx context.Context, authURL string) (*cliSignIn, error) {
	ctx, cancel := context.WithTimeout(ctx, cliSignInTimeout)
	defer cancel()
	start := time.Now()
	gw := b.sys.GatewayURL
	u, err := url.Parse(authURL)
	if err != nil {
		return nil, fmt.Errorf("the client's authorization URL %q: %v", authURL, err)
	}
	if u.Scheme+"://"+u.Host+u.Path != gw+"/authorize" {
		return nil, fmt.Errorf("the client opened %s, not the gateway's /authorize", cliRedact(authURL))
	}
	s := &cliSignIn{Authorize: u.Query()}
	q := u.Query()
	q.Set("login_hint", b.user.hint())
	u.RawQuery = q.Encode()
	redirectURI := s.Authorize.Get("redirect_uri")
	entra := b.sys.NamedValues["EntraAuthorizeUrl"]

	next, err := http.NewRequestWithContext(ctx, "GET", u.String(), nil)
	if err != nil {
		return nil, err
	}
	for hop := 0; ; hop++ {
		if hop == 12 {
			return s, fmt.Errorf("more than 12 hops: %v", s.Hops)
		}
		req := next
		req.Header.Set("User-Agent", "Mozilla/5.0 (front door e2e headless browser)")
		req.Header.Set("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")
		where := req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
		s.Hops = append(s.Hops, req.Method+" "+where)
		kind := req.Method + " " + where
		switch {
		case strings.HasPrefix(where, gw+"/"):
			kind = req.Method + " " + strings.TrimPrefix(where, gw)
		case where == entra:
			kind = req.Method + " entra"
		case redirectURI != "" && where == strings.SplitN(redirectURI, "?", 2)[0]:
			kind = req.Method + " client"
		}
		s.Kinds = append(s.Kinds, kind)

		resp, err := b.c.Do(req)
		if err != nil {
			return s, fmt.Errorf("%s: %v", kind, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()

		if kind == "GET client" {
			s.Final, s.FinalBody, s.Took = resp.StatusCode, string(body), time.Since(start)
			if resp.StatusCode != http.StatusOK {
				return s, fmt.Errorf("the client's redirect URI answered %d: %s", resp.StatusCode, body)
			}
			return s, nil
		}
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := req.URL.Parse(resp.Header.Get("Location"))
			if err != nil || resp.Header.Get("Location") == "" {
				return s, fmt.Errorf("%s: %d with Location %q", kind, resp.StatusCode, resp.Header.Get("Location"))
			}
			if redirectURI != "" && loc.Scheme+"://"+loc.Host+loc.Path == strings.SplitN(redirectURI, "?", 2)[0] {
				s.Client = loc.Query()
				if e := s.Client.Get("error"); e != "" {
					return s, fmt.Errorf("the gateway sent the browser back to the client with error=%s (%s)", e, s.Client.Get("error_description"))
				}
				if s.Client.Get("code") == "" || s.Client.Get("state") != s.Authorize.Get("state") || s.Client.Get("iss") != gw {
					return s, fmt.Errorf("the redirect to the client lacks code, the client's state or iss=%s: %s", gw, cliRedact(loc.String()))
				}
			}
			if next, err = http.NewRequestWithContext(ctx, "GET", loc.String(), nil); err != nil {
				return s, err
			}
		case resp.StatusCode == http.StatusOK && kind == "GET /consent":
			s.Consent = string(body)
			next, err = b.consent(ctx, req.URL, string(body))
			if err != nil {
				return s, err
			}
		default:
			return s, fmt.Errorf("%s answered %d (%s): %.500s", kind, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
}

// consent builds the POST of the consent form with decision=allow, as a
// browser submits it when the user presses "Allow".
func (b *cliBrowser) consent(ctx context.Context, page *url.URL, body string) (*http.Request, error) {
	m := cliFormRE.FindStringSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("the consent page has no form:\n%.2000s", body)
	}
	form := cliAttrs(m[1])
	if !strings.EqualFold(form["method"], "post") {
		return nil, fmt.Errorf("the consent form's method is %q", form["method"])
	}
	action, err := page.Parse(form["action"])
	if err != nil {
		return nil, err
	}
	values := url.Values{}
	allow := false
	for _, f := range cliFieldRE.FindAllStringSubmatch(m[2], -1) {
		a := cliAttrs(f[2])
		switch {
		case strings.EqualFold(a["type"], "hidden") && a["name"] != "":
			values.Set(a["name"], a["value"])
		case strings.EqualFold(f[1], "button") && a["name"] == "decision" && a["value"] == "allow":
			values.Set("decision", "allow")
			allow = true
		}
	}
	if !allow {
		return nil, fmt.Errorf("the consent form has no Allow button:\n%.2000s", body)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", action.String(), strings.NewReader(values.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", page.Scheme+"://"+page.Host)
	req.Header.Set("Referer", page.String())
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.Header.Set("Sec-Fetch-Mode", "navigate")
	return req, nil
}

// cliRedact hides codes, states and the like in URLs before they are logged.
func cliRedact(s string) string { return cliCodeLike.ReplaceAllString(s, "${1}…") }

// ---- a loopback redirect listener for the Go clients ----

// cliLoopback is the client's loopback redirect URI (RFC 8252): the Go SDKs
// leave receiving the redirect to the application, as the browser delivers
// it to a local listener.
type cliLoopback struct {
	RedirectURI string
	got         chan url.Values
}

func cliNewLoopback(t *testing.T) *cliLoopback {
	t.Helper()
	l := &cliLoopback{got: make(chan url.Values, 4)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "GET" || r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case l.got <- r.URL.Query():
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, "<p>Signed in. You can close this window.</p>")
	}))
	t.Cleanup(srv.Close)
	l.RedirectURI = srv.URL + "/callback" // http://127.0.0.1:<port>/callback
	return l
}

func (l *cliLoopback) wait(ctx context.Context) (url.Values, error) {
	select {
	case q := <-l.got:
		return q, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no redirect reached the loopback listener: %w", ctx.Err())
	}
}

// ---- 1. the official go-sdk ----

type cliGoSDK struct {
	sess     *sdk.ClientSession
	signIn   *cliSignIn
	resource string
	ts       *cliTokenSource
}

// cliTokenSource is the token source the go-sdk's AuthorizationCodeHandler
// uses (its default, cfg.TokenSource) behind a switch, so that the test can
// make the current token look expired: the next request then goes through
// the SDK's own refresh (golang.org/x/oauth2 with the SDK's oauth2.Config).
type cliTokenSource struct {
	mu  sync.Mutex
	ctx context.Context
	cfg *oauth2.Config
	src oauth2.TokenSource
}

func (s *cliTokenSource) Token() (*oauth2.Token, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.src.Token()
}

// cliConnectGoSDK signs u in with the go-sdk client, registering it
// dynamically, or, when document is set, using document (the URL of its
// Client ID Metadata Document, naming the client cimdClientName) as its
// client_id.
func cliConnectGoSDK(t *testing.T, ctx context.Context, sys *testenv.System, u cliUser, document string) cliConn {
	t.Helper()
	loop := cliNewLoopback(t)
	browser := cliNewBrowser(t, sys, u)
	c := &cliGoSDK{resource: sys.GatewayURL + "/mcp"}
	var fetchErr error
	clientName := "go-sdk e2e " + u.Name
	var dcr *sdkauth.DynamicClientRegistrationConfig
	var cimd *sdkauth.ClientIDMetadataDocumentConfig
	if document != "" {
		clientName, cimd = cimdClientName, &sdkauth.ClientIDMetadataDocumentConfig{URL: document}
	} else {
		dcr = &sdkauth.DynamicClientRegistrationConfig{
			Metadata: &oauthex.ClientRegistrationMetadata{
				RedirectURIs:            []string{loop.RedirectURI},
				ClientName:              clientName,
				TokenEndpointAuthMethod: "none",
				GrantTypes:              []string{"authorization_code", "refresh_token"},
				ResponseTypes:           []string{"code"},
			},
		}
	}
	handler, err := sdkauth.NewAuthorizationCodeHandler(&sdkauth.AuthorizationCodeHandlerConfig{
		DynamicClientRegistrationConfig: dcr,
		ClientIDMetadataDocumentConfig:  cimd,
		RedirectURL:                     loop.RedirectURI,
		RequestRefreshToken:             true,
		Client:                          &http.Client{Timeout: 30 * time.Second},
		// The "open the browser" step: the browser visits the URL, the
		// gateway's last redirect reaches the loopback listener, and what it
		// received goes back to the SDK, which checks state and iss.
		AuthorizationCodeFetcher: func(ctx context.Context, args *sdkauth.AuthorizationArgs) (*sdkauth.AuthorizationResult, error) {
			s, err := browser.SignIn(ctx, args.URL)
			c.signIn = s
			if err != nil {
				fetchErr = err
				return nil, err
			}
			q, err := loop.wait(ctx)
			if err != nil {
				return nil, err
			}
			return &sdkauth.AuthorizationResult{Code: q.Get("code"), State: q.Get("state"), Iss: q.Get("iss")}, nil
		},
		NewTokenSource: func(ctx context.Context, cfg *oauth2.Config, tok *oauth2.Token) (oauth2.TokenSource, error) {
			c.ts = &cliTokenSource{ctx: ctx, cfg: cfg, src: cfg.TokenSource(ctx, tok)}
			return c.ts, nil
		},
	})
	if err != nil {
		t.Fatalf("go-sdk: NewAuthorizationCodeHandler: %v", err)
	}
	client := sdk.NewClient(&sdk.Implementation{Name: "frontdoor-e2e-go-sdk", Version: "1"}, nil)
	cctx, cancel := context.WithTimeout(ctx, cliSignInTimeout+cliCallTimeout)
	defer cancel()
	sess, err := client.Connect(cctx, &sdk.StreamableClientTransport{
		Endpoint:     c.resource,
		HTTPClient:   &http.Client{},
		OAuthHandler: handler,
	}, nil)
	if err != nil {
		t.Fatalf("go-sdk: Connect (with the OAuth flow): %v (browser: %v; path %v)", err, fetchErr, c.signIn)
	}
	if c.signIn == nil || c.ts == nil {
		t.Fatalf("go-sdk: connected without a sign-in")
	}
	if name := html.EscapeString(clientName); !strings.Contains(c.signIn.Consent, name) {
		t.Errorf("go-sdk: the consent page does not show the client_name %q", name)
	}
	c.sess = sess
	return c
}

func (c *cliGoSDK) SignIn() *cliSignIn { return c.signIn }
func (c *cliGoSDK) Resource() string   { return c.resource }
func (c *cliGoSDK) Close()             { _ = c.sess.Close() }

func (c *cliGoSDK) Call(t *testing.T, ctx context.Context, tool string, args map[string]any) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, cliCallTimeout)
	defer cancel()
	res, err := c.sess.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("go-sdk: tools/call %s: %v", tool, err)
	}
	var r cliResult
	r.IsError = res.IsError
	for _, ct := range res.Content {
		if tc, ok := ct.(*sdk.TextContent); ok {
			r.Text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		r.Structured = b
	}
	return r
}

func (c *cliGoSDK) ExpireAndRefresh(t *testing.T, ctx context.Context, fn func()) (before, after cliTokens) {
	t.Helper()
	s := c.ts
	s.mu.Lock()
	tok, err := s.src.Token()
	if err != nil {
		s.mu.Unlock()
		t.Fatalf("go-sdk: current token: %v", err)
	}
	before = cliTokens{tok.AccessToken, tok.RefreshToken}
	stale := *tok
	stale.Expiry = time.Now().Add(-time.Minute)
	s.src = s.cfg.TokenSource(s.ctx, &stale)
	s.mu.Unlock()
	fn()
	tok, err = s.Token()
	if err != nil {
		t.Fatalf("go-sdk: token after refresh: %v", err)
	}
	return before, cliTokens{tok.AccessToken, tok.RefreshToken}
}

// ---- 2. mcp-go over SSE ----

type cliMCPGo struct {
	c        *mcpgoclient.Client
	store    *mcpgotransport.MemoryTokenStore
	signIn   *cliSignIn
	resource string
}

func cliConnectMCPGo(t *testing.T, ctx context.Context, sys *testenv.System, u cliUser) cliConn {
	t.Helper()
	loop := cliNewLoopback(t)
	browser := cliNewBrowser(t, sys, u)
	m := &cliMCPGo{store: mcpgoclient.NewMemoryTokenStore(), resource: sys.GatewayURL + "/mcp/sse"}
	c, err := mcpgoclient.NewOAuthSSEClient(m.resource, mcpgoclient.OAuthConfig{
		RedirectURI: loop.RedirectURI,
		Scopes:      []string{"mcp.tools"},
		TokenStore:  m.store,
		PKCEEnabled: true,
		HTTPClient:  &http.Client{Timeout: 30 * time.Second},
	})
	if err != nil {
		t.Fatalf("mcp-go: NewOAuthSSEClient: %v", err)
	}
	m.c = c
	cctx, cancel := context.WithTimeout(ctx, cliSignInTimeout+cliCallTimeout)
	defer cancel()

	// Without a token, Start asks for authorization.
	err = c.Start(cctx)
	if !mcpgoclient.IsOAuthAuthorizationRequiredError(err) {
		c.Close()
		t.Fatalf("mcp-go: the first Start returned %v, want an OAuthAuthorizationRequiredError", err)
	}
	h := mcpgoclient.GetOAuthHandler(err)
	if h == nil {
		t.Fatal("mcp-go: no OAuth handler in the error")
	}
	if err := h.RegisterClient(cctx, "mcp-go e2e "+u.Name); err != nil {
		t.Fatalf("mcp-go: RegisterClient: %v", err)
	}
	if h.GetClientID() == "" {
		t.Fatal("mcp-go: RegisterClient left no client_id")
	}
	verifier, err := mcpgoclient.GenerateCodeVerifier()
	if err != nil {
		t.Fatal(err)
	}
	state, err := mcpgoclient.GenerateState()
	if err != nil {
		t.Fatal(err)
	}
	authURL, err := h.GetAuthorizationURL(cctx, state, mcpgoclient.GenerateCodeChallenge(verifier))
	if err != nil {
		t.Fatalf("mcp-go: GetAuthorizationURL: %v", err)
	}
	m.signIn, err = browser.SignIn(cctx, authURL)
	if err != nil {
		t.Fatalf("mcp-go: the browser: %v (sign-in %+v)", err, m.signIn)
	}
	if name := html.EscapeString("mcp-go e2e " + u.Name); !strings.Contains(m.signIn.Consent, name) {
		t.Errorf("mcp-go: the consent page does not show the registered client_name %q", name)
	}
	q, err := loop.wait(cctx)
	if err != nil {
		t.Fatal(err)
	}
	if q.Get("iss") != sys.GatewayURL {
		t.Errorf("mcp-go: iss %q in the redirect, want %s", q.Get("iss"), sys.GatewayURL)
	}
	if err := h.ProcessAuthorizationResponse(cctx, q.Get("code"), q.Get("state"), verifier); err != nil {
		t.Fatalf("mcp-go: ProcessAuthorizationResponse: %v", err)
	}
	// The SSE stream lives as long as the context given to Start: the
	// scenario's, not this function's.
	if err := c.Start(ctx); err != nil {
		t.Fatalf("mcp-go: Start after sign-in: %v", err)
	}
	init := mcpgo.InitializeRequest{}
	init.Params.ProtocolVersion = mcpgo.LATEST_PROTOCOL_VERSION
	init.Params.ClientInfo = mcpgo.Implementation{Name: "frontdoor-e2e-mcp-go", Version: "1"}
	if _, err := c.Initialize(cctx, init); err != nil {
		t.Fatalf("mcp-go: initialize: %v", err)
	}
	return m
}

func (m *cliMCPGo) SignIn() *cliSignIn { return m.signIn }
func (m *cliMCPGo) Resource() string   { return m.resource }
func (m *cliMCPGo) Close()             { _ = m.c.Close() }

func (m *cliMCPGo) Call(t *testing.T, ctx context.Context, tool string, args map[string]any) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, cliCallTimeout)
	defer cancel()
	req := mcpgo.CallToolRequest{}
	req.Params.Name = tool
	req.Params.Arguments = args
	res, err := m.c.CallTool(ctx, req)
	if err != nil {
		t.Fatalf("mcp-go: tools/call %s: %v", tool, err)
	}
	var r cliResult
	r.IsError = res.IsError
	for _, ct := range res.Content {
		if tc, ok := ct.(mcpgo.TextContent); ok {
			r.Text += tc.Text
		}
	}
	if res.StructuredContent != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		r.Structured = b
	}
	return r
}

func (m *cliMCPGo) ExpireAndRefresh(t *testing.T, ctx context.Context, fn func()) (before, after cliTokens) {
	t.Helper()
	tok, err := m.store.GetToken(ctx)
	if err != nil {
		t.Fatalf("mcp-go: stored token: %v", err)
	}
	before = cliTokens{tok.AccessToken, tok.RefreshToken}
	stale := *tok
	stale.ExpiresAt = time.Now().Add(-time.Minute)
	if err := m.store.SaveToken(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	fn()
	tok, err = m.store.GetToken(ctx)
	if err != nil {
		t.Fatalf("mcp-go: stored token after refresh: %v", err)
	}
	return before, cliTokens{tok.AccessToken, tok.RefreshToken}
}

// ---- 3. MCP Inspector's CLI ----

// cliInspector is one Inspector installation state: its own HOME (the CLI
// keeps its OAuth store under ~/.mcp-inspector), its own "browser" and its
// callback listener URL. The first run signs in interactively; every later
// run is --stored-auth-only, so it must reuse the stored token.
//
// How the CLI opens the browser: with MCP_AUTO_OPEN_ENABLED=true and no TTY
// it calls the `open` package, which on Linux spawns its bundled xdg-open
// (detached); xdg-open with no desktop session ($DISPLAY etc. unset) runs
// "$BROWSER <url>". BROWSER is the script cliBrowserScript, which appends
// "<pid> <ppid> <url>" to a file this test watches; the test's cliBrowser
// then visits the URL and the gateway's last redirect reaches the CLI's own
// callback listener (--callback-url, a free loopback port), which exchanges
// the code and lets the CLI carry on.
type cliInspector struct {
	sys      *testenv.System
	node     string
	entry    string
	url      string
	callback string
	home     string
	script   string // the BROWSER
	opened   string // where the BROWSER writes the URLs it was asked to open
	browser  *cliBrowser
	signIn   *cliSignIn
	// document is the client's metadata document URL (--client-metadata-url),
	// or "" to register dynamically.
	document string
}

const cliBrowserScript = `#!/bin/sh
# The "web browser" of the Inspector CLI test: hand the URL to the test.
printf '%s %s %s\n' "$$" "$PPID" "$1" >> "$(dirname "$0")/opened.txt"
`

// cliConnectInspector signs u in with the Inspector CLI, which registers
// itself dynamically or, when document is set, uses that metadata document
// URL as its client_id.
func cliConnectInspector(t *testing.T, ctx context.Context, sys *testenv.System, u cliUser, document string) cliConn {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the Inspector opens a browser through xdg-open and $BROWSER on Linux only")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	node, err := testenv.NodeBinary(root)
	if err != nil {
		t.Skipf("Node.js 22 is not installed: %v", err)
	}
	entry := filepath.Join(root, cliInspectorEntry)
	if _, err := os.Stat(entry); err != nil {
		if os.Getenv(testenv.EnvRequireAzurite) == "1" {
			t.Fatalf("MCP Inspector is not installed: %v", err)
		}
		t.Skipf("MCP Inspector is not installed (npm ci): %v", err)
	}
	// With a metadata document the callback is on localhost, which the
	// document lists without a port (as real clients' documents do), so the
	// flow shows a portless localhost URI accepting the CLI's port.
	callbackHost := "127.0.0.1"
	if document != "" {
		callbackHost = "localhost"
	}
	home := t.TempDir()
	if strings.ContainsAny(home, ": \t") {
		t.Fatalf("temporary directory %q: xdg-open splits $BROWSER at ':' and blanks", home)
	}
	ins := &cliInspector{
		sys: sys, node: node, entry: entry, url: sys.GatewayURL + "/mcp", home: home,
		callback: "http://" + callbackHost + ":" + strconv.Itoa(cliFreePort(t)) + "/oauth/callback",
		script:   filepath.Join(home, "browser.sh"),
		opened:   filepath.Join(home, "opened.txt"),
		browser:  cliNewBrowser(t, sys, u),
		document: document,
	}
	if err := os.WriteFile(ins.script, []byte(cliBrowserScript), 0o700); err != nil {
		t.Fatal(err)
	}
	// tools/list signs in (the first request gets a 401) and shows the tools.
	r := ins.run(t, ctx, true, "--method", "tools/list")
	var list struct {
		Tools []struct{ Name string } `json:"tools"`
	}
	cliInspectorResult(t, r, &list)
	if ins.signIn == nil {
		t.Fatalf("the Inspector CLI listed the tools without signing in:\n%s", r)
	}
	if !slices.ContainsFunc(list.Tools, func(x struct{ Name string }) bool { return x.Name == "save_snippet" }) {
		t.Fatalf("tools/list lacks save_snippet:\n%s", r)
	}
	if !strings.Contains(r.Stderr, "Authorization complete") {
		t.Errorf("the CLI did not say it completed the authorization:\n%s", r)
	}
	return ins
}

// ExpireAndRefresh: the CLI keeps no expiry time with its tokens (only
// expires_in), so it learns that an access token expired from the server's
// 401. The stored access token is replaced by the same token expired an
// hour ago, re-signed with the gateway's key (what the CLI would hold after
// an hour), and the next --stored-auth-only run must refresh it by itself.
func (ins *cliInspector) ExpireAndRefresh(t *testing.T, ctx context.Context, fn func()) (before, after cliTokens) {
	t.Helper()
	var expired string
	before = ins.storedTokens(t, func(tok map[string]any) {
		access, _ := tok["access_token"].(string)
		expired = cliExpired(t, ins.sys, access)
		tok["access_token"] = expired
	})
	// The premise: the gateway refuses the expired token.
	req, err := http.NewRequestWithContext(ctx, "POST", ins.url, strings.NewReader(initBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+expired)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Fatalf("the expired token: %d %q, want 401 invalid_token", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	fn()
	return before, ins.storedTokens(t, nil)
}

// storedTokens reads the CLI's stored tokens for the server (the file
// secret store) and, with edit, rewrites them.
func (ins *cliInspector) storedTokens(t *testing.T, edit func(map[string]any)) cliTokens {
	t.Helper()
	path := filepath.Join(ins.home, ".mcp-inspector", "secrets.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the Inspector's secret store: %v", err)
	}
	var store map[string]any
	if err := json.Unmarshal(b, &store); err != nil {
		t.Fatalf("the Inspector's secret store: %v", err)
	}
	secrets, _ := store["secrets"].(map[string]any)
	var found []string
	for k := range secrets {
		if strings.Contains(k, ":tokens:") {
			found = append(found, k)
		}
	}
	if len(found) != 1 {
		t.Fatalf("the Inspector's secret store has %d token entries, want 1: %v", len(found), found)
	}
	raw, _ := secrets[found[0]].(string)
	var tok map[string]any
	if err := json.Unmarshal([]byte(raw), &tok); err != nil {
		t.Fatalf("the Inspector's stored tokens: %v", err)
	}
	access, _ := tok["access_token"].(string)
	refresh, _ := tok["refresh_token"].(string)
	if edit != nil {
		edit(tok)
		nb, err := json.Marshal(tok)
		if err != nil {
			t.Fatal(err)
		}
		secrets[found[0]] = string(nb)
		if b, err = json.MarshalIndent(store, "", "  "); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cliTokens{access, refresh}
}

// cliExpired returns the access token with iat, nbf and exp moved two hours
// back, signed again with the gateway's key and kid: the same token, expired.
func cliExpired(t *testing.T, sys *testenv.System, token string) string {
	t.Helper()
	header, claims := jwtParts(t, token)
	for _, k := range []string{"iat", "nbf", "exp"} {
		n, ok := claims[k].(json.Number)
		if !ok {
			t.Fatalf("the access token has no numeric %s", k)
		}
		v, err := n.Int64()
		if err != nil {
			t.Fatal(err)
		}
		claims[k] = v - 2*3600
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims(claims))
	tok.Header["kid"] = header["kid"]
	tok.Header["typ"] = header["typ"]
	signed, err := tok.SignedString(sys.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func (ins *cliInspector) SignIn() *cliSignIn { return ins.signIn }
func (ins *cliInspector) Resource() string   { return ins.url }
func (ins *cliInspector) Close()             {}

func (ins *cliInspector) Call(t *testing.T, ctx context.Context, tool string, args map[string]any) cliResult {
	t.Helper()
	b, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	r := ins.run(t, ctx, false, "--method", "tools/call", "--tool-name", tool, "--tool-args-json", string(b))
	var res struct {
		IsError bool `json:"isError"`
		Content []struct {
			Type string `json:"type"`
			Text string `json:"text"`
		} `json:"content"`
		StructuredContent json.RawMessage `json:"structuredContent"`
	}
	if r.Exit == 5 {
		// The CLI's TOOL_ERROR exit: the result (isError: true) is still
		// printed; the test decides what a failed call means.
		r.Exit = 0
		cliInspectorResult(t, r, &res)
		if !res.IsError {
			t.Fatalf("the Inspector CLI exited 5 (tool error) but the result is not an error:\n%s", r)
		}
	} else {
		cliInspectorResult(t, r, &res)
	}
	out := cliResult{IsError: res.IsError, Structured: res.StructuredContent}
	for _, c := range res.Content {
		if c.Type == "text" {
			out.Text += c.Text
		}
	}
	if string(out.Structured) == "null" {
		out.Structured = nil
	}
	return out
}

// cliNodeRun is one finished Inspector CLI run.
type cliNodeRun struct {
	Args           []string
	Stdout, Stderr string
	Exit           int
	Took           time.Duration
}

func (r cliNodeRun) String() string {
	return fmt.Sprintf("$ node %s\nexit %d after %v\n--- stdout\n%s\n--- stderr\n%s",
		strings.Join(r.Args, " "), r.Exit, r.Took.Round(time.Millisecond), r.Stdout, cliRedact(r.Stderr))
}

func cliInspectorResult(t *testing.T, r cliNodeRun, v any) {
	t.Helper()
	if r.Exit != 0 {
		t.Fatalf("the Inspector CLI failed:\n%s", r)
	}
	if err := testenv.InspectorResult(r.Stdout, v); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
}

// run runs the Inspector CLI once, in its own process group, and plays the
// browser when it opens one (interactive runs only: any other run that
// opens a browser fails the test).
func (ins *cliInspector) run(t *testing.T, ctx context.Context, interactive bool, args ...string) cliNodeRun {
	t.Helper()
	argv := append([]string{ins.entry, "--cli", ins.url, "--transport", "http",
		"--callback-url", ins.callback, "--connect-timeout", "30000", "--format", "json"}, args...)
	if ins.document != "" {
		argv = append(argv, "--client-metadata-url", ins.document)
	}
	if !interactive {
		argv = append(argv, "--stored-auth-only")
	}
	ctx, cancel := context.WithTimeout(ctx, cliNodeTimeout)
	defer cancel()
	tmp := filepath.Join(ins.home, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(ins.node, argv...)
	cmd.Dir = ins.home
	// A minimal environment: no DISPLAY or desktop session (xdg-open then
	// falls back to $BROWSER), nothing of the caller's MCP_*, proxy or
	// OAuth settings.
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + ins.home,
		"TMPDIR=" + tmp,
		"XDG_CONFIG_HOME=" + filepath.Join(ins.home, ".config"),
		"XDG_CACHE_HOME=" + filepath.Join(ins.home, ".cache"),
		"XDG_DATA_HOME=" + filepath.Join(ins.home, ".local", "share"),
		"NO_COLOR=1",
		"BROWSER=" + ins.script,
		"MCP_AUTO_OPEN_ENABLED=" + strconv.FormatBool(interactive),
		// No OS keychain here: without this the CLI keeps the tokens in
		// memory only, and the next run would have to sign in again. The
		// file is ~/.mcp-inspector/secrets.json in the temporary HOME.
		"MCP_INSPECTOR_SECRET_STORE=file",
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr testenv.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // stdin is /dev/null: never a TTY
	seen := len(cliOpened(ins.opened))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the Inspector CLI: %v", err)
	}
	pgid := cmd.Process.Pid
	killGroup := func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) }
	defer killGroup()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	var problems []string
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var waitErr error
	var browserPIDs []string
wait:
	for {
		select {
		case waitErr = <-done:
			break wait
		case <-ctx.Done():
			killGroup()
			waitErr = <-done
			problems = append(problems, fmt.Sprintf("the CLI did not finish within %v", cliNodeTimeout))
			break wait
		case <-tick.C:
			lines := cliOpened(ins.opened)
			for _, line := range lines[seen:] {
				seen++
				f := strings.SplitN(line, " ", 3)
				if len(f) != 3 {
					problems = append(problems, fmt.Sprintf("the browser script wrote %q", line))
					continue
				}
				browserPIDs = append(browserPIDs, f[0], f[1])
				switch {
				case !interactive:
					problems = append(problems, "a --stored-auth-only run opened a browser: "+cliRedact(f[2]))
				case ins.signIn != nil:
					problems = append(problems, "the CLI opened a browser twice: "+cliRedact(f[2]))
				default:
					t.Logf("the Inspector CLI opened the browser after %v", time.Since(start).Round(time.Millisecond))
					s, err := ins.browser.SignIn(ctx, f[2])
					ins.signIn = s
					if err != nil {
						var hops []string
						if s != nil {
							hops = s.Hops
						}
						problems = append(problems, fmt.Sprintf("the browser: %v (path %v)", err, hops))
						killGroup() // it would wait 15 minutes for a callback
					}
				}
			}
		}
	}
	// Anything the CLI started and left in its group goes too.
	killGroup()
	r := cliNodeRun{Args: argv, Stdout: stdout.String(), Stderr: stderr.String(), Exit: cmd.ProcessState.ExitCode(), Took: time.Since(start)}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		problems = append(problems, fmt.Sprintf("waiting for the CLI: %v", waitErr))
	}
	problems = append(problems, cliReapBrowser(browserPIDs, ins.script)...)
	t.Logf("inspector %s (exit %d, %v)", strings.Join(args, " "), r.Exit, r.Took.Round(time.Millisecond))
	if len(problems) > 0 {
		t.Fatalf("Inspector CLI run: %s\n%s", strings.Join(problems, "; "), r)
	}
	return r
}

// cliOpened returns the complete lines the browser script has written.
func cliOpened(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(b) > 0 && b[len(b)-1] != '\n' && len(lines) > 0 {
		lines = lines[:len(lines)-1] // still being written
	}
	return lines
}

// cliReapBrowser waits for the browser script and its xdg-open (detached,
// so outside the CLI's process group) to exit, and kills them if they do
// not: only processes whose command line still names xdg-open or the
// script, so a recycled pid is left alone.
func cliReapBrowser(pids []string, script string) []string {
	var problems []string
	for _, p := range pids {
		pid, err := strconv.Atoi(p)
		if err != nil || pid <= 1 {
			continue
		}
		ours := func() bool {
			b, err := os.ReadFile("/proc/" + p + "/cmdline")
			if err != nil {
				return false // gone
			}
			s := string(b)
			return strings.Contains(s, script) || strings.Contains(s, "xdg-open")
		}
		deadline := time.Now().Add(10 * time.Second)
		for ours() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if ours() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			problems = append(problems, fmt.Sprintf("the browser process %d was still running 10 s after the run", pid))
		}
	}
	return problems
}

// cliFreePort returns a loopback port that was free a moment ago.
func cliFreePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
