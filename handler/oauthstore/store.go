// Package oauthstore keeps the durable state of the OAuth front door
// (FRONTDOOR.md, "Durable state") in Azure Blob storage: client
// registrations, single-use authorization codes, rotating refresh tokens and
// the token families they belong to.
//
// API Management runs the OAuth protocol and signs access tokens; this
// package holds only what needs durable, atomic updates, which APIM's
// best-effort cache cannot give. Atomicity comes from Blob's conditional
// writes: a record is created with If-None-Match: * and changed only with
// If-Match on the ETag it was read with, so of two concurrent changes to one
// record exactly one lands and the other re-reads and decides again.
//
// Records are JSON blobs in one container:
//
//	clients/<client_id>          a registration (RFC 7591)
//	codes/<sha256hex(code)>      an authorization code
//	refresh/<sha256hex(token)>   a refresh token
//	families/<fid>               a token family: active or revoked
//
// Codes and refresh tokens are random (256 bits), handed out in plain text
// exactly once and stored only as their SHA-256 hash, so reading the
// container does not yield a usable credential. Neither is ever logged or
// put in an error message.
//
// # Lifetimes
//
// Codes live CodeTTL (5 minutes). A refresh token lives RefreshTTL (30 days)
// from its own issue, so a client that refreshes at least monthly stays
// signed in; each rotation starts a new 30 days. A client registration
// unused for ClientIdleTTL (90 days) is treated as unknown. Nothing here
// deletes expired records; the storage lifecycle rules of
// infra/modules/storage.bicep do, by blob last-modified time. Clients and
// families are rewritten when used, at most once per TouchInterval (a day),
// so [RecordKinds] says how long after its last write each kind of record
// may still be needed, and the rules delete later than that: codes/ after
// 1 day, refresh/ RefreshTTL + 1 day, families/ RefreshTTL + 2 days,
// clients/ ClientIdleTTL + 2 days (e2e/deploy checks the Bicep against
// RecordKinds). (A parent refresh record is rewritten when its successor is
// issued, so it outlives every successor that may still need to read it.)
//
// # Refresh token rotation
//
// See [Store.Rotate] for the rules and the argument that at most one
// successor of a token is ever usable.
package oauthstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// DefaultContainer is the container the handler keeps OAuth state in.
const DefaultContainer = "oauth"

// Default lifetimes; see the package documentation.
const (
	DefaultCodeTTL       = 5 * time.Minute
	DefaultRefreshTTL    = 30 * 24 * time.Hour
	DefaultClientIdleTTL = 90 * 24 * time.Hour
)

// TouchInterval is how stale last_used may get before a use rewrites it
// (clients on GetClient and CreateCode, families and their clients on
// Rotate). Daily keeps the write rate of busy clients negligible while
// staying far finer than the 90-day idle limit it feeds. It is also how far
// a record's blob last-modified time may lag its latest use, which the
// lifecycle rules must allow for (RecordKinds).
const TouchInterval = 24 * time.Hour

// Blob name prefixes of the four kinds of record in the container.
const (
	ClientPrefix  = "clients/"
	CodePrefix    = "codes/"
	RefreshPrefix = "refresh/"
	FamilyPrefix  = "families/"
)

// RecordKind is one kind of record, for whoever deletes expired ones.
type RecordKind struct {
	// Prefix is the blob name prefix of the kind in the container.
	Prefix string
	// KeepFor is how long after its blob was last written a record may
	// still be read as valid, at the default lifetimes (the handler uses
	// Options{}). Deleting a record any later than that is safe.
	KeepFor time.Duration
}

// RecordKinds lists every kind of record the Store writes, with how long
// each must be kept after its last write. The storage lifecycle rules of
// infra/modules/storage.bicep delete by these prefixes, and e2e/deploy
// checks them against this list.
func RecordKinds() []RecordKind {
	return []RecordKind{
		// Valid for CodeTTL from creation, which precedes every write.
		// A consumed code kept longer only turns a late replay into a
		// family revocation instead of "unknown"; both refuse it.
		{CodePrefix, DefaultCodeTTL},
		// A token expires RefreshTTL after its creation, which precedes
		// every write of its record. Its successor reads it on first use,
		// but the record is rewritten when that successor is issued, so
		// the successor expires no later than RefreshTTL after that write.
		{RefreshPrefix, DefaultRefreshTTL},
		// A family must exist while any of its refresh tokens (RefreshTTL
		// from issue) or access tokens (an hour) is valid: a missing family
		// counts as revoked. Rotate rewrites it only if its last_used is a
		// TouchInterval old, so the newest token may be issued up to a
		// TouchInterval after the family's last write.
		{FamilyPrefix, DefaultRefreshTTL + TouchInterval},
		// Idle expiry counts from last_used, which is set exactly when the
		// record is written (created or touched); nothing else rewrites it.
		{ClientPrefix, DefaultClientIdleTTL},
	}
}

