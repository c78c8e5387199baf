// Package httpapi routes the handler's HTTP surface: the two MCP transports,
// their RFC 9728 metadata documents and a health probe, behind DNS-rebinding
// protection, body limits and token authentication.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/backplane"
	"github.com/mcp-apim/remote-mcp/handler/sse"
)

// Paths the handler serves. The gateway forwards the MCP paths unchanged.
const (
	PathMCP     = "/mcp"
	PathSSE     = "/mcp/sse"
	PathMessage = "/mcp/message"
	PathHealth  = "/healthz"
	// PathInternal is the internal OAuth API that only API Management calls.
	PathInternal = "/internal/oauth/"
	wellKnown    = "/.well-known/oauth-protected-resource"
)

// DefaultMaxBody bounds a request body: a snippet of 256 KiB may grow six
// times when every character is JSON-escaped.
const DefaultMaxBody = 2 << 20

// Options configures the API.
type Options struct {
	MCP *server.MCPServer
	// ResourceURL is the Streamable HTTP resource identifier and public base.
	ResourceURL *url.URL
	// AuthorizationServer is listed in the metadata documents (the issuer).
	AuthorizationServer string
	// Validator checks access tokens; nil only together with LocalUser.
	Validator *auth.Validator
	// LocalUser, when set, is every caller (MCP_AUTH=off).
	LocalUser *auth.Identity
	// AllowedHosts are Host names accepted besides the public one and
	// loopback, e.g. the Function App's own name (WEBSITE_HOSTNAME).
	AllowedHosts []string
	KeepAlive    time.Duration
	MaxBody      int64
	Logger       *slog.Logger
	// Check runs after a token validates (auth.AuthenticatorOptions.Check):
	// the refusal of revoked token families. Nil: no check.
	Check func(ctx context.Context, id auth.Identity) error
	// Internal, if set, serves the internal OAuth API under PathInternal.
	// It authenticates its callers itself.
	Internal http.Handler
	// Backplane, if set, makes SSE sessions reachable from every instance;
	// feed it to Deliver with Backplane.Run.
	Backplane *backplane.Backplane
}

// API is the handler's HTTP surface.
type API struct {
	handler    http.Handler
	streamable *server.StreamableHTTPServer
	sse        *sse.Server
	log        *slog.Logger
}

// New builds the API.
func New(o Options) (*API, error) {
	if o.MCP == nil || o.ResourceURL == nil {
		return nil, errors.New("httpapi: MCP and ResourceURL are required")
	}
	if o.Validator == nil && o.LocalUser == nil {
		return nil, errors.New("httpapi: a token validator is required unless authentication is off")
	}
	if o.MaxBody <= 0 {
		o.MaxBody = DefaultMaxBody
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	origin := &url.URL{Scheme: o.ResourceURL.Scheme, Host: o.ResourceURL.Host}
	mcpResource := o.ResourceURL.String()
	sseResource := mcpResource + "/sse"
	metadataURL := func(resource string) string {
		u, _ := url.Parse(resource) // built from a parsed URL above
		return origin.String() + wellKnown + u.Path
	}

	streamable := server.NewStreamableHTTPServer(o.MCP,
		server.WithStateLess(true),
		server.WithEndpointPath(PathMCP),
		// hostGuard below applies the Host and Origin rules; mcp-go's own
		// check would refuse the public Host the Functions host forwards.
		server.WithDisableLocalhostProtection(true),
		server.WithStreamableHTTPLogger(o.Logger),
	)
	sseServer, err := sse.New(o.MCP, sse.Options{
		MessagePath: messagePath(o.ResourceURL),
		KeepAlive:   o.KeepAlive,
		MaxBody:     o.MaxBody,
		Logger:      o.Logger,
		Backplane:   o.Backplane,
		Owner: func(r *http.Request) (string, bool) {
			id, ok := auth.IdentityFrom(r.Context())
			return id.Subject, ok
		},
	})
	if err != nil {
		return nil, err
	}

	authn := func(resource string) (func(http.Handler) http.Handler, error) {
		return auth.Authenticator(auth.AuthenticatorOptions{
			Validator:   o.Validator,
			LocalUser:   o.LocalUser,
			Check:       o.Check,
			Scope:       auth.DefaultScope,
			MetadataURL: func(*http.Request) string { return metadataURL(resource) },
		})
	}
	mcpAuth, err := authn(mcpResource)
	if err != nil {
		return nil, err
	}
	sseAuth, err := authn(sseResource)
	if err != nil {
		return nil, err
	}
	guard := newHostGuard(origin, o.AllowedHosts)
	limit := func(h http.Handler) http.Handler { return limitBody(o.MaxBody, h) }

	mux := http.NewServeMux()
	mux.Handle(PathMCP, guard.wrap(limit(mcpAuth(streamable))))
	mux.Handle(PathSSE, guard.wrap(sseAuth(sseServer.StreamHandler())))
	mux.Handle(PathMessage, guard.wrap(limit(sseAuth(sseServer.MessageHandler()))))
	if o.Internal != nil {
		// No bearer token, host guard or body limit here: the internal API
		// checks its own key and limits bodies to 16 KiB.
		mux.Handle(PathInternal, o.Internal)
	}

	servers := []string{o.AuthorizationServer}
	if o.AuthorizationServer == "" {
		servers = []string{}
	}
	for path, resource := range map[string]string{
		wellKnown:                               origin.String(),
		wellKnown + o.ResourceURL.Path:          mcpResource,
		wellKnown + o.ResourceURL.Path + "/sse": sseResource,
	} {
		mux.Handle(path, auth.MetadataHandler(auth.ProtectedResource{
			Resource:             resource,
			AuthorizationServers: servers,
			ScopesSupported:      []string{auth.DefaultScope},
			ResourceName:         "Remote MCP server on Azure Functions",
		}))
	}
	mux.HandleFunc(PathHealth, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no such endpoint; MCP is served at %s (Streamable HTTP) and %s (SSE)", PathMCP, PathSSE))
	})

	a := &API{streamable: streamable, sse: sseServer, log: o.Logger}
	a.handler = recoverPanics(o.Logger, accessLog(o.Logger, mux))
	return a, nil
}

// messagePath is where SSE clients post, relative to the public origin, so
// that the URL works whether the client came through the gateway or not.
func messagePath(resource *url.URL) string {
	return resource.Path + "/message"
}

// Deliver takes an SSE message another instance forwarded (see
// backplane.Backplane.Run).
func (a *API) Deliver(e backplane.Envelope) backplane.Outcome { return a.sse.Deliver(e) }

// Handler is the root http.Handler.
func (a *API) Handler() http.Handler { return a.handler }

// Shutdown ends SSE streams (clients reconnect elsewhere) and waits for
// messages being handled.
func (a *API) Shutdown(ctx context.Context) error {
	return errors.Join(a.sse.Shutdown(ctx), a.streamable.Shutdown(ctx))
}

// limitBody reads a POST body up to max bytes, answering 413 with a JSON-RPC
// error beyond that, so the transports never see a truncated message.
func limitBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			next.ServeHTTP(w, r)
			return
		}
		tooLarge := func() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusRequestEntityTooLarge)
			_ = json.NewEncoder(w).Encode(map[string]any{"jsonrpc": "2.0", "id": nil,
				"error": map[string]any{"code": -32600, "message": fmt.Sprintf("request body larger than %d bytes", max)}})
		}
		if r.ContentLength > max {
			tooLarge()
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				tooLarge()
				return
			}
			writeJSONError(w, http.StatusBadRequest, "invalid_request", "could not read the request body")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": msg})
}
