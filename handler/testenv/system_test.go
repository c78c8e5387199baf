package testenv

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// contractNames are the named values of the front door contract.
var contractNames = []string{
	"GatewayUrl", "FunctionAppUrl", "FunctionKey", "InternalKey", "BrowserKey", "TokenSigningKey",
	"TokenSigningKid", "TokenJwks", "EntraAuthorizeUrl", "EntraTokenUrl", "EntraClientId",
	"EntraIssuerPrefix", "EntraAllowedTenants", "ManagedIdentityClientId", "TokenJwkN", "TokenJwkE",
}

// stubBundle writes a manifest of test-only operations, used where the
// front door's own policies are not the subject:
//   - GET /stub answers 200 "stub";
//   - GET /assertion answers the gateway's managed-identity token for
//     api://AzureADTokenExchange (the client assertion of the Entra app);
//   - GET /exchange?code=&verifier= redeems an Entra stand-in code with that
//     assertion, as the /oauth-callback policy does, and answers Entra's
//     response body with its status in X-Entra-Status.
func stubBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"stub.xml": `<policies>
    <inbound>
        <return-response>
            <set-status code="200" reason="OK" />
            <set-body>stub</set-body>
        </return-response>
    </inbound>
    <backend><forward-request /></backend>
    <outbound />
</policies>
`,
		"assertion.xml": `<policies>
    <inbound>
        <authentication-managed-identity resource="api://AzureADTokenExchange" client-id="{{ManagedIdentityClientId}}" output-token-variable-name="assertion" />
        <return-response>
            <set-status code="200" reason="OK" />
            <set-body>@((string)context.Variables["assertion"])</set-body>
        </return-response>
    </inbound>
    <backend><forward-request /></backend>
    <outbound />
</policies>
`,
		"exchange.xml": `<policies>
    <inbound>
        <authentication-managed-identity resource="api://AzureADTokenExchange" client-id="{{ManagedIdentityClientId}}" output-token-variable-name="assertion" />
        <send-request mode="new" response-variable-name="r" timeout="20">
            <set-url>{{EntraTokenUrl}}</set-url>
            <set-method>POST</set-method>
            <set-header name="Content-Type" exists-action="override">
                <value>application/x-www-form-urlencoded</value>
            </set-header>
            <set-body>@("grant_type=authorization_code&client_id={{EntraClientId}}" +
                "&redirect_uri=" + Uri.EscapeDataString("{{GatewayUrl}}/oauth-callback") +
                "&code=" + Uri.EscapeDataString(context.Request.Url.Query.GetValueOrDefault("code", "")) +
                "&code_verifier=" + Uri.EscapeDataString(context.Request.Url.Query.GetValueOrDefault("verifier", "")) +
                "&client_assertion_type=" + Uri.EscapeDataString("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") +
                "&client_assertion=" + (string)context.Variables["assertion"])</set-body>
        </send-request>
        <return-response>
            <set-status code="200" reason="OK" />
            <set-header name="X-Entra-Status" exists-action="override">
                <value>@(((IResponse)context.Variables["r"]).StatusCode.ToString())</value>
            </set-header>
            <set-body>@(((IResponse)context.Variables["r"]).Body.As<string>())</set-body>
        </return-response>
    </inbound>
    <backend><forward-request /></backend>
    <outbound />
</policies>
`,
	}
	manifest := map[string]any{"apis": []any{map[string]any{
		"name": "stub", "path": "", "serviceUrl": "{{FunctionAppUrl}}",
		"operations": []any{
			map[string]any{"name": "stub", "method": "GET", "urlTemplate": "/stub", "policy": "stub.xml"},
			map[string]any{"name": "assertion", "method": "GET", "urlTemplate": "/assertion", "policy": "assertion.xml"},
			map[string]any{"name": "exchange", "method": "GET", "urlTemplate": "/exchange", "policy": "exchange.xml"},
		},
	}}}
	b, _ := json.Marshal(manifest)
	files["apis.json"] = string(b)
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "apis.json")
}