// maxRecordBytes bounds what a read loads into memory. Records are well
// under a kilobyte; anything larger was not written by this package.
const maxRecordBytes = 64 * 1024

// maxAttempts bounds the read-decide-write loops that lose a race on an
// ETag. Every lost race means another call made progress, so the loop only
// runs out under heavy contention on one record; the caller then gets
// storage.ErrUnavailable and may retry.
const maxAttempts = 12

// Options tune a Store. The zero value gives the defaults.
type Options struct {
	// CodeTTL is the lifetime of an authorization code; DefaultCodeTTL if 0.
	CodeTTL time.Duration
	// RefreshTTL is the lifetime of each refresh token from its issue;
	// DefaultRefreshTTL if 0.
	RefreshTTL time.Duration
	// ClientIdleTTL is how long a registration lasts unused;
	// DefaultClientIdleTTL if 0.
	ClientIdleTTL time.Duration
	// Now is the clock; time.Now if nil. Tests inject one to expire codes
	// and tokens without waiting.
	Now func() time.Time
	// Documents resolves client_ids that are HTTPS URLs (Client ID
	// Metadata Documents, see package cimd) to the metadata the document
	// declares; an error of kind storage.ErrNotFound means the client is
	// unusable. Nil: such client_ids are unknown. Such clients have no
	// record here: nothing to store, expire or touch.
	Documents func(ctx context.Context, clientID string) (ClientMetadata, error)
}

// Store keeps the OAuth front door's durable state in one blob container.
// It is safe for concurrent use, also from several processes: all
// coordination happens through storage.
type Store struct {
	client    *azblob.Client
	container storage.Container
	codeTTL   time.Duration
	refTTL    time.Duration
	idleTTL   time.Duration
	now       func() time.Time
	documents func(ctx context.Context, clientID string) (ClientMetadata, error)
}

