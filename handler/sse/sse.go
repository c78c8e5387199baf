// Package sse serves MCP's legacy HTTP+SSE transport: a GET opens an event
// stream whose first event names a message URL, and the client POSTs its
// JSON-RPC messages there; answers come back on the stream.
//
// mcp-go ships an SSE server, but it cannot bind a session to the user who
// opened it, sends keep-alives as JSON-RPC pings the client must answer, and
// cannot hand a session's messages to another instance; this package owns the
// session table so that it can do all three.
package sse

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/backplane"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// DefaultKeepAlive is below every idle timeout between a client and the
// handler (Azure's load balancers drop idle connections at about 230 s, some
// proxies at 60 s).
const DefaultKeepAlive = 25 * time.Second

// Options configures a Server.
type Options struct {
	// MessagePath is the path clients POST to, as seen by the client, e.g.
	// "/mcp/message". It is handed out relative to the stream's URL so that
	// it keeps working behind the gateway.
	MessagePath string
	// KeepAlive is the interval of SSE comment lines on an idle stream.
	// Zero means DefaultKeepAlive.
	KeepAlive time.Duration
	// Owner returns who is making the request; a session only accepts
	// messages from the owner that opened it.
	Owner func(r *http.Request) (string, bool)
	// MaxBody bounds a posted message. Zero means 4 MiB.
	MaxBody int64
	Logger  *slog.Logger
	// Backplane, if set, makes sessions reachable from every instance: the
	// message URL names this instance with a MAC, a POST for a session held
	// elsewhere is forwarded to its owner, and Deliver takes forwarded
	// messages in. Nil: sessions are reachable on this instance only.
	Backplane *backplane.Backplane
}

// Server holds the sessions of one handler instance.
type Server struct {
	mcp  *server.MCPServer
	opts Options

	mu       sync.Mutex
	sessions map[string]*session
	closing  chan struct{}
	closed   bool
	inflight sync.WaitGroup
}

// New returns a Server that dispatches messages to m.
func New(m *server.MCPServer, opts Options) (*Server, error) {
	if opts.MessagePath == "" || opts.Owner == nil {
		return nil, errors.New("sse: MessagePath and Owner are required")
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = DefaultKeepAlive
	}
	if opts.MaxBody <= 0 {
		opts.MaxBody = 4 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{mcp: m, opts: opts, sessions: map[string]*session{}, closing: make(chan struct{})}, nil
}

// MaxInFlight bounds the messages of one session being handled at once;
// more are refused (503) rather than queued without limit.
const MaxInFlight = 64

type session struct {
	id     string
	owner  string
	events chan []byte
	notes  chan mcp.JSONRPCNotification
	// base carries the stream request's values (the caller's identity)
	// without its cancellation: forwarded messages run with it, since they
	// come from the same user (the forwarder checked the MAC, Deliver the
	// subject).
	base context.Context
	// busy counts messages being handled, local and forwarded alike.
	busy  atomic.Int32
	done  chan struct{}
	once  sync.Once
	init  atomic.Bool
	level atomic.Value // mcp.LoggingLevel
}

func (s *session) SessionID() string                                   { return s.id }
func (s *session) NotificationChannel() chan<- mcp.JSONRPCNotification { return s.notes }
func (s *session) Initialize()                                         { s.init.Store(true) }
func (s *session) Initialized() bool                                   { return s.init.Load() }
func (s *session) SetLogLevel(l mcp.LoggingLevel)                      { s.level.Store(l) }
func (s *session) GetLogLevel() mcp.LoggingLevel {
	if l, ok := s.level.Load().(mcp.LoggingLevel); ok {
		return l
	}
	return mcp.LoggingLevelError
}
func (s *session) close() { s.once.Do(func() { close(s.done) }) }

var (
	_ server.ClientSession      = (*session)(nil)
	_ server.SessionWithLogging = (*session)(nil)
)

// newSessionID returns 256 random bits; the id is the only thing that lets a
// POST reach a stream, so it must not be guessable.
func newSessionID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return base64.RawURLEncoding.EncodeToString(b)
}

// Sessions reports the number of open streams.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// StreamHandler opens an event stream (GET).
func (s *Server) StreamHandler() http.Handler {
	return http.HandlerFunc(s.serveStream)
}

// MessageHandler accepts a client message (POST).
func (s *Server) MessageHandler() http.Handler {
	return http.HandlerFunc(s.serveMessage)
}