var httpc = &http.Client{
	Timeout:       20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func get(t *testing.T, u string) (*http.Response, string) {
	t.Helper()
	resp, err := httpc.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, body := get(t, u)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %q %s; want 200 JSON", u, resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	return m
}

// TestStartSystem starts the system with the repository's manifest (a stub
// until apim-policies/apis.json exists), checks that every part answers,
// then stops it and checks that every port is closed and every process gone.
func TestStartSystem(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var opts SystemOptions
	_, err = os.Stat(filepath.Join(root, "apim-policies", "apis.json"))
	frontDoor := err == nil
	if !frontDoor {
		t.Log("apim-policies/apis.json does not exist yet: the gateway serves a stub manifest")
		opts.Manifest = stubBundle(t)
	}
	sys := StartSystem(t, opts)
	t.Logf("system started in %v: gateway %s, handler %s, Entra stand-in %s", sys.StartUp.Round(time.Millisecond), sys.GatewayURL, sys.HandlerURL, sys.EntraURL)

	for _, name := range contractNames {
		if sys.NamedValues[name] == "" {
			t.Errorf("named value %s is missing", name)
		}
	}
	var onDisk map[string]string
	if b, err := os.ReadFile(sys.NamedValuesFile); err != nil || json.Unmarshal(b, &onDisk) != nil || len(onDisk) != len(sys.NamedValues) {
		t.Errorf("%s does not hold the named values (%v)", sys.NamedValuesFile, err)
	}
	if !strings.HasPrefix(sys.GatewayURL, "http://localhost:") || sys.NamedValues["GatewayUrl"] != sys.GatewayURL || sys.ResourceURL() != sys.GatewayURL+"/mcp" {
		t.Errorf("GatewayURL %q, named value %q, resource %q", sys.GatewayURL, sys.NamedValues["GatewayUrl"], sys.ResourceURL())
	}

	// The gateway.
	if frontDoor {
		meta := getJSON(t, sys.GatewayURL+"/.well-known/oauth-authorization-server")
		if meta["issuer"] != sys.GatewayURL {
			t.Errorf("AS metadata issuer = %v, want %s", meta["issuer"], sys.GatewayURL)
		}
	} else if resp, body := get(t, sys.GatewayURL+"/stub"); resp.StatusCode != 200 || body != "stub" {
		t.Errorf("gateway GET /stub: %d %q", resp.StatusCode, body)
	}
	if keys, _ := getJSON(t, sys.GatewayURL+ManagedIdentityJWKSPath)["keys"].([]any); len(keys) != 1 {
		t.Errorf("managed-identity JWKS holds %d keys, want 1", len(keys))
	}
	// The Entra stand-in.
	disc := getJSON(t, sys.EntraURL+"/organizations/v2.0/.well-known/openid-configuration")
	if disc["authorization_endpoint"] != sys.NamedValues["EntraAuthorizeUrl"] || disc["token_endpoint"] != sys.NamedValues["EntraTokenUrl"] {
		t.Errorf("stand-in discovery %v does not match the named values", disc)
	}
	if disc["issuer"] != sys.NamedValues["EntraIssuerPrefix"]+"{tenantid}/v2.0" {
		t.Errorf("stand-in issuer %v", disc["issuer"])
	}
	// The handler, directly: alive, and with authentication on for the
	// gateway's resource.
	if resp, body := get(t, sys.HandlerURL+"/healthz"); resp.StatusCode != 200 {
		t.Errorf("handler /healthz: %d %s", resp.StatusCode, body)
	}
	wantChallenge := `Bearer resource_metadata="` + sys.GatewayURL + `/.well-known/oauth-protected-resource/mcp", scope="mcp.tools"`
	if resp, _ := get(t, sys.HandlerURL+"/mcp"); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != wantChallenge {
		t.Errorf("handler GET /mcp without a token: %d %q; want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), wantChallenge)
	}
	if frontDoor {
		if resp, _ := get(t, sys.ResourceURL()); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != wantChallenge {
			t.Errorf("gateway GET /mcp without a token: %d %q; want 401 %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), wantChallenge)
		}
	}

	hosts := []string{hostPort(sys.GatewayURL), hostPort(sys.HandlerURL), hostPort(sys.EntraURL), hostPort(sys.Azurite.BlobURL), hostPort(sys.Azurite.QueueURL)}
	pgids := sys.pgids()
	pgids = append(pgids, sys.Azurite.inst.pids()...)
	if len(pgids) != 5 {
		t.Errorf("%d processes, want 5 (gateway, handler, stand-in, Azurite blob and queue)", len(pgids))
	}
	for _, pgid := range pgids {
		if len(groupMembers(pgid)) == 0 && runtime.GOOS == "linux" {
			t.Errorf("process group %d is empty before Stop: the check below would prove nothing", pgid)
		}
	}
	start := time.Now()
	sys.Stop()
	t.Logf("stopped in %v", time.Since(start).Round(time.Millisecond))
	for _, h := range hosts {
		if c, err := net.DialTimeout("tcp", h, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections after Stop", h)
		}
	}
	for _, pgid := range pgids {
		if left := groupMembers(pgid); len(left) > 0 {
			t.Errorf("process group %d still has processes %v after Stop", pgid, left)
		}
	}
	sys.Stop() // idempotent
}

func (s *System) pgids() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, p := range s.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

func hostPort(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
}

// pkce returns a verifier and its S256 challenge.
func pkce() (string, string) {
	b := make([]byte, 32)
	rand.Read(b)
	v := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(v))
	return v, base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestEntraStandIn drives the stand-in the way the front door does, with
// client assertions minted by the gateway's managed identity, and checks
// the Entra behaviour the policies rely on.
func TestEntraStandIn(t *testing.T) {
	sys := StartSystem(t, SystemOptions{Manifest: stubBundle(t)})
	nv := sys.NamedValues
	callback := sys.GatewayURL + "/oauth-callback"

	// authorize signs in and returns the code (or the redirect's query).
	authorize := func(t *testing.T, change map[string]string) (*http.Response, url.Values) {
		t.Helper()
		q := url.Values{
			"client_id": {nv["EntraClientId"]}, "response_type": {"code"}, "redirect_uri": {callback},
			"scope": {"openid profile"}, "state": {"txn-1"}, "nonce": {"nonce-1"},
			"code_challenge_method": {"S256"},
		}
		for k, v := range change {
			if v == "" {
				q.Del(k)
			} else {
				q.Set(k, v)
			}
		}
		resp, _ := get(t, nv["EntraAuthorizeUrl"]+"?"+q.Encode())
		if resp.StatusCode != http.StatusFound {
			return resp, nil
		}
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || !strings.HasPrefix(loc.String(), callback+"?") {
			t.Fatalf("redirected to %q, want %s?…", resp.Header.Get("Location"), callback)
		}
		return resp, loc.Query()
	}
	assertion := func(t *testing.T) string {
		t.Helper()
		resp, body := get(t, sys.GatewayURL+"/assertion")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /assertion: %d %s", resp.StatusCode, body)
		}
		return body
	}
	token := func(t *testing.T, form url.Values) (int, map[string]any) {
		t.Helper()
		resp, err := httpc.PostForm(nv["EntraTokenUrl"], form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("token response: %v", err)
		}
		return resp.StatusCode, m
	}
	disc := getJSON(t, sys.EntraURL+"/organizations/v2.0/.well-known/openid-configuration")
	jwks := getJSON(t, disc["jwks_uri"].(string))
	verifyIDToken := func(t *testing.T, raw string) jwt.MapClaims {
		t.Helper()
		claims := jwt.MapClaims{}
		_, err := jwt.ParseWithClaims(raw, claims, func(tok *jwt.Token) (any, error) {
			for _, k := range jwks["keys"].([]any) {
				k := k.(map[string]any)
				if k["kid"] == tok.Header["kid"] {
					n, _ := base64.RawURLEncoding.DecodeString(k["n"].(string))
					e, _ := base64.RawURLEncoding.DecodeString(k["e"].(string))
					return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
				}
			}
			return nil, fmt.Errorf("no key %v", tok.Header["kid"])
		}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithAudience(nv["EntraClientId"]), jwt.WithExpirationRequired())
		if err != nil {
			t.Fatalf("id_token: %v", err)
		}
		return claims
	}

	t.Run("through the gateway", func(t *testing.T) {
		verifier, challenge := pkce()
		_, q := authorize(t, map[string]string{"code_challenge": challenge})
		if q.Get("state") != "txn-1" || q.Get("code") == "" {
			t.Fatalf("callback query %v", q)
		}
		resp, body := get(t, sys.GatewayURL+"/exchange?"+url.Values{"code": {q.Get("code")}, "verifier": {verifier}}.Encode())
		if resp.Header.Get("X-Entra-Status") != "200" {
			t.Fatalf("the stand-in refused the gateway's exchange: %s %s", resp.Header.Get("X-Entra-Status"), body)
		}
		var m map[string]any
		json.Unmarshal([]byte(body), &m)
		if _, ok := m["refresh_token"]; ok {
			t.Error("a refresh token without offline_access")
		}
		c := verifyIDToken(t, m["id_token"].(string))
		want := map[string]any{
			"iss": nv["EntraIssuerPrefix"] + LocalTenantID + "/v2.0", "tid": LocalTenantID, "oid": LocalObjectID,
			"name": LocalUserName, "preferred_username": LocalUserPreferredUsername, "nonce": "nonce-1", "ver": "2.0",
		}
		for k, v := range want {
			if c[k] != v {
				t.Errorf("id_token %s = %v, want %v", k, c[k], v)
			}
		}
		if s, _ := c["sub"].(string); len(s) < 20 {
			t.Errorf("id_token sub = %v", c["sub"])
		}
		// The same code again: Entra codes are single use.
		resp, body = get(t, sys.GatewayURL+"/exchange?"+url.Values{"code": {q.Get("code")}, "verifier": {verifier}}.Encode())
		if resp.Header.Get("X-Entra-Status") != "400" || !strings.Contains(body, `"invalid_grant"`) || !strings.Contains(body, "AADSTS54005") {
			t.Errorf("replayed code: %s %s", resp.Header.Get("X-Entra-Status"), body)
		}
	})

	t.Run("login_hint picks the user", func(t *testing.T) {
		const tid, oid = "72f988bf-86f1-41af-91ab-2d7cd011db47", "a1b2c3d4-0000-4000-8000-000000000042"
		verifier, challenge := pkce()
		_, q := authorize(t, map[string]string{"code_challenge": challenge, "login_hint": tid + ":" + oid + ":Ada Lovelace"})
		status, m := token(t, url.Values{
			"grant_type": {"authorization_code"}, "client_id": {nv["EntraClientId"]}, "code": {q.Get("code")},
			"redirect_uri": {callback}, "code_verifier": {verifier},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {assertion(t)},
		})
		if status != 200 {
			t.Fatalf("token: %d %v", status, m)
		}
		c := verifyIDToken(t, m["id_token"].(string))
		if c["tid"] != tid || c["oid"] != oid || c["name"] != "Ada Lovelace" || c["iss"] != nv["EntraIssuerPrefix"]+tid+"/v2.0" {
			t.Errorf("id_token claims %v", c)
		}
	})

	t.Run("token endpoint refusals", func(t *testing.T) {
		// A client assertion with the right claims from a key that is not the gateway's.
		other, _ := rsa.GenerateKey(rand.Reader, 2048)
		forged, _ := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{
			"iss": "https://local-gateway/managed-identity", "sub": GatewayManagedIdentityPrincipalID,
			"aud": "api://AzureADTokenExchange", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		}).SignedString(other)
		good := assertion(t)
		cases := []struct {
			name   string
			change map[string]string
			status int
			error  string
		}{
			{"client secret", map[string]string{"client_secret": "s3cret"}, 401, "invalid_client"},
			{"no assertion", map[string]string{"client_assertion": ""}, 401, "invalid_client"},
			{"wrong assertion type", map[string]string{"client_assertion_type": "x"}, 401, "invalid_client"},
			{"forged assertion", map[string]string{"client_assertion": forged}, 401, "invalid_client"},
			{"other client", map[string]string{"client_id": "00000000-1111-2222-3333-444444444444"}, 400, "unauthorized_client"},
			{"refresh grant", map[string]string{"grant_type": "refresh_token"}, 400, "unsupported_grant_type"},
			{"other redirect_uri", map[string]string{"redirect_uri": sys.GatewayURL + "/elsewhere"}, 400, "invalid_grant"},
			{"wrong verifier", map[string]string{"code_verifier": strings.Repeat("a", 43)}, 400, "invalid_grant"},
			{"no verifier", map[string]string{"code_verifier": ""}, 400, "invalid_request"},
			{"unknown code", map[string]string{"code": "nope"}, 400, "invalid_grant"},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				verifier, challenge := pkce()
				_, q := authorize(t, map[string]string{"code_challenge": challenge})
				form := url.Values{
					"grant_type": {"authorization_code"}, "client_id": {nv["EntraClientId"]}, "code": {q.Get("code")},
					"redirect_uri": {callback}, "code_verifier": {verifier},
					"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {good},
				}
				for k, v := range c.change {
					if v == "" {
						form.Del(k)
					} else {
						form.Set(k, v)
					}
				}
				status, m := token(t, form)
				desc, _ := m["error_description"].(string)
				if status != c.status || m["error"] != c.error || !strings.HasPrefix(desc, "AADSTS") {
					t.Errorf("%d %v; want %d %s with an AADSTS description", status, m, c.status, c.error)
				}
			})
		}
	})

	t.Run("authorize refusals", func(t *testing.T) {
		_, challenge := pkce()
		for _, c := range []struct {
			name   string
			change map[string]string
			page   bool   // an error page, no redirect
			error  string // else the error in the redirect
		}{
			{"unknown client", map[string]string{"client_id": "00000000-1111-2222-3333-444444444444"}, true, ""},
			{"unregistered redirect_uri", map[string]string{"redirect_uri": "http://localhost:1/cb"}, true, ""},
			{"plain PKCE", map[string]string{"code_challenge_method": "plain"}, false, "invalid_request"},
			{"no PKCE", map[string]string{"code_challenge_method": "", "code_challenge": ""}, false, "invalid_request"},
			{"resource parameter", map[string]string{"resource": sys.ResourceURL()}, false, "invalid_request"},
			{"token response type", map[string]string{"response_type": "token"}, false, "unsupported_response_type"},
			{"user cancels", map[string]string{"login_hint": "!access_denied"}, false, "access_denied"},
			{"malformed login_hint", map[string]string{"login_hint": "tenant:user"}, true, ""},
		} {
			t.Run(c.name, func(t *testing.T) {
				change := map[string]string{"code_challenge": challenge}
				for k, v := range c.change {
					change[k] = v
				}
				resp, q := authorize(t, change)
				if c.page {
					if resp.StatusCode != 400 {
						t.Errorf("status %d, want an error page (400)", resp.StatusCode)
					}
					return
				}
				if q == nil || q.Get("error") != c.error || q.Get("state") != "txn-1" || q.Get("code") != "" {
					t.Errorf("status %d, redirect query %v; want error=%s with the state", resp.StatusCode, q, c.error)
				}
			})
		}
	})
}

