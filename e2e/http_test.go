package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func do(t testing.TB, method, url, token, body string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}`

func TestUnauthorizedChallenges(t *testing.T) {
	st := startStack(t, nil)
	base := st.Handler.BaseURL
	tid, oid := newUser()
	expired := st.Issuer.User(tid, oid)
	expired.ExpiresAt = time.Now().Add(-time.Hour)
	expired.IssuedAt = time.Now().Add(-2 * time.Hour)
	expired.NotBefore = expired.IssuedAt

	cases := []struct {
		name, method, path, token string
		wantDoc                   string
		wantInvalid               bool
	}{
		{"no token /mcp", "POST", "/mcp", "", "/.well-known/oauth-protected-resource/mcp", false},
		{"no token /mcp/sse", "GET", "/mcp/sse", "", "/.well-known/oauth-protected-resource/mcp/sse", false},
		{"no token /mcp/message", "POST", "/mcp/message?sessionId=x", "", "/.well-known/oauth-protected-resource/mcp/sse", false},
		{"expired /mcp", "POST", "/mcp", st.Issuer.Mint(t, expired), "/.well-known/oauth-protected-resource/mcp", true},
		{"garbage /mcp/sse", "GET", "/mcp/sse", "not.a.jwt", "/.well-known/oauth-protected-resource/mcp/sse", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, c.method, base+c.path, c.token, initBody, nil)
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401; body %s", resp.StatusCode, body)
			}
			h := resp.Header.Get("WWW-Authenticate")
			wantPrefix := `Bearer resource_metadata="` + base + c.wantDoc + `", scope="mcp.tools"`
			if !strings.HasPrefix(h, wantPrefix) {
				t.Fatalf("WWW-Authenticate = %q, want prefix %q", h, wantPrefix)
			}
			if got := strings.Contains(h, `error="invalid_token"`); got != c.wantInvalid {
				t.Fatalf("WWW-Authenticate = %q: invalid_token present = %v, want %v", h, got, c.wantInvalid)
			}
		})
	}

	// The documents the challenges point at.
	for path, resource := range map[string]string{
		"/.well-known/oauth-protected-resource":         base,
		"/.well-known/oauth-protected-resource/mcp":     base + "/mcp",
		"/.well-known/oauth-protected-resource/mcp/sse": base + "/mcp/sse",
	} {
		resp, body := do(t, "GET", base+path, "", "", nil)
		var doc struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			ScopesSupported      []string `json:"scopes_supported"`
		}
		if err := json.Unmarshal([]byte(body), &doc); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
		if doc.Resource != resource || len(doc.AuthorizationServers) != 1 || doc.AuthorizationServers[0] != base ||
			len(doc.ScopesSupported) != 1 || doc.ScopesSupported[0] != "mcp.tools" {
			t.Fatalf("%s: %+v", path, doc)
		}
	}
}

func TestMalformedRequests(t *testing.T) {
	st := startStack(t, nil)
	tid, oid := newUser()
	tok := st.Issuer.Token(t, tid, oid)
	url := st.Handler.BaseURL + "/mcp"
	cases := []struct {
		name, body string
		wantStatus int
		wantCode   int // JSON-RPC error code, 0 when none expected
	}{
		{"not json", `{"jsonrpc":`, 400, -32700},
		{"unknown method", `{"jsonrpc":"2.0","id":7,"method":"no/such","params":{}}`, 200, -32601},
		{"wrong version", `{"jsonrpc":"1.0","id":7,"method":"ping"}`, 200, -32600},
		{"oversized", `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"` + strings.Repeat("x", 3<<20) + `"}}`, 413, -32600},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, "POST", url, tok, c.body, nil)
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.wantStatus, body)
			}
			var msg struct {
				Error *struct {
					Code int `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(sseData(body)), &msg); err != nil || msg.Error == nil || msg.Error.Code != c.wantCode {
				t.Fatalf("body %s: want JSON-RPC error %d", body, c.wantCode)
			}
			if strings.Contains(body, "goroutine") || strings.Contains(body, ".go:") {
				t.Fatalf("internals leaked: %s", body)
			}
		})
	}
}

// sseData returns the data of the first event when body is an event stream,
// else body.
func sseData(body string) string {
	for line := range strings.SplitSeq(body, "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			return d
		}
	}
	return body
}

func TestHostAndOriginChecks(t *testing.T) {
	st := startStack(t, map[string]string{"WEBSITE_HOSTNAME": "myapp.azurewebsites.net"})
	tid, oid := newUser()
	tok := st.Issuer.Token(t, tid, oid)
	url := st.Handler.BaseURL + "/mcp"
	cases := []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"loopback", nil, 200},
		{"localhost name", map[string]string{"Host": "localhost:1234"}, 200},
		{"public host forwarded over loopback", map[string]string{"Host": "127.0.0.1"}, 200},
		{"function app host", map[string]string{"Host": "myapp.azurewebsites.net"}, 200},
		{"rebinding host", map[string]string{"Host": "evil.example.com"}, 403},
		{"loopback origin", map[string]string{"Origin": "http://localhost:6274"}, 200},
		{"public origin", map[string]string{"Origin": st.Handler.BaseURL}, 200},
		{"foreign origin", map[string]string{"Origin": "https://evil.example.com"}, 403},
		{"null origin", map[string]string{"Origin": "null"}, 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := do(t, "POST", url, tok, initBody, c.hdr)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.want, body)
			}
		})
	}
}

// openSSE opens a stream and returns the message URL of its endpoint event.
func openSSE(t testing.TB, base, token string) (string, *bufio.Reader, func()) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", base+"/mcp/sse", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("open stream: %d", resp.StatusCode)
	}
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading endpoint event: %v", err)
		}
		if d, ok := strings.CutPrefix(strings.TrimSpace(line), "data: "); ok {
			return base + d, rd, func() { resp.Body.Close() }
		}
	}
}

