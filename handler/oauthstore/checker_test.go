package oauthstore

import (
	"errors"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

func TestFamilyChecker(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)
	ctx := t.Context()
	chk := NewFamilyChecker(st, 5*time.Second)

	isRevoked := func(err error) bool {
		var te *auth.TokenError
		return errors.As(err, &te) && errors.Is(err, auth.ErrInvalidToken)
	}

	_, a := issue(t, st)
	if err := chk.Check(ctx, auth.Identity{FamilyID: a.FamilyID}); err != nil {
		t.Fatalf("active family: %v", err)
	}
	if err := st.RevokeFamily(ctx, a.FamilyID); err != nil {
		t.Fatal(err)
	}
	// Within the TTL the cached answer stands; that is the price of not
	// reading storage on every request, and the TTL bounds it.
	if err := chk.CheckFamily(ctx, a.FamilyID); err != nil {
		t.Errorf("within the TTL: %v; want the cached active", err)
	}
	clk.Advance(5 * time.Second)
	if err := chk.CheckFamily(ctx, a.FamilyID); !isRevoked(err) {
		t.Errorf("after the TTL: %v; want a TokenError", err)
	}

	for _, fid := range []string{newID(), "", "a/b", "a.b"} {
		if err := chk.CheckFamily(ctx, fid); !isRevoked(err) {
			t.Errorf("CheckFamily(%q) = %v; want a TokenError", fid, err)
		}
	}

	// Storage down: a cached active answer still holds for its TTL, an
	// uncached family is an error that is not a TokenError (503, not 401),
	// and the failure is not cached.
	_, b := issue(t, st)
	_, c := issue(t, st)
	if err := chk.CheckFamily(ctx, b.FamilyID); err != nil {
		t.Fatal(err)
	}
	e.az.Stop()
	if err := chk.CheckFamily(ctx, b.FamilyID); err != nil {
		t.Errorf("cached while storage is down: %v", err)
	}
	err := chk.CheckFamily(ctx, c.FamilyID)
	if err == nil || isRevoked(err) || !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("uncached while storage is down: %v; want ErrUnavailable, not a TokenError", err)
	}
}

func TestFamilyCheckerEviction(t *testing.T) {
	// The bound is enforced without storage: malformed fids never reach
	// it, so fill the map directly.
	clk := newClock()
	chk := NewFamilyChecker(New(nil, "x", Options{Now: clk.Now}), time.Second)
	for i := range maxCheckEntries {
		chk.entries[randomHex(8)+string(rune('a'+i%26))] = checkEntry{active: true, expires: clk.Now().Add(time.Second)}
	}
	chk.evictLocked(clk.Now())
	if len(chk.entries) != 0 {
		t.Errorf("%d entries after evicting a full cache of fresh entries; want 0", len(chk.entries))
	}
	chk.entries["old"] = checkEntry{expires: clk.Now()}
	chk.entries["new"] = checkEntry{expires: clk.Now().Add(time.Second)}
	chk.evictLocked(clk.Now())
	if _, ok := chk.entries["old"]; ok || len(chk.entries) != 1 {
		t.Errorf("entries = %v; want only the unexpired one", chk.entries)
	}
}

func TestStorageUnavailable(t *testing.T) {
	e := startEnv(t)
	st := e.store(t, newClock())
	f, a := issue(t, st)
	e.az.Stop()
	ctx := t.Context()

	_, err := st.RegisterClient(ctx, ClientMetadata{RedirectURIs: []string{testRedirect}})
	check := func(name string, err error) {
		t.Helper()
		if !errors.Is(err, storage.ErrUnavailable) {
			t.Errorf("%s while storage is down = %v; want ErrUnavailable", name, err)
		}
	}
	check("RegisterClient", err)
	_, err = st.GetClient(ctx, f.client.ClientID)
	check("GetClient", err)
	_, err = st.RedeemCode(ctx, f.redeem())
	check("RedeemCode", err)
	_, err = st.Rotate(ctx, RotateRequest{RefreshToken: a.RefreshToken, ClientID: f.client.ClientID})
	check("Rotate", err)
	check("RevokeToken", st.RevokeToken(ctx, a.RefreshToken))
	check("RevokeFamily", st.RevokeFamily(ctx, a.FamilyID))
	_, err = st.FamilyStatus(ctx, a.FamilyID)
	check("FamilyStatus", err)
}