func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		writeError(w, http.StatusMethodNotAllowed, "the SSE endpoint accepts GET only; POST messages to the URL of the endpoint event")
		return
	}
	owner, ok := s.opts.Owner(r)
	if !ok {
		writeError(w, http.StatusUnauthorized, "no caller identity")
		return
	}
	rc := http.NewResponseController(w)

	sess := &session{
		id:     newSessionID(),
		owner:  owner,
		events: make(chan []byte, 64),
		notes:  make(chan mcp.JSONRPCNotification, 64),
		base:   context.WithoutCancel(r.Context()),
		done:   make(chan struct{}),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeError(w, http.StatusServiceUnavailable, "server is shutting down; reconnect")
		return
	}
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, sess.id)
		s.mu.Unlock()
		sess.close()
	}()
	if err := s.mcp.RegisterSession(r.Context(), sess); err != nil {
		writeError(w, http.StatusInternalServerError, "could not open a session")
		return
	}
	defer s.mcp.UnregisterSession(r.Context(), sess.id)

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // keep reverse proxies from buffering the stream
	w.WriteHeader(http.StatusOK)
	endpoint := s.opts.MessagePath + "?sessionId=" + sess.id
	if bp := s.opts.Backplane; bp != nil {
		// Session ids and MACs are base64url and instance ids lowercase
		// alphanumerics: nothing to escape.
		endpoint += "&instance=" + bp.ID() + "&sig=" + bp.Sign(bp.ID(), sess.id, owner)
		// Poll for forwarded messages briskly while the session lives.
		defer bp.Listen()()
	}
	if _, err := fmt.Fprintf(w, "event: endpoint\ndata: %s\n\n", endpoint); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	s.opts.Logger.Debug("sse stream opened", "sessions", s.Sessions())

	ticker := time.NewTicker(s.opts.KeepAlive)
	defer ticker.Stop()
	for {
		var frame []byte
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case frame = <-sess.events:
		case n := <-sess.notes:
			b, err := json.Marshal(n)
			if err != nil {
				s.opts.Logger.Error("sse: encoding notification", "err", err)
				continue
			}
			frame = messageEvent(b)
		case <-ticker.C:
			frame = []byte(": keep-alive\n\n")
		}
		if _, err := w.Write(frame); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func messageEvent(data []byte) []byte {
	out := make([]byte, 0, len(data)+24)
	out = append(out, "event: message\ndata: "...)
	out = append(out, data...)
	return append(out, "\n\n"...)
}

func (s *Server) serveMessage(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, http.StatusMethodNotAllowed, "the message endpoint accepts POST only")
		return
	}
	id := r.URL.Query().Get("sessionId")
	if id == "" {
		writeError(w, http.StatusBadRequest, "missing sessionId query parameter; use the URL of the stream's endpoint event")
		return
	}
	s.mu.Lock()
	sess := s.sessions[id]
	s.mu.Unlock()
	if sess == nil {
		s.forward(w, r, id)
		return
	}
	owner, ok := s.opts.Owner(r)
	if !ok || owner != sess.owner {
		writeError(w, http.StatusForbidden, "this session belongs to another user")
		return
	}

	body, ok := s.readMessage(w, r)
	if !ok {
		return
	}
	switch s.dispatch(context.WithoutCancel(r.Context()), sess, body) {
	case backplane.Delivered:
		w.WriteHeader(http.StatusAccepted)
	case backplane.Busy:
		writeError(w, http.StatusServiceUnavailable, busyMessage)
	default:
		writeError(w, http.StatusServiceUnavailable, "server is shutting down; reconnect")
	}
}

const busyMessage = "too many messages of this session are being handled; wait for answers, then send again"

// dispatch starts handling one message of sess, in the background since
// the answer travels on the stream: the work outlives the POST, not the
// session. Messages are dispatched in the order they arrive.
func (s *Server) dispatch(base context.Context, sess *session, body []byte) backplane.Outcome {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return backplane.NoSession
	}
	if sess.busy.Add(1) > MaxInFlight {
		sess.busy.Add(-1)
		return backplane.Busy
	}
	s.inflight.Add(1)
	go func() {
		defer s.inflight.Done()
		defer sess.busy.Add(-1)
		s.handle(base, sess, body)
	}()
	return backplane.Delivered
}