// New returns a Store on the named container. It does not contact storage;
// call EnsureContainer once at start-up.
func New(client *azblob.Client, container string, opts Options) *Store {
	s := &Store{
		client:    client,
		container: storage.NewContainer(client, container, "OAuth storage"),
		codeTTL:   opts.CodeTTL,
		refTTL:    opts.RefreshTTL,
		idleTTL:   opts.ClientIdleTTL,
		now:       opts.Now,
		documents: opts.Documents,
	}
	if s.codeTTL <= 0 {
		s.codeTTL = DefaultCodeTTL
	}
	if s.refTTL <= 0 {
		s.refTTL = DefaultRefreshTTL
	}
	if s.idleTTL <= 0 {
		s.idleTTL = DefaultClientIdleTTL
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// RefreshTTL is the lifetime of a newly issued refresh token.
func (s *Store) RefreshTTL() time.Duration { return s.refTTL }

// CodeTTL is the lifetime of a newly created authorization code.
func (s *Store) CodeTTL() time.Duration { return s.codeTTL }

// EnsureContainer creates the container if it does not exist yet.
func (s *Store) EnsureContainer(ctx context.Context) error {
	return s.container.Ensure(ctx)
}

// Error is an OAuth error: Code is the error code of RFC 6749 section 5.2
// (or RFC 7591 section 3.2.2 for registration), Description a sentence safe
// to show the client. It never contains a token or code.
type Error struct {
	Code        string
	Description string
}

// OAuth error codes the store returns.
const (
	CodeInvalidRequest        = "invalid_request"
	CodeInvalidGrant          = "invalid_grant"
	CodeInvalidTarget         = "invalid_target"
	CodeInvalidRedirectURI    = "invalid_redirect_uri"
	CodeInvalidClientMetadata = "invalid_client_metadata"
)

// Error returns "<code>: <description>".
func (e *Error) Error() string { return e.Code + ": " + e.Description }

func oauthError(code, format string, args ...any) *Error {
	return &Error{Code: code, Description: fmt.Sprintf(format, args...)}
}

// nowUTC returns the clock in UTC, truncated to milliseconds so that what is
// stored and what is compared are the same instant after a JSON round trip.
func (s *Store) nowUTC() time.Time { return s.now().UTC().Truncate(time.Millisecond) }

func (s *Store) blob(name string) *blockblob.Client {
	return s.container.Blob(name)
}

// read loads the JSON record at name into v and returns its ETag. A missing
// record (or container) is storage.ErrNotFound.
func (s *Store) read(ctx context.Context, name string, v any) (azcore.ETag, error) {
	data, etag, err := s.readRaw(ctx, name)
	if err != nil {
		return "", err
	}
	if err := json.Unmarshal(data, v); err != nil {
		// The name is left out on purpose: for codes and tokens it is the
		// lookup key of a credential.
		return "", fmt.Errorf("oauthstore: a stored record is corrupt: %w", err)
	}
	return etag, nil
}

func (s *Store) readRaw(ctx context.Context, name string) ([]byte, azcore.ETag, error) {
	resp, err := s.blob(name).DownloadStream(ctx, nil)
	if err != nil {
		return nil, "", storage.Classify(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRecordBytes+1))
	if err != nil {
		return nil, "", storage.Classify(err)
	}
	if len(data) > maxRecordBytes {
		return nil, "", errors.New("oauthstore: a stored record is larger than any this package writes")
	}
	var etag azcore.ETag
	if resp.ETag != nil {
		etag = *resp.ETag
	}
	return data, etag, nil
}

// create writes v at name only if nothing is there yet. storage.ErrConflict
// means the name is taken.
//
// Every name created here is derived from fresh random bits, so a conflict
// is almost surely the SDK retrying an upload whose first response was
// lost. Then the blob holds exactly our bytes, and that counts as success;
// anything else stays a conflict.
func (s *Store) create(ctx context.Context, name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("oauthstore: encoding a record: %w", err)
	}
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: ptr(azcore.ETagAny)}}
	_, err = s.upload(ctx, name, data, cond)
	if errors.Is(err, storage.ErrConflict) {
		got, _, rerr := s.readRaw(ctx, name)
		if rerr == nil && bytes.Equal(got, data) {
			return nil
		}
	}
	return err
}

// replace writes v at name only if the record still has etag. A lost race
// is storage.ErrConflict, and so is a record deleted since it was read.
func (s *Store) replace(ctx context.Context, name string, v any, etag azcore.ETag) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("oauthstore: encoding a record: %w", err)
	}
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &etag}}
	_, err = s.upload(ctx, name, data, cond)
	if errors.Is(err, storage.ErrNotFound) {
		// If-Match on a blob that is gone answers 404; for the caller it
		// is the same lost race.
		return storage.Errorf(storage.ErrConflict, "the record was deleted concurrently")
	}
	return err
}

func (s *Store) upload(ctx context.Context, name string, data []byte, cond *blob.AccessConditions) (azcore.ETag, error) {
	resp, err := s.container.Upload(ctx, name, data, "application/json", cond)
	if err != nil {
		return "", storage.Classify(err)
	}
	var etag azcore.ETag
	if resp.ETag != nil {
		etag = *resp.ETag
	}
	return etag, nil
}

// remove deletes name, ignoring a record that is already gone.
func (s *Store) remove(ctx context.Context, name string) error {
	_, err := s.blob(name).Delete(ctx, nil)
	if err != nil {
		if err = storage.Classify(err); errors.Is(err, storage.ErrNotFound) {
			return nil
		}
	}
	return err
}

// cleanup removes records a failed operation left behind. They are
// unreachable and harmless, so this is best effort; it runs even when the
// caller's context is done, with a budget of its own.
func (s *Store) cleanup(ctx context.Context, names ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, n := range names {
		_ = s.remove(ctx, n)
	}
}

// backoff waits a short random time before retrying a lost race, so that
// contending callers spread out instead of colliding again in lock step.
func backoff(ctx context.Context, attempt int) error {
	limit := time.Duration(min(attempt, 6)) * 15 * time.Millisecond
	t := time.NewTimer(rand.N(limit) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return storage.Classify(ctx.Err())
	case <-t.C:
		return nil
	}
}

// contended is the error of a loop that kept losing races: somebody else
// keeps changing the record, which a retry a moment later gets past.
func contended() error {
	return storage.Errorf(storage.ErrUnavailable, "too many concurrent requests for the same credential; try again in a moment")
}

func ptr[T any](v T) *T { return &v }
