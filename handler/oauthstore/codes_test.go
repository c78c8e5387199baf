package oauthstore

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCreateCodeValidates(t *testing.T) {
	e := startEnv(t)
	st := e.store(t, newClock())
	c := registerClient(t, st)
	_, ch := pkce()
	good := Grant{ClientID: c.ClientID, RedirectURI: testRedirect, CodeChallenge: ch, Resource: testResource,
		Scope: "mcp.tools", User: User{TenantID: randomGUID(), ObjectID: randomGUID()}}

	tests := []struct {
		name   string
		change func(g *Grant)
		msg    string
	}{
		{"unknown client", func(g *Grant) { g.ClientID = "nope" }, "not a registered client"},
		{"malformed client", func(g *Grant) { g.ClientID = "a/b" }, "client_id"},
		{"unregistered redirect", func(g *Grant) { g.RedirectURI = "https://evil.example.com/cb" }, "not registered"},
		{"redirect path differs", func(g *Grant) { g.RedirectURI = "https://app.example.com/cb/" }, "not registered"},
		{"plain method", func(g *Grant) { g.CodeChallengeMethod = "plain" }, "S256"},
		{"short challenge", func(g *Grant) { g.CodeChallenge = ch[:42] }, "code_challenge"},
		{"challenge alphabet", func(g *Grant) { g.CodeChallenge = ch[:42] + "=" }, "code_challenge"},
		{"no resource", func(g *Grant) { g.Resource = "" }, "resource"},
		{"bad scope", func(g *Grant) { g.Scope = "a  b" }, "scope"},
		{"tid", func(g *Grant) { g.User.TenantID = "x" }, "tid"},
		{"oid", func(g *Grant) { g.User.ObjectID = "../x" }, "oid"},
		{"sub", func(g *Grant) { g.User.Subject = "someone-else" }, "sub"},
		{"name", func(g *Grant) { g.User.Name = strings.Repeat("x", MaxUserTextLength+1) }, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := good
			tt.change(&g)
			_, err := st.CreateCode(t.Context(), g)
			wantOAuth(t, err, CodeInvalidRequest)
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}

	// The loopback exception applies to the authorization request too.
	g := good
	g.RedirectURI = "http://127.0.0.1:50123/callback"
	if _, err := st.CreateCode(t.Context(), g); err != nil {
		t.Errorf("CreateCode with a loopback port that differs from the registration: %v", err)
	}
}

func TestCodeLifecycle(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)
	ctx := t.Context()

	t.Run("redeem", func(t *testing.T) {
		f := newFlow(t, st)
		if len(f.code) != 43 {
			t.Errorf("code has %d characters; want 43 (256 bits base64url)", len(f.code))
		}
		// Only the hash is stored.
		if _, _, err := st.readRaw(ctx, codeName(f.code)); err == nil {
			t.Error("a code is stored under its plain text")
		}
		is, err := st.RedeemCode(ctx, f.redeem())
		if err != nil {
			t.Fatal(err)
		}
		if is.ClientID != f.client.ClientID || is.Resource != testResource || is.Scope != "mcp.tools" || is.User != f.user {
			t.Errorf("issued = %+v; want the grant's client, resource, scope and user %+v", is, f.user)
		}
		if !isID(is.FamilyID) || len(is.RefreshToken) != 43 || !is.RefreshExpiresAt.Equal(clk.Now().Add(DefaultRefreshTTL)) {
			t.Errorf("issued = %+v; want a family id, a 43-character token valid 30 days", is)
		}
		if active, err := st.FamilyStatus(ctx, is.FamilyID); !active || err != nil {
			t.Errorf("FamilyStatus = %v, %v; want active", active, err)
		}
		// Without resource in the token request the grant's is used.
		f2 := newFlow(t, st)
		req := f2.redeem()
		req.Resource = ""
		if is, err := st.RedeemCode(ctx, req); err != nil || is.Resource != testResource {
			t.Errorf("redeem without resource = %+v, %v", is, err)
		}
	})

	t.Run("replay revokes the family", func(t *testing.T) {
		f, is := issue(t, st)
		_, err := st.RedeemCode(ctx, f.redeem())
		wantOAuth(t, err, CodeInvalidGrant)
		if active, _ := st.FamilyStatus(ctx, is.FamilyID); active {
			t.Error("the family survived a replayed code")
		}
		_, err = st.Rotate(ctx, RotateRequest{RefreshToken: is.RefreshToken, ClientID: f.client.ClientID})
		wantOAuth(t, err, CodeInvalidGrant)
	})

	t.Run("expired", func(t *testing.T) {
		f := newFlow(t, st)
		clk.Advance(DefaultCodeTTL)
		_, err := st.RedeemCode(ctx, f.redeem())
		wantOAuth(t, err, CodeInvalidGrant)
		if !strings.Contains(err.Error(), "expired") {
			t.Errorf("error = %v; want it to say expired", err)
		}
		f = newFlow(t, st)
		clk.Advance(DefaultCodeTTL - time.Second)
		if _, err := st.RedeemCode(ctx, f.redeem()); err != nil {
			t.Errorf("redeem a second before expiry: %v", err)
		}
	})

	burns := []struct {
		name   string
		change func(r *RedeemRequest)
		code   string
	}{
		{"wrong client", func(r *RedeemRequest) { r.ClientID = "other-client" }, CodeInvalidGrant},
		{"missing client", func(r *RedeemRequest) { r.ClientID = "" }, CodeInvalidRequest},
		{"wrong redirect", func(r *RedeemRequest) { r.RedirectURI = "https://app.example.com/cb" }, CodeInvalidGrant},
		{"loopback port differs", func(r *RedeemRequest) { r.RedirectURI = "http://127.0.0.1:1/callback" }, CodeInvalidGrant},
		{"missing redirect", func(r *RedeemRequest) { r.RedirectURI = "" }, CodeInvalidRequest},
		{"wrong resource", func(r *RedeemRequest) { r.Resource = testResource + "/sse" }, CodeInvalidTarget},
		{"wrong verifier", func(r *RedeemRequest) { r.CodeVerifier = randomString(32) }, CodeInvalidGrant},
		{"short verifier", func(r *RedeemRequest) { r.CodeVerifier = r.CodeVerifier[:42] }, CodeInvalidGrant},
		{"verifier alphabet", func(r *RedeemRequest) { r.CodeVerifier += "+" }, CodeInvalidGrant},
		{"challenge as verifier", func(r *RedeemRequest) { _, r.CodeVerifier = pkce() }, CodeInvalidGrant},
		{"missing verifier", func(r *RedeemRequest) { r.CodeVerifier = "" }, CodeInvalidRequest},
	}
	for _, tt := range burns {
		t.Run("burns on "+tt.name, func(t *testing.T) {
			f := newFlow(t, st)
			bad := f.redeem()
			tt.change(&bad)
			_, err := st.RedeemCode(ctx, bad)
			wantOAuth(t, err, tt.code)
			// The right request now fails too: the code is burnt.
			_, err = st.RedeemCode(ctx, f.redeem())
			wantOAuth(t, err, CodeInvalidGrant)
			if !strings.Contains(err.Error(), "already used") {
				t.Errorf("after a failed redeem: %v; want already used", err)
			}
		})
	}

	t.Run("unknown and malformed codes", func(t *testing.T) {
		for _, code := range []string{randomString(32), "x", strings.Repeat("a", 600), "a b", "\x00"} {
			_, err := st.RedeemCode(ctx, RedeemRequest{Code: code, ClientID: "c", RedirectURI: testRedirect, CodeVerifier: randomString(32)})
			wantOAuth(t, err, CodeInvalidGrant)
		}
		_, err := st.RedeemCode(ctx, RedeemRequest{})
		wantOAuth(t, err, CodeInvalidRequest)
	})
}

