package oauthstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// RotateRequest is the refresh_token grant of a token request.
type RotateRequest struct {
	RefreshToken string
	ClientID     string
	// Resource is optional; if set it must equal the token's (RFC 8707).
	Resource string
}

// refreshRecord is the JSON of refresh/<sha256hex(token)>.
//
// The rotation state lives in the successor fields: Successor is the hash of
// the one token this one was last rotated into, and SuccessorUsed says
// whether that token has been used. A token's record is changed only with
// If-Match, so each of those fields has one writer at a time.
type refreshRecord struct {
	V        int       `json:"v"`
	Family   string    `json:"family"`
	ClientID string    `json:"client_id"`
	Resource string    `json:"resource"`
	Scope    string    `json:"scope"`
	User     User      `json:"user"`
	Created  time.Time `json:"created"`
	Expires  time.Time `json:"expires"`
	// Parent is the hash of the token this one was rotated from; empty for
	// the first token of a family.
	Parent string `json:"parent,omitempty"`
	// Confirmed is set once this token is known to be its parent's live
	// successor for good (the parent's SuccessorUsed names it), so later
	// uses need not read the parent. The first token of a family starts
	// confirmed.
	Confirmed         bool       `json:"confirmed"`
	Successor         string     `json:"successor,omitempty"`
	SuccessorIssuedAt *time.Time `json:"successor_issued_at,omitempty"`
	SuccessorUsed     bool       `json:"successor_used"`
	SuccessorUsedAt   *time.Time `json:"successor_used_at,omitempty"`
}

func (r refreshRecord) issued(token string) Issued {
	return Issued{
		RefreshToken:     token,
		RefreshExpiresAt: r.Expires,
		FamilyID:         r.Family,
		ClientID:         r.ClientID,
		Scope:            r.Scope,
		Resource:         r.Resource,
		User:             r.User,
	}
}

// newRefresh makes a refresh token and its record; the caller stores it.
func (s *Store) newRefresh(fid, clientID, resource, scope string, user User, parent string) (token, hash string, rec refreshRecord) {
	now := s.nowUTC()
	token = newSecret()
	return token, hashSecret(token), refreshRecord{
		V:         1,
		Family:    fid,
		ClientID:  clientID,
		Resource:  resource,
		Scope:     scope,
		User:      user,
		Created:   now,
		Expires:   now.Add(s.refTTL),
		Parent:    parent,
		Confirmed: parent == "",
	}
}

