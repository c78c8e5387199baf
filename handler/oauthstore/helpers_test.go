package oauthstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/storage"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// clock is testenv's fake clock.
type clock = testenv.Clock

func newClock() *clock { return testenv.NewClock() }

// env is one Azurite shared by the subtests of a test; each store gets a
// container of its own.
type env struct {
	az      testenv.Azurite
	clients *storage.Clients
}

func startEnv(t *testing.T) *env {
	t.Helper()
	az := testenv.StartAzurite(t)
	c := az.Clients(t)
	return &env{az: az, clients: c}
}

// store returns a Store on a fresh container with the given clock.
func (e *env) store(t *testing.T, c *clock) *Store {
	t.Helper()
	name := "oauth" + strings.ToLower(randomHex(6))
	st := New(e.clients.Blob, name, Options{Now: c.Now})
	if err := st.EnsureContainer(t.Context()); err != nil {
		t.Fatalf("EnsureContainer: %v", err)
	}
	if err := st.EnsureContainer(t.Context()); err != nil {
		t.Fatalf("EnsureContainer on an existing container: %v", err)
	}
	return st
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func randomGUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// pkce returns a fresh verifier and its S256 challenge.
func pkce() (verifier, challenge string) {
	verifier = randomString(32) // 43 characters
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

const (
	testRedirect = "http://127.0.0.1:33418/callback"
	testResource = "https://gw.example.net/mcp"
)

func registerClient(t *testing.T, st *Store) Client {
	t.Helper()
	c, err := st.RegisterClient(t.Context(), ClientMetadata{
		RedirectURIs: []string{testRedirect, "https://app.example.com/cb"},
		ClientName:   "Test client",
	})
	if err != nil {
		t.Fatalf("RegisterClient: %v", err)
	}
	return c
}

// flow is one authorization: a client, a code for it and the verifier.
type flow struct {
	client   Client
	code     string
	verifier string
	user     User
}

func newFlow(t *testing.T, st *Store) flow {
	t.Helper()
	c := registerClient(t, st)
	v, ch := pkce()
	u := User{TenantID: randomGUID(), ObjectID: randomGUID(), Name: "Ada", PreferredUsername: "ada@example.com"}
	code, err := st.CreateCode(t.Context(), Grant{
		ClientID: c.ClientID, RedirectURI: testRedirect, CodeChallenge: ch,
		CodeChallengeMethod: "S256", Resource: testResource, Scope: "mcp.tools", User: u,
	})
	if err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	u.Subject = u.TenantID + ":" + u.ObjectID
	return flow{client: c, code: code, verifier: v, user: u}
}

func (f flow) redeem() RedeemRequest {
	return RedeemRequest{Code: f.code, ClientID: f.client.ClientID, RedirectURI: testRedirect, Resource: testResource, CodeVerifier: f.verifier}
}

// issue runs a flow to its first refresh token.
func issue(t *testing.T, st *Store) (flow, Issued) {
	t.Helper()
	f := newFlow(t, st)
	is, err := st.RedeemCode(t.Context(), f.redeem())
	if err != nil {
		t.Fatalf("RedeemCode: %v", err)
	}
	return f, is
}

// oauthCode returns the OAuth error code of err, or "".
func oauthCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func wantOAuth(t *testing.T, err error, code string) {
	t.Helper()
	if got := oauthCode(err); got != code {
		t.Fatalf("error = %v; want OAuth error %s", err, code)
	}
}

// refreshState reads a token's record, for assertions about storage.
func refreshState(t *testing.T, st *Store, token string) (refreshRecord, bool) {
	t.Helper()
	var rec refreshRecord
	_, err := st.read(t.Context(), refreshName(hashSecret(token)), &rec)
	if errors.Is(err, storage.ErrNotFound) {
		return rec, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec, true
}

// live reports whether token is, by the stored state, usable: its record
// exists, it is unused-successor-free or not yet superseded, and it is its
// parent's one successor. This is the predicate Rotate enforces, read
// directly so tests can assert it without consuming anything.
func live(t *testing.T, st *Store, token string) bool {
	t.Helper()
	rec, ok := refreshState(t, st, token)
	if !ok || rec.SuccessorUsed {
		return false
	}
	if active, err := st.FamilyStatus(t.Context(), rec.Family); err != nil || !active {
		return false
	}
	if rec.Parent == "" {
		return true
	}
	var parent refreshRecord
	if _, err := st.read(t.Context(), refreshName(rec.Parent), &parent); err != nil {
		return false
	}
	return parent.Successor == hashSecret(token)
}
