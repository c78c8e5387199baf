package e2e

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth/authtest"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// stack is one handler with authentication on, against one Azurite.
type stack struct {
	Azurite testenv.Azurite
	Handler *proc
	Issuer  *authtest.Issuer
}

// startStack starts Azurite and the handler, which trusts a test issuer
// whose origin is the handler's own, as a gateway's would be.
func startStack(t testing.TB, extraEnv map[string]string) *stack {
	t.Helper()
	az := testenv.StartAzurite(t)
	port := freePort(t)
	origin := "http://127.0.0.1:" + strconv.Itoa(port)
	iss := authtest.NewIssuer(t, origin)
	env := map[string]string{
		"AzureWebJobsStorage": az.ConnectionString,
		"MCP_TOKEN_JWKS":      string(iss.JWKS()),
		"MCP_TOKEN_ISSUER":    origin,
		"MCP_RESOURCE_URL":    origin + "/mcp",
	}
	for k, v := range extraEnv {
		env[k] = v
	}
	return &stack{Azurite: az, Handler: startBinary(t, handlerBin, port, env), Issuer: iss}
}

// newUser returns a fresh (tenant, object) id pair.
func newUser() (tid, oid string) {
	return guid(), guid()
}

func guid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

var allTools = []string{"hello", "save_snippet", "get_snippet", "list_snippets", "delete_snippet",
	"queue_send", "queue_peek", "queue_receive", "queue_list"}

