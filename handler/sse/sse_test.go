package sse

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mark3labs/mcp-go/server"
)

// newTestServer serves the transport with the caller named by X-User.
func newTestServer(t *testing.T, keepAlive time.Duration) (*Server, *httptest.Server) {
	t.Helper()
	s, err := New(server.NewMCPServer("t", "1"), Options{
		MessagePath: "/mcp/message",
		KeepAlive:   keepAlive,
		MaxBody:     1024,
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
	t.Cleanup(ts.Close)
	return s, ts
}

type stream struct {
	rd   *bufio.Reader
	body interface{ Close() error }
}

func open(t *testing.T, ts *httptest.Server, user string) (*stream, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "GET", ts.URL+"/mcp/sse", nil)
	req.Header.Set("X-User", user)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("open: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{rd: bufio.NewReader(resp.Body), body: resp.Body}
	ev, data := s.next(t)
	if ev != "endpoint" || !strings.HasPrefix(data, "/mcp/message?sessionId=") {
		t.Fatalf("first event %q %q", ev, data)
	}
	if id := strings.TrimPrefix(data, "/mcp/message?sessionId="); len(id) < 43 {
		t.Fatalf("session id %q is shorter than 256 bits", id)
	}
	return s, data
}

// next returns the next event, or ("comment", text) for a comment line.
func (s *stream) next(t *testing.T) (event, data string) {
	t.Helper()
	for {
		line, err := s.rd.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case strings.HasPrefix(line, ":"):
			return "comment", strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		case line == "" && event != "":
			return event, data
		}
	}
}

func post(t *testing.T, url, user, body string) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), "POST", url, strings.NewReader(body))
	if user != "" {
		req.Header.Set("X-User", user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestMessagesAnswerOnTheStream(t *testing.T) {
	_, ts := newTestServer(t, time.Hour)
	s, endpoint := open(t, ts, "alice")
	if code := post(t, ts.URL+endpoint, "alice", `{"jsonrpc":"2.0","id":42,"method":"ping"}`); code != 202 {
		t.Fatalf("post: %d", code)
	}
	ev, data := s.next(t)
	if ev != "message" || !strings.Contains(data, `"id":42`) || !strings.Contains(data, `"result"`) {
		t.Fatalf("got %q %q", ev, data)
	}
}

func TestMessageRefusals(t *testing.T) {
	_, ts := newTestServer(t, time.Hour)
	_, endpoint := open(t, ts, "alice")
	cases := []struct {
		name, url, user, body string
		want                  int
	}{
		{"other user", endpoint, "bob", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, 403},
		{"no user", endpoint, "", `{"jsonrpc":"2.0","id":1,"method":"ping"}`, 403},
		{"unknown session", "/mcp/message?sessionId=nope", "alice", `{}`, 404},
		{"no session", "/mcp/message", "alice", `{}`, 400},
		{"not json", endpoint, "alice", `{"jsonrpc":`, 400},
		{"too large", endpoint, "alice", `{"pad":"` + strings.Repeat("x", 2048) + `"}`, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if code := post(t, ts.URL+c.url, c.user, c.body); code != c.want {
				t.Fatalf("status %d, want %d", code, c.want)
			}
		})
	}
	resp, err := http.Get(ts.URL + endpoint)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Fatalf("GET on message endpoint: %d", resp.StatusCode)
	}
}

func TestKeepAlive(t *testing.T) {
	_, ts := newTestServer(t, 20*time.Millisecond)
	s, _ := open(t, ts, "alice")
	if ev, data := s.next(t); ev != "comment" || data != "keep-alive" {
		t.Fatalf("got %q %q", ev, data)
	}
}

func TestShutdownEndsStreams(t *testing.T) {
	srv, ts := newTestServer(t, time.Hour)
	s, endpoint := open(t, ts, "alice")
	if srv.Sessions() != 1 {
		t.Fatalf("sessions %d", srv.Sessions())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.rd.ReadString('\n'); err == nil {
		t.Fatal("stream still open after shutdown")
	}
	if code := post(t, ts.URL+endpoint, "alice", `{"jsonrpc":"2.0","id":1,"method":"ping"}`); code != 404 && code != 503 {
		t.Fatalf("post after shutdown: %d", code)
	}
	// A new stream is refused so the client reconnects elsewhere.
	req, _ := http.NewRequest("GET", ts.URL+"/mcp/sse", nil)
	req.Header.Set("X-User", "alice")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Fatalf("open after shutdown: %d", resp.StatusCode)
	}
}