// TestStartSystemRetriesTakenPort: when another process takes a port between
// the pick and the listen, StartSystem stops what it started and tries again
// on other ports. Here the gateway's first port is taken on purpose.
func TestStartSystemRetriesTakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port
	calls := 0
	pickPorts = func(n int) ([]int, error) {
		calls++
		ports, err := freeLoopbackPorts(n)
		if calls == 1 && err == nil {
			ports[0] = takenPort
		}
		return ports, err
	}
	t.Cleanup(func() { pickPorts = freeLoopbackPorts })

	sys := StartSystem(t, SystemOptions{Manifest: stubBundle(t)})
	if calls != 2 {
		t.Errorf("%d attempts, want 2", calls)
	}
	if strings.HasSuffix(sys.GatewayURL, fmt.Sprintf(":%d", takenPort)) {
		t.Errorf("the gateway is on the taken port: %s", sys.GatewayURL)
	}
	if resp, body := get(t, sys.GatewayURL+"/stub"); resp.StatusCode != 200 || body != "stub" {
		t.Errorf("gateway GET /stub: %d %q", resp.StatusCode, body)
	}
	first := sys.pgids()[:3] // the processes of the failed attempt
	for _, pgid := range first {
		if left := groupMembers(pgid); len(left) > 0 {
			t.Errorf("process group %d of the failed attempt still has %v", pgid, left)
		}
	}
}
