package sse

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/backplane"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

type instance struct {
	srv *Server
	ts  *httptest.Server
	bp  *backplane.Backplane
}

// startInstances runs n SSE servers whose backplanes share one Azurite and
// one key, as handler instances do.
func startInstances(t *testing.T, n int) []*instance {
	return startInstancesWith(t, n, server.NewMCPServer("t", "1"))
}

// startInstancesWith is startInstances with m's tools on every instance.
func startInstancesWith(t *testing.T, n int, m *server.MCPServer) []*instance {
	t.Helper()
	az := testenv.StartAzurite(t)
	clients := az.Clients(t)
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	key := base64.StdEncoding.EncodeToString(k)
	var out []*instance
	for range n {
		bp, err := backplane.New(backplane.Options{Client: clients.Queue, Key: key, MinPoll: 10 * time.Millisecond, MaxPoll: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		if err := bp.Start(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		s, err := New(m, Options{
			MessagePath: "/mcp/message",
			KeepAlive:   time.Hour,
			MaxBody:     1 << 20,
			Backplane:   bp,
			Owner: func(r *http.Request) (string, bool) {
				u := r.Header.Get("X-User")
				return u, u != ""
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("/mcp/sse", s.StreamHandler())
		mux.Handle("/mcp/message", s.MessageHandler())
		ts := httptest.NewServer(mux)
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); bp.Run(runCtx, s.Deliver) }()
		t.Cleanup(func() {
			stop()
			<-done
			ts.Close()
			_ = bp.Close(context.Background())
		})
		out = append(out, &instance{srv: s, ts: ts, bp: bp})
	}
	return out
}

func TestForwardedMessagesAnswerOnTheOwnersStream(t *testing.T) {
	in := startInstances(t, 2)
	a, b := in[0], in[1]
	s, endpoint := open(t, a.ts, "alice")
	if !strings.Contains(endpoint, "&instance="+a.bp.ID()+"&sig=") {
		t.Fatalf("endpoint %q does not name the instance", endpoint)
	}

	// Messages through the other instance are answered once each. (They
	// are dispatched in the order they arrive and run concurrently, as MCP
	// allows, so answers may overtake each other.)
	const n = 20
	for i := range n {
		if code := post(t, b.ts.URL+endpoint, "alice", fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i)); code != 202 {
			t.Fatalf("post %d through b: %d", i, code)
		}
	}
	seen := map[int]bool{}
	for range n {
		ev, data := s.next(t)
		var m struct {
			ID     *int            `json:"id"`
			Result json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal([]byte(data), &m); ev != "message" || err != nil || m.ID == nil || m.Result == nil || seen[*m.ID] || *m.ID >= n {
			t.Fatalf("unexpected event %q %q", ev, data)
		}
		seen[*m.ID] = true
	}
	// Local posts still work beside forwarded ones.
	if code := post(t, a.ts.URL+endpoint, "alice", `{"jsonrpc":"2.0","id":99,"method":"ping"}`); code != 202 {
		t.Fatalf("local post: %d", code)
	}
	if _, data := s.next(t); !strings.Contains(data, `"id":99`) {
		t.Fatalf("local answer %q", data)
	}

	ping := `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	sid := strings.TrimPrefix(strings.SplitN(endpoint, "&", 2)[0], "/mcp/message?sessionId=")
	other, _ := backplane.New(backplane.Options{Client: offlineClient(t), Key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
	cases := []struct {
		name, url, user, body string
		want                  int
	}{
		{"other user", endpoint, "bob", ping, 403},
		{"no user", endpoint, "", ping, 403},
		{"no sig", strings.Split(endpoint, "&sig=")[0], "alice", ping, 400},
		{"altered sig", endpoint[:len(endpoint)-2] + "AA", "alice", ping, 403},
		{"sig of another key", strings.Split(endpoint, "&sig=")[0] + "&sig=" + other.Sign(a.bp.ID(), sid, "alice"), "alice", ping, 403},
		{"other instance named", strings.Replace(endpoint, a.bp.ID(), b.bp.ID(), 1), "alice", ping, 404},
		{"not json", endpoint, "alice", `{"jsonrpc":`, 400},
		{"too large for a queue message", endpoint, "alice", `{"pad":"` + strings.Repeat("x", 64<<10) + `"}`, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if code := post(t, b.ts.URL+c.url, c.user, c.body); code != c.want {
				t.Fatalf("status %d, want %d", code, c.want)
			}
		})
	}

	// Once the owner is gone (its queue deleted), its sessions are known to
	// be gone everywhere.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.bp.Close(ctx); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, "POST", b.ts.URL+endpoint, strings.NewReader(ping))
	req.Header.Set("X-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	_, _ = fmt.Fprint(&body, resp.Status)
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("post for a stopped instance's session: %s", body.String())
	}
}

// A forwarded message for a session that ended on a live instance is
// answered 404, like a local one; the instance keeps delivering the others.
func TestForwardedMessageForEndedSession(t *testing.T) {
	in := startInstances(t, 2)
	a, b := in[0], in[1]
	gone, goneEndpoint := open(t, a.ts, "alice")
	gone.body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for a.srv.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the closed stream's session stayed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, via := range []*instance{a, b} {
		if code := post(t, via.ts.URL+goneEndpoint, "alice", `{"jsonrpc":"2.0","id":1,"method":"ping"}`); code != 404 {
			t.Fatalf("post for an ended session on a live instance: %d, want 404", code)
		}
	}
	s, endpoint := open(t, a.ts, "alice")
	if code := post(t, b.ts.URL+endpoint, "alice", `{"jsonrpc":"2.0","id":2,"method":"ping"}`); code != 202 {
		t.Fatalf("post: %d", code)
	}
	if _, data := s.next(t); !strings.Contains(data, `"id":2`) {
		t.Fatalf("got %q", data)
	}
}

// A session with MaxInFlight messages being handled refuses more with 503,
// locally and through another instance, and takes them again once answers
// went out.
func TestBusySessionRefusesMore(t *testing.T) {
	release := make(chan struct{})
	m := server.NewMCPServer("t", "1", server.WithToolCapabilities(false))
	m.AddTool(mcp.NewTool("block"), func(ctx context.Context, _ mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return mcp.NewToolResultText("done"), nil
	})
	in := startInstancesWith(t, 2, m)
	a, b := in[0], in[1]
	s, endpoint := open(t, a.ts, "alice")
	call := func(id int) string {
		return fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"block"}}`, id)
	}
	init := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}`
	if code := post(t, a.ts.URL+endpoint, "alice", init); code != 202 {
		t.Fatalf("initialize: %d", code)
	}
	s.next(t)
	for i := 1; i <= MaxInFlight; i++ {
		via := a
		if i%2 == 0 {
			via = b
		}
		if code := post(t, via.ts.URL+endpoint, "alice", call(i)); code != 202 {
			t.Fatalf("call %d: %d", i, code)
		}
	}
	for _, via := range []*instance{a, b} {
		if code := post(t, via.ts.URL+endpoint, "alice", call(1000)); code != 503 {
			t.Fatalf("call over the limit through %s: %d, want 503", via.ts.URL, code)
		}
	}
	close(release)
	for range MaxInFlight {
		if _, data := s.next(t); !strings.Contains(data, `"done"`) {
			t.Fatalf("got %q", data)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for post(t, b.ts.URL+endpoint, "alice", call(2000)) != 202 {
		if time.Now().After(deadline) {
			t.Fatal("the session stayed busy after its messages were answered")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// offlineClient is a queue client that is never called.
func offlineClient(t *testing.T) *azqueue.ServiceClient {
	c, err := azqueue.NewServiceClientWithNoCredential("http://127.0.0.1:1/devstoreaccount1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An instance that is shutting down (its own streams closed) still
// forwards POSTs for sessions held elsewhere: its backplane runs until its
// HTTP server has drained.
func TestForwardingWhileShuttingDown(t *testing.T) {
	in := startInstances(t, 2)
	a, b := in[0], in[1]
	s, endpoint := open(t, a.ts, "alice")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if code := post(t, b.ts.URL+endpoint, "alice", `{"jsonrpc":"2.0","id":7,"method":"ping"}`); code != 202 {
		t.Fatalf("post through the stopping instance: %d, want 202", code)
	}
	if _, data := s.next(t); !strings.Contains(data, `"id":7`) {
		t.Fatalf("got %q", data)
	}
}