func TestSSESessionBelongsToItsUser(t *testing.T) {
	st := startStack(t, nil)
	atid, aoid := newUser()
	btid, boid := newUser()
	alice, bob := st.Issuer.Token(t, atid, aoid), st.Issuer.Token(t, btid, boid)
	msgURL, _, closeStream := openSSE(t, st.Handler.BaseURL, alice)
	defer closeStream()
	if !strings.Contains(msgURL, "/mcp/message?sessionId=") {
		t.Fatalf("endpoint %q", msgURL)
	}
	resp, body := do(t, "POST", msgURL, bob, initBody, nil)
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob posting to alice's session: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", msgURL, alice, initBody, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("alice posting to her session: %d %s", resp.StatusCode, body)
	}
	resp, body = do(t, "POST", st.Handler.BaseURL+"/mcp/message?sessionId=nosuchsession", alice, initBody, nil)
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown session: %d %s", resp.StatusCode, body)
	}
}

func TestStartupRefusesMissingKeys(t *testing.T) {
	cmd := exec.Command(handlerBin)
	cmd.Env = []string{"FUNCTIONS_CUSTOMHANDLER_PORT=1", "AzureWebJobsStorage=UseDevelopmentStorage=true", "MCP_RESOURCE_URL=https://gw.example/mcp", "MCP_TOKEN_ISSUER=https://gw.example"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		t.Fatal("handler started without MCP_TOKEN_JWKS")
	}
	if !strings.Contains(out.String(), "MCP_TOKEN_JWKS") {
		t.Fatalf("error does not name the setting: %s", out.String())
	}
	// A key set that is not usable is refused too.
	cmd = exec.Command(handlerBin)
	cmd.Env = append(cmd.Env[:0:0], "FUNCTIONS_CUSTOMHANDLER_PORT=1", "AzureWebJobsStorage=UseDevelopmentStorage=true",
		"MCP_RESOURCE_URL=https://gw.example/mcp", "MCP_TOKEN_ISSUER=https://gw.example", `MCP_TOKEN_JWKS={"keys":[]}`)
	out.Reset()
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err == nil || !strings.Contains(out.String(), "MCP_TOKEN_JWKS") {
		t.Fatalf("empty key set: err=%v out=%s", err, out.String())
	}
}

func TestAuthOffIsLoudAndLocal(t *testing.T) {
	st := startStack(t, map[string]string{"MCP_AUTH": "off"})
	if !strings.Contains(st.Handler.Logs(), "AUTHENTICATION IS OFF") {
		t.Fatalf("no warning logged:\n%s", st.Handler.Logs())
	}
	ctx := ctxTimeout(t, 30*time.Second)
	c, err := connectMCPGo(ctx, "streamable", st.Handler.BaseURL+"/mcp", "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.Call(ctx, "hello", nil)
	if err != nil {
		t.Fatal(err)
	}
	var who struct {
		AuthMode string `json:"auth_mode"`
	}
	r.decode(t, &who)
	if who.AuthMode != "local" {
		t.Fatalf("auth_mode %q", who.AuthMode)
	}
}

// TestStorageOutage stops Azurite under a connected client: tools fail with
// a clear error, then work again once storage is back.
func TestStorageOutage(t *testing.T) {
	st := startStack(t, nil)
	ctx := ctxTimeout(t, 90*time.Second)
	tid, oid := newUser()
	c, err := connectMCPGo(ctx, "streamable", st.Handler.BaseURL+"/mcp", st.Issuer.Token(t, tid, oid))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Call(ctx, "save_snippet", map[string]any{"name": "before", "content": "x"}); err != nil || r.IsError {
		t.Fatalf("save before outage: %v %s", err, r.Text)
	}
	st.Azurite.Stop()
	for _, call := range []struct {
		tool string
		args map[string]any
	}{
		{"save_snippet", map[string]any{"name": "during", "content": "x"}},
		{"queue_send", map[string]any{"queue": "q", "message": "x"}},
		{"list_snippets", nil},
	} {
		r, err := c.Call(ctx, call.tool, call.args)
		if err != nil {
			t.Fatalf("%s during outage: protocol error %v (want a tool error)", call.tool, err)
		}
		if !r.IsError || !strings.Contains(r.Text, "cannot be reached") {
			t.Fatalf("%s during outage: %+v", call.tool, r)
		}
		if strings.Contains(r.Text, "127.0.0.1") || strings.Contains(r.Text, "devstoreaccount1") {
			t.Fatalf("storage address leaked: %s", r.Text)
		}
	}
	st.Azurite.Restart()
	// Azurite restarts empty (in-memory), so the container has to come back
	// by itself: save must work without a handler restart.
	r, err := c.Call(ctx, "save_snippet", map[string]any{"name": "after", "content": "y"})
	if err != nil || r.IsError {
		t.Fatalf("save after outage: %v %s", err, r.Text)
	}
}

// TestGracefulShutdown sends SIGTERM with an SSE stream open: the stream
// ends (so the client reconnects elsewhere) and the process exits cleanly.
func TestGracefulShutdown(t *testing.T) {
	st := startStack(t, nil)
	tid, oid := newUser()
	_, rd, closeStream := openSSE(t, st.Handler.BaseURL, st.Issuer.Token(t, tid, oid))
	defer closeStream()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, rd)
		ended <- err
	}()
	if err := st.Handler.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SSE stream still open 10 s after SIGTERM")
	}
	select {
	case <-st.Handler.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("handler still running 10 s after SIGTERM")
	}
	if code := st.Handler.ExitCode(); code != 0 {
		t.Fatalf("exit code %d:\n%s", code, st.Handler.Logs())
	}
}
