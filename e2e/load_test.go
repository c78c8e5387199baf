package e2e

import (
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"
)

// TestLoadMixed is a bounded load test on loopback: three handler instances
// behind the round-robin proxy, loadClients clients over both transports
// (SSE with mcp-go, Streamable HTTP alternately with mcp-go and go-sdk),
// each doing loadIterations rounds of hello, save_snippet, get_snippet,
// queue_send and, now and then, list_snippets and queue_receive. Clients
// come in pairs sharing a user (one SSE, one Streamable HTTP), so the two
// send to and receive from the same queue concurrently.
//
// Asserted: no call fails at all; every snippet written reads back with
// the content written, and lists complete; every queue message sent is
// received exactly once (each payload is unique) and none is left over.
// Nothing is timed.
func TestLoadMixed(t *testing.T) {
	const loadClients, loadIterations = 8, 40
	so := startScaleOut(t, 3)
	ctx := ctxTimeout(t, 8*time.Minute)

	type loadClient struct {
		name    string
		c       toolClient
		sub     string
		pair    int
		saved   map[string]string // snippet name -> content
		sent    []string
		recv    []string
		errs    []string
		calls   int
		started time.Time
	}
	var clients []*loadClient
	var users [][2]string
	for i := range loadClients {
		if i%2 == 0 {
			tid, oid := newUser()
			users = append(users, [2]string{tid, oid})
		}
		u := users[i/2]
		tok, sub := so.TokenFor(t, u[0], u[1])
		var c toolClient
		var err error
		var name string
		switch {
		case i%2 == 0:
			name = fmt.Sprintf("c%d/mcp-go/sse", i)
			c, err = connectMCPGo(ctx, "sse", so.Proxy.URL+"/mcp/sse", tok)
		case i%4 == 1:
			name = fmt.Sprintf("c%d/mcp-go/streamable", i)
			c, err = connectMCPGo(ctx, "streamable", so.Proxy.URL+"/mcp", tok)
		default:
			name = fmt.Sprintf("c%d/go-sdk/streamable", i)
			c, err = connectSDK(ctx, "streamable", so.Proxy.URL+"/mcp", tok)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		clients = append(clients, &loadClient{name: name, c: c, sub: sub, pair: i / 2, saved: map[string]string{}})
	}

	type received struct {
		Messages []struct {
			Text         string `json:"text"`
			DequeueCount int64  `json:"dequeue_count"`
		} `json:"messages"`
	}
	call := func(lc *loadClient, tool string, args map[string]any, v any) bool {
		r, err := callFor(ctx, lc.c, 90*time.Second, tool, args)
		lc.calls++
		switch {
		case err != nil:
			lc.errs = append(lc.errs, fmt.Sprintf("%s: %v", tool, err))
			return false
		case r.IsError:
			lc.errs = append(lc.errs, fmt.Sprintf("%s: tool error: %s", tool, r.Text))
			return false
		case v != nil:
			if err := json.Unmarshal(r.Structured, v); err != nil {
				lc.errs = append(lc.errs, fmt.Sprintf("%s: decoding %s: %v", tool, r.Structured, err))
				return false
			}
		}
		return true
	}
	receive := func(lc *loadClient, count int) int {
		var got received
		if !call(lc, "queue_receive", map[string]any{"queue": "shared", "count": count, "visibility_timeout_seconds": 300}, &got) {
			return -1
		}
		for _, m := range got.Messages {
			lc.recv = append(lc.recv, m.Text)
			if m.DequeueCount != 1 {
				lc.errs = append(lc.errs, fmt.Sprintf("queue_receive: %q redelivered (dequeue_count %d)", m.Text, m.DequeueCount))
			}
		}
		return len(got.Messages)
	}

	start := time.Now()
	var wg sync.WaitGroup
	for _, lc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.started = time.Now()
			for it := range loadIterations {
				if ctx.Err() != nil {
					lc.errs = append(lc.errs, "test timed out")
					return
				}
				var who struct {
					Subject string `json:"subject"`
				}
				if call(lc, "hello", nil, &who) && who.Subject != lc.sub {
					lc.errs = append(lc.errs, fmt.Sprintf("hello: subject %q, want %q", who.Subject, lc.sub))
				}
				name := fmt.Sprintf("%s-%d", lc.name[:2], it)
				content := fmt.Sprintf("%s iteration %d %s", lc.name, it, guid())
				if call(lc, "save_snippet", map[string]any{"name": name, "content": content}, nil) {
					lc.saved[name] = content
				}
				var got struct {
					Content string `json:"content"`
				}
				if call(lc, "get_snippet", map[string]any{"name": name}, &got) && got.Content != content {
					lc.errs = append(lc.errs, fmt.Sprintf("get_snippet %s: %q, want %q", name, got.Content, content))
				}
				msg := fmt.Sprintf("%s message %d %s", lc.name, it, guid())
				if call(lc, "queue_send", map[string]any{"queue": "shared", "message": msg}, nil) {
					lc.sent = append(lc.sent, msg)
				}
				if it%3 == 2 {
					_ = call(lc, "list_snippets", map[string]any{"prefix": lc.name[:2] + "-", "limit": 100}, nil)
				}
				if it%2 == 1 {
					receive(lc, 3)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	// Drain each pair's queue, then check it all.
	for _, lc := range clients {
		if lc.pair*2 != indexOf(clients, lc) {
			continue
		}
		empty := 0
		for empty < 3 && ctx.Err() == nil {
			switch n := receive(lc, 32); {
			case n < 0:
				empty = 3
			case n == 0:
				empty++
				time.Sleep(200 * time.Millisecond)
			default:
				empty = 0
			}
		}
	}
	totalCalls, totalSent := 0, 0
	for pair := 0; pair < loadClients/2; pair++ {
		a, b := clients[2*pair], clients[2*pair+1]
		sent := map[string]int{}
		for _, m := range append(append([]string{}, a.sent...), b.sent...) {
			sent[m]++
		}
		got := map[string]int{}
		for _, m := range append(append([]string{}, a.recv...), b.recv...) {
			got[m]++
		}
		for m := range sent {
			switch got[m] {
			case 1:
			case 0:
				t.Errorf("pair %d: message %q was lost", pair, m)
			default:
				t.Errorf("pair %d: message %q received %d times", pair, m, got[m])
			}
		}
		for m := range got {
			if sent[m] == 0 {
				t.Errorf("pair %d: received %q, which nobody sent", pair, m)
			}
		}
		totalSent += len(sent)
	}
	for _, lc := range clients {
		// Every snippet reads back intact, and the list has them all.
		for name, content := range lc.saved {
			var got struct {
				Content string `json:"content"`
			}
			if call(lc, "get_snippet", map[string]any{"name": name}, &got) && got.Content != content {
				t.Errorf("%s: snippet %s reads back as %q, want %q", lc.name, name, got.Content, content)
			}
		}
		var page struct {
			Snippets []struct {
				Name string `json:"name"`
			} `json:"snippets"`
			NextCursor string `json:"next_cursor"`
		}
		if call(lc, "list_snippets", map[string]any{"prefix": lc.name[:2] + "-", "limit": 100}, &page) {
			var names, want []string
			for _, s := range page.Snippets {
				names = append(names, s.Name)
			}
			for n := range lc.saved {
				want = append(want, n)
			}
			sort.Strings(names)
			sort.Strings(want)
			if fmt.Sprint(names) != fmt.Sprint(want) || page.NextCursor != "" {
				t.Errorf("%s: list_snippets %v, want %v", lc.name, names, want)
			}
		}
		if len(lc.saved) != loadIterations || len(lc.sent) != loadIterations {
			t.Errorf("%s: %d snippets and %d messages written, want %d each", lc.name, len(lc.saved), len(lc.sent), loadIterations)
		}
		for _, e := range lc.errs {
			t.Errorf("%s: %s", lc.name, e)
		}
		totalCalls += lc.calls
	}
	t.Logf("%d clients × %d iterations: %d tool calls, %d snippets, %d queue messages in %v (%.0f calls/s); %d SSE POSTs crossed instances",
		loadClients, loadIterations, totalCalls, loadClients*loadIterations, totalSent, elapsed.Round(time.Millisecond),
		float64(totalCalls)/elapsed.Seconds(), so.Proxy.crossed.Load())
}

func indexOf[T comparable](s []T, v T) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}
