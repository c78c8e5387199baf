// Package cimd resolves OAuth Client ID Metadata Documents
// (draft-ietf-oauth-client-id-metadata-document, the MCP specification's
// "Client Registration"): a client that uses an https URL as its client_id
// publishes its metadata as JSON at that URL, and the authorization server
// fetches, validates and caches it instead of keeping a registration.
//
// A client_id is chosen by whoever sends the authorization request, so the
// fetch is treated as hostile: it reaches only public addresses (checked on
// the address actually dialed), follows no redirects, uses no proxy, reads a
// bounded body within a bounded time, and remembers failures briefly so a
// flood of requests for one bad client_id costs one fetch.
package cimd

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/oauthstore"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Defaults for the zero values of Options.
const (
	defaultTimeout     = 5 * time.Second
	defaultMaxBytes    = 5120 // the draft recommends 5 KB
	defaultMinTTL      = 5 * time.Minute
	defaultMaxTTL      = 24 * time.Hour
	defaultDefaultTTL  = time.Hour
	defaultNegativeTTL = time.Minute
	defaultMaxEntries  = 10000
)

// Options configure a Resolver. The zero value is the production setting.
type Options struct {
	// AllowPrivateAddresses permits fetching from loopback, private (RFC
	// 1918, ULA), link-local (incl. 169.254.169.254, the cloud metadata
	// endpoint), CGNAT 100.64.0.0/10, unspecified, multicast, benchmark
	// 198.18.0.0/15, 0.0.0.0/8, 240.0.0.0/4 and other non-global addresses.
	// Off by default: a client_id is attacker-chosen and the fetch must not
	// reach internal services (SSRF). Tests and local runs turn it on.
	AllowPrivateAddresses bool
	// RootCAs verifies the document host's certificate; nil means the
	// system roots.
	RootCAs *x509.CertPool
	// Timeout bounds one fetch, connect to last byte. Zero: 5 s.
	Timeout time.Duration
	// MaxBytes bounds a document. Zero: 5120 (the draft recommends 5 KB).
	MaxBytes int64
	// MinTTL and MaxTTL clamp how long a fetched document is reused, taken
	// from Cache-Control max-age (no-store/no-cache/absent: DefaultTTL).
	// Zero: 5 min, 24 h; DefaultTTL zero: 1 h.
	MinTTL, MaxTTL, DefaultTTL time.Duration
	// NegativeTTL is how long a permanent failure (invalid URL or
	// document, 4xx) is remembered so a flood of requests for one bad
	// client_id does not fetch each time. Zero: 1 min. Transient failures
	// (timeouts, network errors, 5xx) are not remembered. An invalid URL
	// needs no entry: CheckURL refuses it before the cache is consulted,
	// and more cheaply.
	NegativeTTL time.Duration
	// MaxEntries bounds the cache (positive and negative). Zero: 10000;
	// when full, drop expired entries, then arbitrary ones.
	MaxEntries int
	Now        func() time.Time // nil: time.Now
	Logger     *slog.Logger     // nil: discard
}

// Resolver fetches, validates and caches client metadata documents. It is
// safe for concurrent use.
type Resolver struct {
	o      Options
	client *fetcher

	mu       sync.Mutex
	cache    map[string]entry
	inflight map[string]*call
}

// entry is a cached outcome: metadata, or a permanent (ErrNotFound) error.
type entry struct {
	meta    oauthstore.ClientMetadata
	err     error
	expires time.Time
}

// call is one fetch in progress that later callers for the same URL wait
// for instead of fetching again.
type call struct {
	done chan struct{} // closed when meta and err are set
	meta oauthstore.ClientMetadata
	err  error
	// waiters counts the Resolve calls waiting on done; tests use it to
	// know when every caller has joined.
	waiters int
}