// TestToolsWithRealClients runs the whole tool surface through both client
// libraries over both transports.
func TestToolsWithRealClients(t *testing.T) {
	st := startStack(t, nil)
	for _, cm := range clientMatrix {
		t.Run(cm.name, func(t *testing.T) {
			tid, oid := newUser()
			tok := st.Issuer.Token(t, tid, oid)
			ctx := ctxTimeout(t, 60*time.Second)
			c, err := cm.connect(ctx, cm.transport, st.Handler.BaseURL+cm.path, tok)
			if err != nil {
				t.Fatalf("connect: %v", err)
			}
			defer c.Close()

			names, err := c.ListTools(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range allTools {
				if !slices.Contains(names, want) {
					t.Errorf("tools/list lacks %q (got %v)", want, names)
				}
			}

			call := func(name string, args map[string]any) toolResult {
				t.Helper()
				r, err := c.Call(ctx, name, args)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return r
			}
			wantError := func(r toolResult, contains string) {
				t.Helper()
				if !r.IsError {
					t.Fatalf("want an error result containing %q, got success %s", contains, r.Structured)
				}
				if !strings.Contains(strings.ToLower(r.Text), strings.ToLower(contains)) {
					t.Fatalf("error %q does not say %q", r.Text, contains)
				}
			}

			var who struct {
				Subject string `json:"subject"`
			}
			call("hello", nil).decode(t, &who)
			if who.Subject != tid+":"+oid {
				t.Errorf("hello subject = %q, want %s:%s", who.Subject, tid, oid)
			}

			// Snippets: save, read, conditional update, list, delete.
			var saved struct {
				ETag string `json:"etag"`
				Size int64  `json:"size"`
			}
			content := "# Notes\nline two ✓\n"
			call("save_snippet", map[string]any{"name": "notes.md", "content": content, "content_type": "text/markdown"}).decode(t, &saved)
			if saved.ETag == "" || saved.Size != int64(len(content)) {
				t.Fatalf("save: %+v", saved)
			}
			var got struct {
				Content     string `json:"content"`
				ContentType string `json:"content_type"`
				ETag        string `json:"etag"`
			}
			call("get_snippet", map[string]any{"name": "notes.md"}).decode(t, &got)
			if got.Content != content || got.ContentType != "text/markdown" || got.ETag != saved.ETag {
				t.Fatalf("get: %+v", got)
			}
			var second struct {
				ETag string `json:"etag"`
			}
			call("save_snippet", map[string]any{"name": "notes.md", "content": "v2", "if_match": saved.ETag}).decode(t, &second)
			wantError(call("save_snippet", map[string]any{"name": "notes.md", "content": "v3", "if_match": saved.ETag}), "etag")
			wantError(call("save_snippet", map[string]any{"name": "notes.md", "content": "v3", "create_only": true}), "exists")
			for i := range 3 {
				call("save_snippet", map[string]any{"name": fmt.Sprintf("page-%d", i), "content": "x"})
			}
			var page struct {
				Snippets []struct {
					Name string `json:"name"`
				} `json:"snippets"`
				NextCursor string `json:"next_cursor"`
			}
			call("list_snippets", map[string]any{"prefix": "page-", "limit": 2}).decode(t, &page)
			if len(page.Snippets) != 2 || page.NextCursor == "" {
				t.Fatalf("first page: %+v", page)
			}
			cursor := page.NextCursor
			page.Snippets, page.NextCursor = nil, ""
			call("list_snippets", map[string]any{"prefix": "page-", "limit": 2, "cursor": cursor}).decode(t, &page)
			if len(page.Snippets) != 1 || page.Snippets[0].Name != "page-2" || page.NextCursor != "" {
				t.Fatalf("second page: %+v", page)
			}
			call("delete_snippet", map[string]any{"name": "notes.md", "if_match": second.ETag})
			wantError(call("get_snippet", map[string]any{"name": "notes.md"}), "does not exist")

			// Bad arguments are tool errors, not protocol failures.
			wantError(call("get_snippet", map[string]any{"name": "../etc/passwd"}), "name")
			wantError(call("get_snippet", map[string]any{"name": "a/b"}), "name")
			wantError(call("get_snippet", map[string]any{"name": "bad\x00name"}), "name")
			wantError(call("get_snippet", map[string]any{"name": strings.Repeat("a", 129)}), "name")
			wantError(call("get_snippet", map[string]any{"name": 5}), "name")
			wantError(call("get_snippet", map[string]any{}), "name")
			wantError(call("save_snippet", map[string]any{"name": "big", "content": strings.Repeat("x", 256*1024+1)}), "256")
			wantError(call("queue_send", map[string]any{"queue": "Bad_Name", "message": "x"}), "queue")
			wantError(call("queue_send", map[string]any{"queue": "big", "message": strings.Repeat("x", 48*1024+1)}), "48")

			// Queues: send, peek, receive, list.
			for i := range 3 {
				call("queue_send", map[string]any{"queue": "tasks", "message": fmt.Sprintf(`{"task":%d}`, i)})
			}
			var peeked struct {
				Messages []struct {
					Text string `json:"text"`
				} `json:"messages"`
			}
			call("queue_peek", map[string]any{"queue": "tasks", "count": 32}).decode(t, &peeked)
			if len(peeked.Messages) != 3 || peeked.Messages[0].Text != `{"task":0}` {
				t.Fatalf("peek: %+v", peeked)
			}
			var received struct {
				Messages []struct {
					Text string `json:"text"`
				} `json:"messages"`
			}
			call("queue_receive", map[string]any{"queue": "tasks", "count": 2}).decode(t, &received)
			if len(received.Messages) != 2 {
				t.Fatalf("receive: %+v", received)
			}
			var listed struct {
				Queues []struct {
					Name  string `json:"name"`
					Count int    `json:"approximate_message_count"`
				} `json:"queues"`
			}
			call("queue_list", nil).decode(t, &listed)
			if len(listed.Queues) != 1 || listed.Queues[0].Name != "tasks" || listed.Queues[0].Count != 1 {
				t.Fatalf("queue_list: %+v", listed)
			}
			wantError(call("queue_peek", map[string]any{"queue": "nope"}), "does not exist")
		})
	}
}

// TestUsersAreIsolated checks that one user cannot see another's snippets
// or queues, with the same names on both sides.
func TestUsersAreIsolated(t *testing.T) {
	st := startStack(t, nil)
	ctx := ctxTimeout(t, 60*time.Second)
	connect := func() toolClient {
		tid, oid := newUser()
		c, err := connectMCPGo(ctx, "streamable", st.Handler.BaseURL+"/mcp", st.Issuer.Token(t, tid, oid))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	alice, bob := connect(), connect()
	if r, err := alice.Call(ctx, "save_snippet", map[string]any{"name": "secret", "content": "alice's"}); err != nil || r.IsError {
		t.Fatalf("alice save: %v %s", err, r.Text)
	}
	if r, err := alice.Call(ctx, "queue_send", map[string]any{"queue": "inbox", "message": "for alice"}); err != nil || r.IsError {
		t.Fatalf("alice send: %v %s", err, r.Text)
	}
	r, err := bob.Call(ctx, "get_snippet", map[string]any{"name": "secret"})
	if err != nil || !r.IsError {
		t.Fatalf("bob read alice's snippet: %v %+v", err, r)
	}
	r, _ = bob.Call(ctx, "list_snippets", nil)
	if strings.Contains(string(r.Structured), "secret") {
		t.Fatalf("bob lists alice's snippet: %s", r.Structured)
	}
	r, _ = bob.Call(ctx, "queue_peek", map[string]any{"queue": "inbox"})
	if !r.IsError {
		t.Fatalf("bob peeks alice's queue: %s", r.Structured)
	}
	r, _ = bob.Call(ctx, "queue_list", nil)
	if strings.Contains(string(r.Structured), "inbox") {
		t.Fatalf("bob lists alice's queue: %s", r.Structured)
	}
}

// TestConcurrentSnippetUpdates races clients on one etag: exactly one wins.
func TestConcurrentSnippetUpdates(t *testing.T) {
	st := startStack(t, nil)
	ctx := ctxTimeout(t, 60*time.Second)
	tid, oid := newUser()
	tok := st.Issuer.Token(t, tid, oid)
	c, err := connectSDK(ctx, "streamable", st.Handler.BaseURL+"/mcp", tok)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var first struct {
		ETag string `json:"etag"`
	}
	r, err := c.Call(ctx, "save_snippet", map[string]any{"name": "shared", "content": "v0"})
	if err != nil {
		t.Fatal(err)
	}
	r.decode(t, &first)

	const writers = 8
	var wg sync.WaitGroup
	results := make([]toolResult, writers)
	for i := range writers {
		wg.Go(func() {
			r, err := c.Call(ctx, "save_snippet", map[string]any{"name": "shared", "content": fmt.Sprintf("writer %d", i), "if_match": first.ETag})
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	winner := -1
	for i, r := range results {
		if !r.IsError {
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	var got struct {
		Content string `json:"content"`
	}
	r, err = c.Call(ctx, "get_snippet", map[string]any{"name": "shared"})
	if err != nil {
		t.Fatal(err)
	}
	r.decode(t, &got)
	if want := fmt.Sprintf("writer %d", winner); got.Content != want {
		t.Fatalf("content %q, want the winner's %q", got.Content, want)
	}
}
