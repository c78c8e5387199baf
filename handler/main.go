// Command handler is the Azure Functions custom handler: an MCP server over
// Streamable HTTP and SSE whose tools use Blob and Queue storage. It also runs
// standalone with the same environment, which is how tests and `make run`
// start it.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/backplane"
	"github.com/mcp-apim/remote-mcp/handler/cimd"
	"github.com/mcp-apim/remote-mcp/handler/config"
	"github.com/mcp-apim/remote-mcp/handler/httpapi"
	"github.com/mcp-apim/remote-mcp/handler/internalapi"
	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
	"github.com/mcp-apim/remote-mcp/handler/queues"
	"github.com/mcp-apim/remote-mcp/handler/snippets"
	"github.com/mcp-apim/remote-mcp/handler/storage"
	"github.com/mcp-apim/remote-mcp/handler/tools"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// snippetContainer holds every user's snippets under <tenant>/<object>/.
const snippetContainer = "snippets"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "handler:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := config.FromEnvironment()
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	clients, err := storage.NewClients(cfg.Storage)
	if err != nil {
		return err
	}
	store := snippets.New(clients.Blob, snippetContainer)
	documents := cimd.New(cimd.Options{AllowPrivateAddresses: cfg.DocumentsFromPrivateAddresses, Logger: log})
	oauth := oauthstore.New(clients.Blob, oauthstore.DefaultContainer, oauthstore.Options{Documents: documents.Resolve})

	opts := httpapi.Options{
		ResourceURL:         cfg.ResourceURL,
		AuthorizationServer: cfg.Issuer,
		AllowedHosts:        strings.Split(os.Getenv("WEBSITE_HOSTNAME"), ","),
		Logger:              log,
	}
	if cfg.AuthOff {
		log.Warn("AUTHENTICATION IS OFF (MCP_AUTH=off): every request acts as one local user; never use this outside local development")
		local := auth.LocalUser()
		opts.LocalUser = &local
	} else {
		keys, err := auth.ParseJWKS(cfg.JWKS)
		if err != nil {
			return fmt.Errorf("MCP_TOKEN_JWKS: %w", err)
		}
		opts.Validator, err = auth.NewValidator(auth.ValidatorOptions{
			Keys:      keys,
			Issuer:    cfg.Issuer,
			Audiences: []string{cfg.ResourceURL.String(), cfg.SSEResource()},
		})
		if err != nil {
			return err
		}
	}
	if cfg.InternalKey != "" {
		internal, err := internalapi.New(internalapi.Options{Store: oauth, Key: cfg.InternalKey, Logger: log})
		if err != nil {
			return err
		}
		opts.Internal = internal
		if !cfg.AuthOff {
			opts.Check = oauthstore.NewFamilyChecker(oauth, cfg.FamilyCheckTTL).Check
		}
	} else if !cfg.AuthOff {
		log.Warn("MCP_INTERNAL_KEY is not set: the internal OAuth API is off and tokens of revoked families are not refused")
	}
	// The SSE backplane needs the internal key for its MACs; without it
	// (one local instance) sessions are reachable on this instance only.
	var bp *backplane.Backplane
	if cfg.InternalKey != "" {
		bp, err = backplane.New(backplane.Options{Client: clients.Queue, Key: cfg.InternalKey, Logger: log})
		if err != nil {
			return err
		}
		opts.Backplane = bp
	}
	opts.MCP = tools.NewServer(tools.Deps{
		Snippets: store,
		Queues:   queues.New(clients.Queue),
		AuthOff:  cfg.AuthOff,
		Logger:   log,
	}, version)
	api, err := httpapi.New(opts)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// Creating the container is storage I/O: do it beside start-up, not
	// before it, so the host sees the port open at once.
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := store.EnsureContainer(cctx); err != nil {
			log.Error("could not create the snippets container; snippet tools fail until storage is reachable", "err", err)
		}
		if cfg.InternalKey != "" {
			if err := oauth.EnsureContainer(cctx); err != nil {
				log.Error("could not create the oauth container; the internal OAuth API fails until storage is reachable", "err", err)
			}
		}
	}()

	bpCtx, stopBP := context.WithCancel(context.Background())
	defer stopBP()
	bpDone := make(chan struct{})
	if bp != nil {
		go func() {
			defer close(bpDone)
			sctx, cancel := context.WithTimeout(bpCtx, 30*time.Second)
			if err := bp.Start(sctx); err != nil {
				// Run recreates the queue when its polls find it missing.
				log.Error("could not create the backplane queue; SSE messages from other instances wait until storage is reachable", "err", err)
			}
			cancel()
			bp.Run(bpCtx, api.Deliver)
		}()
	} else {
		close(bpDone)
	}

	ln, err := net.Listen("tcp", cfg.ListenAddr())
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String(), "mcp", cfg.ResourceURL.String(), "sse", cfg.ResourceURL.String()+"/sse", "version", version)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	// SSE streams never end on their own: close them first so that
	// srv.Shutdown only waits for ordinary requests.
	err = errors.Join(api.Shutdown(sctx), srv.Shutdown(sctx))
	// The backplane ran until now so that POSTs forwarded from here got
	// their receipts (and messages for this instance's closed sessions got
	// "no such session"). Stop it; Close answers what is still queued and
	// deletes the queue, so later POSTs for these sessions get "session not
	// found; reconnect" at once.
	stopBP()
	<-bpDone
	if bp != nil {
		err = errors.Join(err, bp.Close(sctx))
	}
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}