// New returns a Resolver with the zero values of o replaced by defaults.
func New(o Options) *Resolver {
	if o.Timeout <= 0 {
		o.Timeout = defaultTimeout
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	if o.MinTTL <= 0 {
		o.MinTTL = defaultMinTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = defaultMaxTTL
	}
	if o.MaxTTL < o.MinTTL {
		o.MaxTTL = o.MinTTL
	}
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = defaultDefaultTTL
	}
	if o.NegativeTTL <= 0 {
		o.NegativeTTL = defaultNegativeTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = defaultMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Resolver{
		o:        o,
		client:   newFetcher(o),
		cache:    make(map[string]entry),
		inflight: make(map[string]*call),
	}
}

// Resolve returns the client metadata that the document at clientID
// declares, validated, from the cache while fresh. Concurrent calls for one
// URL share one fetch.
//
// Errors: storage.ErrNotFound when the URL or the document is not acceptable
// or the host answers 4xx or a redirect (the message says exactly why);
// storage.ErrUnavailable for timeouts, network errors, refused connections,
// 5xx. A non-public address when AllowPrivateAddresses is off is
// ErrNotFound. If ctx ends first, the error wraps context.Canceled, or is
// ErrUnavailable for a deadline; the fetch itself carries on for the other
// callers and the cache.
func (r *Resolver) Resolve(ctx context.Context, clientID string) (oauthstore.ClientMetadata, error) {
	if err := CheckURL(clientID); err != nil {
		// Not cached: the check is cheaper than a cache entry, and caching
		// made-up URLs would only push real ones out.
		return oauthstore.ClientMetadata{}, err
	}
	if err := ctx.Err(); err != nil {
		return oauthstore.ClientMetadata{}, contextError(err)
	}

	r.mu.Lock()
	if e, ok := r.cache[clientID]; ok {
		if r.o.Now().Before(e.expires) {
			r.mu.Unlock()
			return cloneMeta(e.meta), e.err
		}
		delete(r.cache, clientID)
	}
	c, ok := r.inflight[clientID]
	if !ok {
		c = &call{done: make(chan struct{})}
		r.inflight[clientID] = c
		// The fetch outlives a caller that gives up: others may be
		// waiting, and its result is worth caching. It is bounded by
		// Timeout, not by ctx.
		go r.run(context.WithoutCancel(ctx), clientID, c)
	}
	c.waiters++
	r.mu.Unlock()

	select {
	case <-c.done:
		return cloneMeta(c.meta), c.err
	case <-ctx.Done():
		r.mu.Lock()
		c.waiters--
		r.mu.Unlock()
		return oauthstore.ClientMetadata{}, contextError(ctx.Err())
	}
}

// run performs the fetch for c and publishes its outcome: to the cache
// (successes for their TTL, permanent failures for NegativeTTL) and to the
// callers waiting on c.
func (r *Resolver) run(ctx context.Context, clientID string, c *call) {
	meta, ttl, err := r.fetch(ctx, clientID)

	r.mu.Lock()
	defer r.mu.Unlock()
	c.meta, c.err = meta, err
	switch {
	case err == nil:
		r.store(clientID, entry{meta: meta, expires: r.o.Now().Add(ttl)})
	case errors.Is(err, storage.ErrNotFound):
		r.store(clientID, entry{err: err, expires: r.o.Now().Add(r.o.NegativeTTL)})
	}
	delete(r.inflight, clientID)
	close(c.done)
}

// store adds an entry, making room first if the cache is full: expired
// entries go, then arbitrary ones. The caller holds r.mu.
func (r *Resolver) store(clientID string, e entry) {
	if _, ok := r.cache[clientID]; !ok && len(r.cache) >= r.o.MaxEntries {
		now := r.o.Now()
		for k, old := range r.cache {
			if !now.Before(old.expires) {
				delete(r.cache, k)
			}
		}
		for k := range r.cache {
			if len(r.cache) < r.o.MaxEntries {
				break
			}
			delete(r.cache, k)
		}
	}
	r.cache[clientID] = e
}

// fetch gets and validates the document, logging the outcome. Query
// strings never reach the log because CheckURL refuses them; document
// contents appear only at Debug.
func (r *Resolver) fetch(ctx context.Context, clientID string) (oauthstore.ClientMetadata, time.Duration, error) {
	host := ""
	if u, err := url.Parse(clientID); err == nil {
		host = u.Host
	}
	log := r.o.Logger.With("client_id_host", host)
	log.DebugContext(ctx, "fetching client metadata document", "client_id", clientID)

	meta, ttl, err := r.client.get(ctx, clientID)
	var fe *fetchError
	switch {
	case err == nil:
		log.DebugContext(ctx, "client metadata document accepted", "client_id", clientID, "ttl", ttl)
		return meta, ttl, nil
	case errors.As(err, &fe) && errors.Is(fe.public, storage.ErrUnavailable):
		log.WarnContext(ctx, "client metadata document unavailable", "status", fe.status, "error", fe.public, "cause", fe.cause)
		return oauthstore.ClientMetadata{}, 0, fe.public
	case errors.As(err, &fe):
		// The reason may quote the document (a mismatched client_id), so
		// it is Debug only.
		log.InfoContext(ctx, "client metadata document refused", "status", fe.status)
		log.DebugContext(ctx, "client metadata document refused", "client_id", clientID, "reason", fe.public, "cause", fe.cause)
		return oauthstore.ClientMetadata{}, 0, fe.public
	default:
		// get returns only *fetchError; this is a safety net that does
		// not show an unclassified error to users.
		log.ErrorContext(ctx, "client metadata document fetch failed unexpectedly", "error", err)
		return oauthstore.ClientMetadata{}, 0, storage.Errorf(storage.ErrUnavailable, "the client's metadata document could not be fetched; try again later")
	}
}

// contextError maps the caller's context ending the way storage.Classify
// does: cancellation stays a cancellation, a deadline is unavailability.
func contextError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return storage.Errorf(storage.ErrUnavailable, "the client's metadata document did not arrive in time; try again in a moment")
	}
	return fmt.Errorf("waiting for the client's metadata document: %w", err)
}

// cloneMeta copies the slices so a caller that edits its result cannot
// change the cached copy.
func cloneMeta(m oauthstore.ClientMetadata) oauthstore.ClientMetadata {
	m.RedirectURIs = slices.Clone(m.RedirectURIs)
	m.GrantTypes = slices.Clone(m.GrantTypes)
	m.ResponseTypes = slices.Clone(m.ResponseTypes)
	return m
}
