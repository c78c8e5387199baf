package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// faultClient is one MCP client of the storage-fault test and its user.
type faultClient struct {
	name     string
	c        toolClient
	tid, oid string
}

// callFor calls a tool with its own generous timeout.
func callFor(ctx context.Context, c toolClient, d time.Duration, name string, args map[string]any) (toolResult, error) {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return c.Call(cctx, name, args)
}

// TestFaultStorageRestart runs three handler instances behind the
// round-robin proxy with SSE (mcp-go) and Streamable HTTP (go-sdk) clients,
// stops Azurite mid-run and starts it again.
//
// While storage is down, tools fail with a clear tool error ("cannot be
// reached") or, for an SSE POST that lands on an instance not holding the
// stream, the POST itself fails with 503 (the forward needs the Queue
// backplane); nothing hangs, panics or exits. Family checks are cached for
// the whole test (MCP_FAMILY_CHECK_SECONDS=300) so requests get past
// authentication to the tools: an uncached family check fails closed (503).
//
// Azurite runs in memory: the restart loses every blob and queue, including
// the oauth store's clients and families and the backplane queues. The
// handlers must re-create their containers and queues by themselves; tokens
// are issued anew through the internal API afterwards (which proves the
// oauth container is back). A snippet saved before the outage is then either
// intact or absent, never half-written; its survival is not asserted.
func TestFaultStorageRestart(t *testing.T) {
	so := startScaleOutEnv(t, 3, map[string]string{"MCP_FAMILY_CHECK_SECONDS": "300"})
	ctx := ctxTimeout(t, 6*time.Minute)

	connect := func(kind, tid, oid string) toolClient {
		t.Helper()
		tok, _ := so.TokenFor(t, tid, oid)
		var c toolClient
		var err error
		switch kind {
		case "sse":
			c, err = connectMCPGo(ctx, "sse", so.Proxy.URL+"/mcp/sse", tok)
		default:
			c, err = connectSDK(ctx, "streamable", so.Proxy.URL+"/mcp", tok)
		}
		if err != nil {
			t.Fatalf("%s client: %v", kind, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	var clients []*faultClient
	for i, kind := range []string{"sse", "sse", "streamable", "streamable"} {
		tid, oid := newUser()
		clients = append(clients, &faultClient{name: fmt.Sprintf("%s-%d", kind, i), c: connect(kind, tid, oid), tid: tid, oid: oid})
	}

	// Before: everything works, on every instance (several calls each, so
	// every instance caches every family).
	before := map[string]string{}
	for _, fc := range clients {
		content := "before:" + fc.name + ":" + guid()
		before[fc.name] = content
		for k := 0; k < 3; k++ {
			for _, step := range []struct {
				tool string
				args map[string]any
			}{
				{"hello", nil},
				{"save_snippet", map[string]any{"name": "before", "content": content}},
				{"get_snippet", map[string]any{"name": "before"}},
				{"queue_send", map[string]any{"queue": "before", "message": content}},
			} {
				r, err := callFor(ctx, fc.c, 60*time.Second, step.tool, step.args)
				if err != nil || r.IsError {
					t.Fatalf("%s before the outage: %s: %v %s", fc.name, step.tool, err, r.Text)
				}
			}
		}
	}

	so.Azurite.Stop()
	t.Log("Azurite stopped")

	// During: clear failures, no hang, no exit.
	toolErrors, postErrors := 0, 0
	for _, fc := range clients {
		for k, step := range []struct {
			tool string
			args map[string]any
		}{
			{"save_snippet", map[string]any{"name": "during", "content": "during:" + fc.name}},
			{"get_snippet", map[string]any{"name": "before"}},
			{"list_snippets", nil},
			{"queue_send", map[string]any{"queue": "during", "message": "x"}},
			{"queue_receive", map[string]any{"queue": "before"}},
		} {
			t0 := time.Now()
			r, err := callFor(ctx, fc.c, 90*time.Second, step.tool, step.args)
			took := time.Since(t0).Round(time.Millisecond)
			switch {
			case err != nil && ctx.Err() != nil:
				t.Fatalf("%s during the outage: %s: test timed out", fc.name, step.tool)
			case err != nil && strings.Contains(err.Error(), "deadline exceeded"):
				t.Errorf("%s during the outage: %s hung (no answer in %v)", fc.name, step.tool, took)
			case err != nil:
				// Only an SSE POST forwarded through the backplane may fail
				// at the HTTP level.
				postErrors++
				if !strings.HasPrefix(fc.name, "sse") || !strings.Contains(err.Error(), "503") {
					t.Errorf("%s during the outage: %s: unexpected error: %v", fc.name, step.tool, err)
				}
				if k == 0 {
					t.Logf("%s during the outage: %s: POST failed after %v: %v", fc.name, step.tool, took, err)
				}
			case !r.IsError:
				t.Errorf("%s during the outage: %s succeeded: %s", fc.name, step.tool, r.Structured)
			case !strings.Contains(r.Text, "cannot be reached"):
				t.Errorf("%s during the outage: %s: unclear tool error %q", fc.name, step.tool, r.Text)
			default:
				toolErrors++
				if k == 0 {
					t.Logf("%s during the outage: %s: tool error after %v: %s", fc.name, step.tool, took, r.Text)
				}
			}
		}
		// hello needs no storage; over SSE its POST may still need the
		// backplane.
		if r, err := callFor(ctx, fc.c, 90*time.Second, "hello", nil); err == nil && r.IsError {
			t.Errorf("%s during the outage: hello failed: %s", fc.name, r.Text)
		}
	}
	t.Logf("during the outage: %d tool errors, %d failed SSE POSTs", toolErrors, postErrors)
	if toolErrors == 0 {
		t.Error("no tool call failed with a clear tool error during the outage")
	}
	for i, h := range so.Handlers {
		select {
		case <-h.exited:
			t.Fatalf("handler %d exited during the outage:\n%s", i, h.Logs())
		default:
		}
	}

	so.Azurite.Restart()
	t.Log("Azurite restarted (in memory: empty)")
	crossedBefore := so.Proxy.crossed.Load()
	restarted := time.Now()

	// SSE sessions opened before the outage: their streams stayed open, and
	// they work again at once, although the backplane queues are gone until
	// each instance's next poll re-creates its own: a forward to a missing
	// queue waits for it while storage looks freshly emptied. Their tokens'
	// families are gone from storage but cached by every instance
	// (MCP_FAMILY_CHECK_SECONDS=300, and each client's calls before the
	// outage reached every instance).
	for _, fc := range clients {
		if !strings.HasPrefix(fc.name, "sse") {
			continue
		}
		for k := 0; k < 3; k++ {
			r, err := callFor(ctx, fc.c, 60*time.Second, "hello", nil)
			if err != nil || r.IsError {
				t.Errorf("%s (session from before the outage) call %d after the restart: %v %s", fc.name, k, err, r.Text)
			}
		}
	}
	t.Logf("sessions from before the outage answered %v after the restart", time.Since(restarted).Round(time.Millisecond))

	// Each instance re-created its own backplane queue.
	for i, h := range so.Handlers {
		deadline := time.Now().Add(90 * time.Second)
		for strings.Count(h.Logs(), "backplane queue ready") < 2 {
			if time.Now().After(deadline) {
				t.Fatalf("handler %d did not re-create its backplane queue:\n%s", i, h.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("backplane queues re-created %v after the restart", time.Since(restarted).Round(time.Millisecond))

	// The oauth store comes back: register a client again (the old
	// registration is gone) through the internal API.
	so.clientID = ""
	deadline := time.Now().Add(90 * time.Second)
	for {
		body, _ := json.Marshal(map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "client_name": "e2e"})
		resp, out := do(t, "POST", so.Handlers[0].BaseURL+"/internal/oauth/clients", "", string(body), map[string]string{"x-internal-key": so.key})
		if resp.StatusCode/100 == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the internal API did not recover after the restart: %d %s", resp.StatusCode, out)
		}
		time.Sleep(500 * time.Millisecond)
	}

	// After: fresh tokens for the same users, fresh clients; tools and the
	// backplane work again (retrying while the handlers re-create what the
	// restart lost).
	for _, fc := range clients {
		kind := strings.SplitN(fc.name, "-", 2)[0]
		fc.c = connect(kind, fc.tid, fc.oid)
		var got struct {
			Content string `json:"content"`
		}
		deadline := time.Now().Add(2 * time.Minute)
		var r toolResult
		var err error
		for {
			r, err = callFor(ctx, fc.c, 60*time.Second, "get_snippet", map[string]any{"name": "before"})
			if err == nil && (!r.IsError || strings.Contains(r.Text, "does not exist")) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after the restart: get_snippet still fails: %v %s", fc.name, err, r.Text)
			}
			time.Sleep(time.Second)
		}
		if r.IsError {
			t.Logf("%s after the restart: snippet saved before the outage is gone (in-memory Azurite)", fc.name)
		} else {
			if err := json.Unmarshal(r.Structured, &got); err != nil || got.Content != before[fc.name] {
				t.Errorf("%s after the restart: snippet saved before the outage is half-written: %q (%v)", fc.name, got.Content, err)
			}
		}
		if r, err := callFor(ctx, fc.c, 60*time.Second, "get_snippet", map[string]any{"name": "during"}); err != nil || (!r.IsError && !strings.Contains(string(r.Structured), "during:"+fc.name)) {
			t.Errorf("%s after the restart: snippet tried during the outage: %v %s %s", fc.name, err, r.Text, r.Structured)
		}
		// Every call now works, several times, so SSE POSTs cross
		// instances through the backplane.
		for k := 0; k < 4; k++ {
			content := fmt.Sprintf("after:%s:%d:%s", fc.name, k, guid())
			name := fmt.Sprintf("after-%d", k)
			for _, step := range []struct {
				tool string
				args map[string]any
			}{
				{"hello", nil},
				{"save_snippet", map[string]any{"name": name, "content": content}},
				{"queue_send", map[string]any{"queue": "after", "message": content}},
			} {
				r, err := callFor(ctx, fc.c, 60*time.Second, step.tool, step.args)
				if err != nil || r.IsError {
					t.Errorf("%s after the restart: %s: %v %s", fc.name, step.tool, err, r.Text)
				}
			}
			r, err := callFor(ctx, fc.c, 60*time.Second, "get_snippet", map[string]any{"name": name})
			if err != nil || r.IsError {
				t.Errorf("%s after the restart: get_snippet: %v %s", fc.name, err, r.Text)
			} else if err := json.Unmarshal(r.Structured, &got); err != nil || got.Content != content {
				t.Errorf("%s after the restart: get_snippet returned %q", fc.name, got.Content)
			}
			r, err = callFor(ctx, fc.c, 60*time.Second, "queue_receive", map[string]any{"queue": "after"})
			var recv struct {
				Messages []struct {
					Text string `json:"text"`
				} `json:"messages"`
			}
			if err != nil || r.IsError {
				t.Errorf("%s after the restart: queue_receive: %v %s", fc.name, err, r.Text)
			} else if err := json.Unmarshal(r.Structured, &recv); err != nil || len(recv.Messages) != 1 || recv.Messages[0].Text != content {
				t.Errorf("%s after the restart: queue_receive returned %s", fc.name, r.Structured)
			}
		}
	}
	for i, h := range so.Handlers {
		select {
		case <-h.exited:
			t.Errorf("handler %d exited:\n%s", i, h.Logs())
		default:
		}
		if strings.Contains(h.Logs(), "panic") {
			t.Errorf("handler %d logged a panic:\n%s", i, h.Logs())
		}
	}
	if n := so.Proxy.crossed.Load() - crossedBefore; n == 0 {
		t.Error("no SSE POST crossed instances after the restart")
	} else {
		t.Logf("%d SSE POSTs crossed instances after the restart", n)
	}
}