// handle runs one client message and puts the answer on the stream. The
// work ends early if the session does.
func (s *Server) handle(base context.Context, sess *session, body []byte) {
	ctx, cancel := context.WithCancel(s.mcp.WithContext(base, sess))
	defer cancel()
	go func() {
		select {
		case <-sess.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp := s.mcp.HandleMessage(ctx, body)
	if resp == nil {
		return // a notification or a client's response: nothing to send
	}
	b, err := json.Marshal(resp)
	if err != nil {
		s.opts.Logger.Error("sse: encoding response", "err", err)
		return
	}
	select {
	case sess.events <- messageEvent(b):
	case <-sess.done:
	}
}

// Deliver takes a message forwarded by another instance for one of this
// instance's sessions and says what became of it; the forwarder answers its
// POST accordingly. It never blocks. Forwarded messages run with the
// stream's identity.
func (s *Server) Deliver(e backplane.Envelope) backplane.Outcome {
	s.mu.Lock()
	sess := s.sessions[e.Session]
	s.mu.Unlock()
	switch {
	case sess == nil:
		return backplane.NoSession
	case e.Subject != sess.owner:
		s.opts.Logger.Warn("sse: refusing a forwarded message whose caller does not own the session", "from", e.From)
		return backplane.NotOwner
	}
	return s.dispatch(sess.base, sess, e.Message)
}

// forward handles a POST for a session this instance does not hold: with a
// backplane, a message URL naming another instance is checked and the
// message queued for that instance.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, id string) {
	bp := s.opts.Backplane
	q := r.URL.Query()
	instance := q.Get("instance")
	if bp == nil || instance == "" {
		writeError(w, http.StatusNotFound, "no such session: it ended or never existed; open a new stream")
		return
	}
	if instance == bp.ID() {
		writeError(w, http.StatusNotFound, sessionEnded)
		return
	}
	owner, ok := s.opts.Owner(r)
	if !ok {
		writeError(w, http.StatusForbidden, "this session belongs to another user")
		return
	}
	sig := q.Get("sig")
	if sig == "" {
		writeError(w, http.StatusBadRequest, "missing sig query parameter; use the URL of the stream's endpoint event unchanged")
		return
	}
	if !bp.Verify(instance, id, owner, sig) {
		// An altered URL and another user's session look the same here.
		writeError(w, http.StatusForbidden, "this session belongs to another user, or its message URL was altered; use the URL of the stream's endpoint event unchanged")
		return
	}
	body, ok := s.readMessage(w, r)
	if !ok {
		return
	}
	// Forwarding goes on while this instance shuts down: the backplane
	// keeps collecting receipts until the HTTP server has drained.
	err := bp.Forward(r.Context(), instance, backplane.Envelope{Session: id, Subject: owner, Message: body})
	switch {
	case err == nil:
		w.WriteHeader(http.StatusAccepted)
	case errors.Is(err, backplane.ErrGone):
		writeError(w, http.StatusNotFound, "session not found; reconnect: the instance that held it has stopped")
	case errors.Is(err, backplane.ErrSessionEnded):
		writeError(w, http.StatusNotFound, sessionEnded)
	case errors.Is(err, backplane.ErrNotOwner):
		writeError(w, http.StatusForbidden, "this session belongs to another user")
	case errors.Is(err, backplane.ErrBusy):
		writeError(w, http.StatusServiceUnavailable, busyMessage)
	case errors.Is(err, backplane.ErrUnconfirmed):
		s.opts.Logger.Warn("sse: a forwarded message was not confirmed", "instance", instance)
		writeError(w, http.StatusGatewayTimeout, "the instance holding this session did not confirm the message, which may or may not have reached it; if no answer arrives on the stream, reconnect")
	case errors.Is(err, backplane.ErrTooLarge):
		writeRPCError(w, http.StatusRequestEntityTooLarge, mcp.INVALID_REQUEST,
			fmt.Sprintf("message too large to forward to the instance holding this session (at most about %d bytes of JSON)", backplane.MaxEncoded*3/4-256))
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "the request was canceled")
	default:
		msg := "could not forward the message to the instance holding this session; try again"
		var se *storage.Error
		if errors.As(err, &se) {
			msg += ": " + se.Msg
		}
		s.opts.Logger.Warn("sse: forwarding failed", "err", err)
		writeError(w, http.StatusServiceUnavailable, msg)
	}
}

const sessionEnded = "session not found; reconnect: it ended on the instance that held it"

// readMessage reads and checks a posted JSON-RPC message, answering the
// POST itself when it is unusable.
func (s *Server) readMessage(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeRPCError(w, http.StatusRequestEntityTooLarge, mcp.INVALID_REQUEST, fmt.Sprintf("message larger than %d bytes", s.opts.MaxBody))
			return nil, false
		}
		writeRPCError(w, http.StatusBadRequest, mcp.PARSE_ERROR, "could not read the request body")
		return nil, false
	}
	if !json.Valid(body) {
		writeRPCError(w, http.StatusBadRequest, mcp.PARSE_ERROR, "request body is not valid JSON")
		return nil, false
	}
	return body, true
}

// Shutdown ends every stream, so that clients reconnect (to another
// instance), and waits for messages being handled to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sse: waiting for in-flight messages: %w", ctx.Err())
	}
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": http.StatusText(status), "error_description": msg})
}

func writeRPCError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"jsonrpc": "2.0",
		"id":      nil,
		"error":   map[string]any{"code": code, "message": msg},
	})
}