// Rotate exchanges a refresh token for a new one (FRONTDOOR section 6).
//
// The rules: token A yields B, and A stays usable until B is first used, so
// a client whose response was lost can retry with A; the retry yields B'
// and B is dead. Once B has been used, any use of A is reuse. Presenting a
// dead successor (B after B' replaced it) is treated as reuse too: the
// legitimate client never received B, so whoever has it got it some other
// way. Reuse revokes the family and answers invalid_grant. The token must
// belong to req.ClientID, be unexpired, and its family active.
//
// Why at most one successor of A is ever usable: A's record holds a single
// Successor field, and a token is usable only if its parent's Successor
// names it. Rotating A changes that field only with If-Match on the ETag
// the rotation read A with; using B for the first time first sets A's
// SuccessorUsed, also with If-Match, and only if Successor still names B.
// Every change to A is thus serialized by its ETag: if a retry of A replaces
// B with B', a concurrent first use of B fails its If-Match, re-reads A,
// finds B' and refuses B; if the use of B lands first, the retry of A fails
// its If-Match, re-reads A, finds SuccessorUsed and refuses A as reuse. A's
// SuccessorUsed, once set, is never unset or re-pointed, so from then on B
// is A's one and only successor. Of N concurrent rotations of A, each
// either commits its own successor as A's single Successor (the last one
// to commit wins, the earlier ones are dead) or fails; none leaves two live.
//
// The new token's record is written before A is pointed at it, so a
// successor that A names always exists; one that never got named (a lost
// race, an error) is deleted and, were it left, could not be used.
func (s *Store) Rotate(ctx context.Context, req RotateRequest) (Issued, error) {
	if req.RefreshToken == "" {
		return Issued{}, oauthError(CodeInvalidRequest, "refresh_token is required")
	}
	if req.ClientID == "" {
		return Issued{}, oauthError(CodeInvalidRequest, "client_id is required")
	}
	unknown := oauthError(CodeInvalidGrant, "the refresh token is unknown, expired or revoked")
	if !plausibleSecret(req.RefreshToken) {
		return Issued{}, unknown
	}
	hash := hashSecret(req.RefreshToken)
	name := refreshName(hash)

	var (
		next      Issued
		nextHash  string
		committed bool
	)
	defer func() {
		if nextHash != "" && !committed {
			s.cleanup(ctx, refreshName(nextHash))
		}
	}()
	// The family is read once: a revocation that lands during the loop is
	// caught at the next use, like one that lands just after it.
	var (
		familyChecked  bool
		familyLastUsed time.Time
	)

	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := backoff(ctx, attempt); err != nil {
				return Issued{}, err
			}
		}
		var rec refreshRecord
		etag, err := s.read(ctx, name, &rec)
		if errors.Is(err, storage.ErrNotFound) {
			return Issued{}, unknown
		}
		if err != nil {
			return Issued{}, fmt.Errorf("reading the refresh token: %w", err)
		}
		now := s.nowUTC()
		switch {
		case rec.ClientID != req.ClientID:
			return Issued{}, oauthError(CodeInvalidGrant, "the refresh token was issued to another client")
		case !now.Before(rec.Expires):
			return Issued{}, oauthError(CodeInvalidGrant, "the refresh token has expired")
		case req.Resource != "" && req.Resource != rec.Resource:
			return Issued{}, oauthError(CodeInvalidTarget, "resource differs from the one the refresh token was issued for")
		}
		if !familyChecked {
			fam, err := s.getFamily(ctx, rec.Family)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return Issued{}, err
			}
			if err != nil || fam.Status != FamilyActive {
				return Issued{}, oauthError(CodeInvalidGrant, "the refresh token has been revoked")
			}
			familyChecked, familyLastUsed = true, fam.LastUsed
		}

		if nextHash != "" && rec.Successor == nextHash {
			// Our pointer landed although the write reported a lost race
			// (the SDK retried a write whose response was lost).
			committed = true
			return next, nil
		}
		if rec.SuccessorUsed {
			return Issued{}, s.reuse(ctx, rec.Family)
		}

		if !rec.Confirmed {
			// First use of this token (or a retry of a first use whose
			// response was lost): it must still be its parent's successor,
			// and the parent must learn that it has been used.
			var parent refreshRecord
			ptag, err := s.read(ctx, refreshName(rec.Parent), &parent)
			if errors.Is(err, storage.ErrNotFound) {
				return Issued{}, unknown
			}
			if err != nil {
				return Issued{}, fmt.Errorf("reading the refresh token: %w", err)
			}
			if parent.Successor != hash {
				// Replaced by a retry of the parent: this one is dead.
				return Issued{}, s.reuse(ctx, rec.Family)
			}
			if !parent.SuccessorUsed {
				parent.SuccessorUsed, parent.SuccessorUsedAt = true, &now
				err := s.replace(ctx, refreshName(rec.Parent), parent, ptag)
				if errors.Is(err, storage.ErrConflict) {
					continue
				}
				if err != nil {
					return Issued{}, fmt.Errorf("updating the refresh token: %w", err)
				}
			}
		}

		if now.Sub(familyLastUsed) >= TouchInterval {
			// Before the successor exists: see touchFamily. Failing here
			// leaves this token as it was, so the client can retry it.
			if err := s.touchFamily(ctx, rec.Family); err != nil {
				return Issued{}, err
			}
			familyLastUsed = now
		}
		if nextHash == "" {
			var token string
			var nrec refreshRecord
			token, nextHash, nrec = s.newRefresh(rec.Family, rec.ClientID, rec.Resource, rec.Scope, rec.User, hash)
			if err := s.create(ctx, refreshName(nextHash), nrec); err != nil {
				return Issued{}, fmt.Errorf("storing the refresh token: %w", err)
			}
			next = nrec.issued(token)
		}
		rec.Confirmed = true
		rec.Successor, rec.SuccessorIssuedAt = nextHash, &now
		rec.SuccessorUsed, rec.SuccessorUsedAt = false, nil
		err = s.replace(ctx, name, rec, etag)
		if errors.Is(err, storage.ErrConflict) {
			continue
		}
		if err != nil {
			return Issued{}, fmt.Errorf("updating the refresh token: %w", err)
		}
		committed = true
		return next, nil
	}
	return Issued{}, contended()
}

// reuse revokes a family whose used or dead refresh token came back and
// returns the invalid_grant to answer with.
func (s *Store) reuse(ctx context.Context, fid string) error {
	if err := s.revokeFamily(ctx, fid, ReasonRefreshReuse); err != nil {
		return err
	}
	return oauthError(CodeInvalidGrant, "the refresh token was already used; the session has been revoked and must sign in again")
}

// RevokeToken revokes the family of a refresh token (RFC 7009). A token
// that is unknown, expired or not a refresh token at all is no error: the
// RFC has the server answer success either way, so that revocation reveals
// nothing. Access tokens are revoked by their fid with RevokeFamily.
func (s *Store) RevokeToken(ctx context.Context, token string) error {
	if !plausibleSecret(token) {
		return nil
	}
	var rec refreshRecord
	_, err := s.read(ctx, refreshName(hashSecret(token)), &rec)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading the refresh token: %w", err)
	}
	return s.revokeFamily(ctx, rec.Family, ReasonRevoked)
}
