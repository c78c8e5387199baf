package oauthstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Family statuses.
const (
	FamilyActive  = "active"
	FamilyRevoked = "revoked"
	// FamilyUnknown is what FamilyState says about a family that does not
	// exist; it must be treated like a revoked one.
	FamilyUnknown = "unknown"
)

// Why a family was revoked, recorded for operators.
const (
	ReasonRevoked      = "revoked"           // RFC 7009 revocation or an admin
	ReasonRefreshReuse = "refresh_reuse"     // a used or superseded refresh token came back
	ReasonCodeReplay   = "code_replay"       // an authorization code was redeemed twice
	reasonUnclaimed    = "unclaimed_on_race" // a redeem lost its race; nothing was issued
)

// familyRecord is the JSON of families/<fid>. One family is one sign-in:
// every refresh token rotated from one code, and every access token signed
// from them (their fid claim), belong to it, so revoking it ends them all.
type familyRecord struct {
	V         int        `json:"v"`
	Status    string     `json:"status"`
	ClientID  string     `json:"client_id"`
	User      User       `json:"user"`
	Created   time.Time  `json:"created"`
	LastUsed  time.Time  `json:"last_used"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// getFamily reads a family. A malformed fid is storage.ErrNotFound, like an
// unknown one.
func (s *Store) getFamily(ctx context.Context, fid string) (familyRecord, error) {
	if !isID(fid) {
		return familyRecord{}, storage.Errorf(storage.ErrNotFound, "the token family does not exist")
	}
	var rec familyRecord
	if _, err := s.read(ctx, familyName(fid), &rec); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return familyRecord{}, storage.Errorf(storage.ErrNotFound, "the token family does not exist")
		}
		return familyRecord{}, fmt.Errorf("reading the token family: %w", err)
	}
	return rec, nil
}

// FamilyStatus reports whether the family is active. An unknown or
// malformed fid is not active, and not an error: for a token check both
// mean "refuse".
func (s *Store) FamilyStatus(ctx context.Context, fid string) (active bool, err error) {
	rec, err := s.getFamily(ctx, fid)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return rec.Status == FamilyActive, nil
}

// FamilyState returns FamilyActive, FamilyRevoked or FamilyUnknown (no
// such family, or a malformed fid). Only FamilyActive may be honoured.
func (s *Store) FamilyState(ctx context.Context, fid string) (string, error) {
	rec, err := s.getFamily(ctx, fid)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return FamilyUnknown, nil
	case err != nil:
		return "", err
	case rec.Status == FamilyActive:
		return FamilyActive, nil
	}
	return FamilyRevoked, nil
}

// RevokeFamily marks the family revoked: every refresh token of it stops
// working at once, and access tokens carrying its fid are refused by the
// handler within the FamilyChecker's cache time. Revoking an unknown or
// already revoked family succeeds and changes nothing.
func (s *Store) RevokeFamily(ctx context.Context, fid string) error {
	return s.revokeFamily(ctx, fid, ReasonRevoked)
}

func (s *Store) revokeFamily(ctx context.Context, fid, reason string) error {
	if !isID(fid) {
		return nil
	}
	name := familyName(fid)
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return err
			}
		}
		var rec familyRecord
		etag, err := s.read(ctx, name, &rec)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("revoking the token family: %w", err)
		}
		if rec.Status == FamilyRevoked {
			return nil
		}
		now := s.nowUTC()
		rec.Status, rec.RevokedAt, rec.Reason = FamilyRevoked, &now, reason
		// If-Match so that a concurrent last_used update cannot write the
		// old "active" back over the revocation; on a lost race, re-read.
		err = s.replace(ctx, name, rec, etag)
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("revoking the token family: %w", err)
		}
		return nil
	}
	return contended()
}

// createFamily stores a new active family and returns its id.
func (s *Store) createFamily(ctx context.Context, clientID string, user User) (string, error) {
	now := s.nowUTC()
	fid := newID()
	rec := familyRecord{V: 1, Status: FamilyActive, ClientID: clientID, User: user, Created: now, LastUsed: now}
	if err := s.create(ctx, familyName(fid), rec); err != nil {
		return "", fmt.Errorf("creating the token family: %w", err)
	}
	return fid, nil
}

// touchFamily records that the family's tokens are in use, at most daily,
// and touches its client too: a client that only ever refreshes is in use
// although it never reads its registration. The family's write must land
// (or another rotation's touch must have): the storage lifecycle rule
// deletes a family a fixed time after its last write, so a successor may
// only be issued within a TouchInterval of that write. The client's touch
// stays best effort (its rule leaves a margin of days).
func (s *Store) touchFamily(ctx context.Context, fid string) error {
	name := familyName(fid)
	for range 2 { // a lost race means somebody touched it first: look again
		var rec familyRecord
		etag, err := s.read(ctx, name, &rec)
		if err != nil {
			return fmt.Errorf("reading the token family: %w", err)
		}
		now := s.nowUTC()
		if rec.Status != FamilyActive || now.Sub(rec.LastUsed) < TouchInterval {
			return nil
		}
		rec.LastUsed = now
		err = s.replace(ctx, name, rec, etag)
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("recording the token family's use: %w", err)
		}
		_, _ = s.getClient(ctx, rec.ClientID)
		return nil
	}
	return contended()
}

// DefaultCheckTTL is how long FamilyChecker trusts a family's status. It is
// the longest a revoked family's access tokens keep working on one
// instance after the revocation.
const DefaultCheckTTL = 5 * time.Second

// maxCheckEntries bounds the checker's cache. An entry is a few dozen
// bytes; the bound only matters against a flood of distinct fids.
const maxCheckEntries = 10000

// FamilyChecker answers, for each request the handler serves, whether the
// access token's family is still active (DESIGN section 5), reading the
// family from storage at most once per TTL per family and process.
type FamilyChecker struct {
	store *Store
	ttl   time.Duration

	mu      sync.Mutex
	entries map[string]checkEntry
}

type checkEntry struct {
	active  bool
	expires time.Time
}

// NewFamilyChecker returns a checker that caches a family's status for ttl
// (DefaultCheckTTL if ttl <= 0).
func NewFamilyChecker(s *Store, ttl time.Duration) *FamilyChecker {
	if ttl <= 0 {
		ttl = DefaultCheckTTL
	}
	return &FamilyChecker{store: s, ttl: ttl, entries: map[string]checkEntry{}}
}

// Check has the signature of auth.AuthenticatorOptions.Check: it refuses
// the identity's token unless its family is active.
func (c *FamilyChecker) Check(ctx context.Context, id auth.Identity) error {
	return c.CheckFamily(ctx, id.FamilyID)
}

// CheckFamily returns nil for an active family and an *auth.TokenError
// (401 invalid_token) for a revoked or unknown one. When storage cannot
// answer it returns that error, which is not a TokenError: the middleware
// then answers 503, because an unknown status must not let a possibly
// revoked token through. Failures are not cached.
func (c *FamilyChecker) CheckFamily(ctx context.Context, fid string) error {
	revoked := &auth.TokenError{Reason: "the token has been revoked"}
	if !isID(fid) {
		return revoked
	}
	now := c.store.now()
	c.mu.Lock()
	e, ok := c.entries[fid]
	c.mu.Unlock()
	if !ok || !now.Before(e.expires) {
		active, err := c.store.FamilyStatus(ctx, fid)
		if err != nil {
			return fmt.Errorf("checking the token family: %w", err)
		}
		e = checkEntry{active: active, expires: now.Add(c.ttl)}
		c.mu.Lock()
		if len(c.entries) >= maxCheckEntries {
			c.evictLocked(now)
		}
		c.entries[fid] = e
		c.mu.Unlock()
	}
	if !e.active {
		return revoked
	}
	return nil
}

// evictLocked drops expired entries, or everything if none had expired:
// a flood of fresh fids then costs reads, never unbounded memory.
func (c *FamilyChecker) evictLocked(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	if len(c.entries) >= maxCheckEntries {
		clear(c.entries)
	}
}
