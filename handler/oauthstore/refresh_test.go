package oauthstore

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

func rotate(t *testing.T, st *Store, f flow, token string) (Issued, error) {
	t.Helper()
	return st.Rotate(t.Context(), RotateRequest{RefreshToken: token, ClientID: f.client.ClientID})
}

func mustRotate(t *testing.T, st *Store, f flow, token string) Issued {
	t.Helper()
	is, err := rotate(t, st, f, token)
	if err != nil {
		t.Fatalf("Rotate: %v", err)
	}
	return is
}

func wantFamily(t *testing.T, st *Store, fid string, active bool) {
	t.Helper()
	got, err := st.FamilyStatus(t.Context(), fid)
	if err != nil || got != active {
		t.Fatalf("FamilyStatus = %v, %v; want %v", got, err, active)
	}
}

func TestRotation(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)

	t.Run("chain A to B to C", func(t *testing.T) {
		f, a := issue(t, st)
		b := mustRotate(t, st, f, a.RefreshToken)
		if b.RefreshToken == a.RefreshToken || b.FamilyID != a.FamilyID || b.User != a.User ||
			b.Scope != a.Scope || b.Resource != a.Resource || b.ClientID != a.ClientID {
			t.Fatalf("B = %+v; want a new token of A's family and grant %+v", b, a)
		}
		c := mustRotate(t, st, f, b.RefreshToken)
		d := mustRotate(t, st, f, c.RefreshToken)
		if !live(t, st, d.RefreshToken) || live(t, st, a.RefreshToken) || live(t, st, b.RefreshToken) {
			t.Error("after A->B->C->D only C and D should be live")
		}
		wantFamily(t, st, a.FamilyID, true)
	})

	t.Run("A stays usable until B is used", func(t *testing.T) {
		f, a := issue(t, st)
		b := mustRotate(t, st, f, a.RefreshToken)
		if !live(t, st, a.RefreshToken) || !live(t, st, b.RefreshToken) {
			t.Fatal("before B is used both A and B should be live")
		}
		mustRotate(t, st, f, b.RefreshToken)
		if live(t, st, a.RefreshToken) {
			t.Fatal("A is still live after B was used")
		}
	})

	t.Run("lost response retry", func(t *testing.T) {
		// The client sends A, the response with B is lost, it retries A.
		f, a := issue(t, st)
		b1 := mustRotate(t, st, f, a.RefreshToken)
		b2 := mustRotate(t, st, f, a.RefreshToken)
		if b1.RefreshToken == b2.RefreshToken {
			t.Fatal("a retry returned the same token")
		}
		if live(t, st, b1.RefreshToken) || !live(t, st, b2.RefreshToken) {
			t.Fatal("after the retry only B' should be live")
		}
		// B' works, and keeps working after the retry.
		c := mustRotate(t, st, f, b2.RefreshToken)
		// The first B never reached the client; whoever presents it got it
		// some other way: refused, and the family revoked.
		_, err := rotate(t, st, f, b1.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
		wantFamily(t, st, a.FamilyID, false)
		_, err = rotate(t, st, f, c.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
	})

	t.Run("dead successor presented first", func(t *testing.T) {
		f, a := issue(t, st)
		b1 := mustRotate(t, st, f, a.RefreshToken)
		b2 := mustRotate(t, st, f, a.RefreshToken)
		_, err := rotate(t, st, f, b1.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
		wantFamily(t, st, a.FamilyID, false)
		_, err = rotate(t, st, f, b2.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
	})

	t.Run("reuse after successor used revokes the family", func(t *testing.T) {
		f, a := issue(t, st)
		b := mustRotate(t, st, f, a.RefreshToken)
		c := mustRotate(t, st, f, b.RefreshToken)
		_, err := rotate(t, st, f, a.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
		if !strings.Contains(err.Error(), "already used") {
			t.Errorf("reuse error = %v", err)
		}
		wantFamily(t, st, a.FamilyID, false)
		for _, tok := range []string{a.RefreshToken, b.RefreshToken, c.RefreshToken} {
			_, err := rotate(t, st, f, tok)
			wantOAuth(t, err, CodeInvalidGrant)
		}
	})

	t.Run("retry of B after C was issued", func(t *testing.T) {
		// B's own lost response: B is used (A is dead now), C is lost, B is
		// retried and yields C'.
		f, a := issue(t, st)
		b := mustRotate(t, st, f, a.RefreshToken)
		c1 := mustRotate(t, st, f, b.RefreshToken)
		c2 := mustRotate(t, st, f, b.RefreshToken)
		if live(t, st, c1.RefreshToken) || !live(t, st, c2.RefreshToken) {
			t.Fatal("only C' should be live")
		}
		mustRotate(t, st, f, c2.RefreshToken)
		wantFamily(t, st, a.FamilyID, true)
	})

	t.Run("checks", func(t *testing.T) {
		f, a := issue(t, st)
		_, err := st.Rotate(t.Context(), RotateRequest{RefreshToken: a.RefreshToken, ClientID: "another-client"})
		wantOAuth(t, err, CodeInvalidGrant)
		_, err = st.Rotate(t.Context(), RotateRequest{RefreshToken: a.RefreshToken, ClientID: f.client.ClientID, Resource: "https://elsewhere/mcp"})
		wantOAuth(t, err, CodeInvalidTarget)
		// Neither revoked anything nor used the token.
		is, err := st.Rotate(t.Context(), RotateRequest{RefreshToken: a.RefreshToken, ClientID: f.client.ClientID, Resource: testResource})
		if err != nil {
			t.Fatalf("Rotate after refused attempts: %v", err)
		}
		_, err = rotate(t, st, f, randomString(32))
		wantOAuth(t, err, CodeInvalidGrant)
		_, err = rotate(t, st, f, strings.Repeat("x", 1000))
		wantOAuth(t, err, CodeInvalidGrant)
		_, err = rotate(t, st, f, "")
		wantOAuth(t, err, CodeInvalidRequest)
		_, err = st.Rotate(t.Context(), RotateRequest{RefreshToken: is.RefreshToken})
		wantOAuth(t, err, CodeInvalidRequest)
		// A code is not a refresh token.
		f2 := newFlow(t, st)
		_, err = rotate(t, st, f2, f2.code)
		wantOAuth(t, err, CodeInvalidGrant)
	})

	t.Run("expiry", func(t *testing.T) {
		f, a := issue(t, st)
		clk.Advance(DefaultRefreshTTL - time.Minute)
		b := mustRotate(t, st, f, a.RefreshToken)
		if !b.RefreshExpiresAt.Equal(clk.Now().Add(DefaultRefreshTTL)) {
			t.Errorf("B expires %v; want 30 days from its issue", b.RefreshExpiresAt)
		}
		clk.Advance(DefaultRefreshTTL)
		_, err := rotate(t, st, f, b.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
		if !strings.Contains(err.Error(), "expired") {
			t.Errorf("error = %v; want expired", err)
		}
	})

	t.Run("family last_used is touched daily", func(t *testing.T) {
		f, a := issue(t, st)
		clk.Advance(25 * time.Hour)
		mustRotate(t, st, f, a.RefreshToken)
		fam, err := st.getFamily(t.Context(), a.FamilyID)
		if err != nil || !fam.LastUsed.Equal(clk.Now()) {
			t.Errorf("family = %+v, %v; want last_used now", fam, err)
		}
		c, err := st.GetClient(t.Context(), f.client.ClientID)
		if err != nil || !c.LastUsed.Equal(clk.Now()) {
			t.Errorf("client = %+v, %v; want last_used now", c, err)
		}
	})
}

// concurrentRotate runs n Rotate calls of one token at once and returns the
// tokens they issued. Calls may fail with contention (storage.ErrUnavailable);
// nothing else is acceptable.
func concurrentRotate(t *testing.T, st *Store, f flow, token string, n int) []Issued {
	t.Helper()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		out   []Issued
		start = make(chan struct{})
	)
	for range n {
		wg.Go(func() {
			<-start
			is, err := st.Rotate(t.Context(), RotateRequest{RefreshToken: token, ClientID: f.client.ClientID})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				out = append(out, is)
			case errors.Is(err, storage.ErrUnavailable):
				t.Logf("a rotation gave up under contention: %v", err)
			default:
				t.Errorf("concurrent Rotate: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(out) == 0 {
		t.Fatal("no concurrent rotation succeeded")
	}
	t.Logf("%d of %d concurrent rotations succeeded", len(out), n)
	return out
}

func TestRotateConcurrent(t *testing.T) {
	e := startEnv(t)
	st := e.store(t, newClock())
	const n = 20

	t.Run("at most one successor is live", func(t *testing.T) {
		f, a := issue(t, st)
		got := concurrentRotate(t, st, f, a.RefreshToken, n)
		var live1 []Issued
		for _, is := range got {
			if live(t, st, is.RefreshToken) {
				live1 = append(live1, is)
			}
		}
		if len(live1) != 1 {
			t.Fatalf("%d of %d successors are live; want exactly 1", len(live1), len(got))
		}
		// The live one really works, and is the only one that does: every
		// other successor is refused (and, being a dead successor,
		// revokes the family).
		mustRotate(t, st, f, live1[0].RefreshToken)
		for _, is := range got {
			if is.RefreshToken == live1[0].RefreshToken {
				continue
			}
			if _, err := rotate(t, st, f, is.RefreshToken); err == nil {
				t.Fatal("a second successor worked")
			}
		}
	})

	t.Run("try each in order", func(t *testing.T) {
		f, a := issue(t, st)
		got := concurrentRotate(t, st, f, a.RefreshToken, n)
		worked := 0
		for _, is := range got {
			if _, err := rotate(t, st, f, is.RefreshToken); err == nil {
				worked++
			}
		}
		if worked > 1 {
			t.Fatalf("%d of %d successors worked; want at most 1", worked, len(got))
		}
	})

	t.Run("concurrent first uses of B", func(t *testing.T) {
		// Many first uses of one successor at once: they all agree that B
		// is live (no reuse is detected), and at most one C stays live.
		f, a := issue(t, st)
		b := mustRotate(t, st, f, a.RefreshToken)
		got := concurrentRotate(t, st, f, b.RefreshToken, n)
		wantFamily(t, st, a.FamilyID, true)
		count := 0
		for _, is := range got {
			if live(t, st, is.RefreshToken) {
				count++
			}
		}
		if count != 1 {
			t.Fatalf("%d successors of B are live; want 1", count)
		}
		if live(t, st, a.RefreshToken) {
			t.Error("A is live after B was used")
		}
	})

	t.Run("retries of A race the first use of B", func(t *testing.T) {
		// Whatever order storage applies them in, A never ends up with two
		// live successors, and A and a used B are never both usable.
		for range 5 {
			f, a := issue(t, st)
			b := mustRotate(t, st, f, a.RefreshToken)
			var (
				wg         sync.WaitGroup
				mu         sync.Mutex
				fromA      []Issued
				bSucceeded bool
				start      = make(chan struct{})
			)
			for i := range 10 {
				wg.Go(func() {
					<-start
					tok := a.RefreshToken
					if i%2 == 1 {
						tok = b.RefreshToken
					}
					is, err := rotate(t, st, f, tok)
					if err != nil {
						return
					}
					mu.Lock()
					defer mu.Unlock()
					if i%2 == 1 {
						bSucceeded = true
					} else {
						fromA = append(fromA, is)
					}
				})
			}
			close(start)
			wg.Wait()
			arec, _ := refreshState(t, st, a.RefreshToken)
			if arec.SuccessorUsed && arec.Successor != hashSecret(b.RefreshToken) {
				// B' was used? Only B's users ran, so the used one is B.
				t.Fatalf("A's used successor is not B")
			}
			if bSucceeded && !arec.SuccessorUsed {
				t.Fatal("B was used but A does not know")
			}
			liveFromA := 0
			for _, is := range fromA {
				if live(t, st, is.RefreshToken) {
					liveFromA++
				}
			}
			if liveFromA > 1 || (liveFromA == 1 && live(t, st, b.RefreshToken)) {
				t.Fatalf("A has %d live successors besides B (live: %v)", liveFromA, live(t, st, b.RefreshToken))
			}
		}
	})
}

func TestRevocation(t *testing.T) {
	e := startEnv(t)
	st := e.store(t, newClock())
	ctx := t.Context()

	t.Run("refresh token revokes its family", func(t *testing.T) {
		f, a := issue(t, st)
		b := mustRotate(t, st, f, a.RefreshToken)
		if err := st.RevokeToken(ctx, a.RefreshToken); err != nil {
			t.Fatal(err)
		}
		wantFamily(t, st, a.FamilyID, false)
		_, err := rotate(t, st, f, b.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
		if err := st.RevokeToken(ctx, b.RefreshToken); err != nil {
			t.Errorf("revoking twice: %v", err)
		}
		if state, err := st.FamilyState(ctx, a.FamilyID); state != FamilyRevoked || err != nil {
			t.Errorf("FamilyState = %q, %v; want revoked", state, err)
		}
	})

	t.Run("unknown tokens are fine", func(t *testing.T) {
		for _, tok := range []string{"", randomString(32), "eyJhbGciOiJSUzI1NiJ9.e30.sig", strings.Repeat("x", 5000), "a\nb"} {
			if err := st.RevokeToken(ctx, tok); err != nil {
				t.Errorf("RevokeToken(%.20q) = %v; want nil", tok, err)
			}
		}
	})

	t.Run("family by id", func(t *testing.T) {
		f, a := issue(t, st)
		if err := st.RevokeFamily(ctx, a.FamilyID); err != nil {
			t.Fatal(err)
		}
		wantFamily(t, st, a.FamilyID, false)
		_, err := rotate(t, st, f, a.RefreshToken)
		wantOAuth(t, err, CodeInvalidGrant)
		for _, fid := range []string{newID(), "../x", ""} {
			if err := st.RevokeFamily(ctx, fid); err != nil {
				t.Errorf("RevokeFamily(%q) = %v; want nil", fid, err)
			}
			if state, err := st.FamilyState(ctx, fid); state != FamilyUnknown || err != nil {
				t.Errorf("FamilyState(%q) = %q, %v; want unknown", fid, state, err)
			}
		}
	})

	t.Run("concurrent revocations", func(t *testing.T) {
		_, a := issue(t, st)
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				if err := st.RevokeFamily(ctx, a.FamilyID); err != nil {
					t.Errorf("RevokeFamily: %v", err)
				}
			})
		}
		wg.Wait()
		wantFamily(t, st, a.FamilyID, false)
	})
}