// Of 20 concurrent redeems of one code exactly one succeeds. The others are
// replays and revoke the family the winner created (RFC 6749 section
// 4.1.2), so the winner's refresh token ends up revoked too.
func TestRedeemConcurrent(t *testing.T) {
	e := startEnv(t)
	st := e.store(t, newClock())
	f := newFlow(t, st)

	const n = 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		wins    []Issued
		refused int
		other   []error
	)
	start := make(chan struct{})
	for range n {
		wg.Go(func() {
			<-start
			is, err := st.RedeemCode(t.Context(), f.redeem())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, is)
			case oauthCode(err) == CodeInvalidGrant:
				refused++
			default:
				other = append(other, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if len(wins) != 1 || refused != n-1 || len(other) > 0 {
		t.Fatalf("%d successes, %d invalid_grant, other errors %v; want exactly 1 and %d", len(wins), refused, other, n-1)
	}
	if active, _ := st.FamilyStatus(t.Context(), wins[0].FamilyID); active {
		t.Error("the replays did not revoke the winner's family")
	}
	// The losers' families and tokens were deleted, not left behind.
	var families int
	pager := e.clients.Blob.NewListBlobsFlatPager(st.container.Name(), nil)
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			if strings.HasPrefix(*b.Name, "families/") {
				families++
			}
		}
	}
	if families != 1 {
		t.Errorf("%d families stored; want only the winner's", families)
	}
}
