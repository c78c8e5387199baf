package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRevokedFamilyStopsAccessTokens drives the internal OAuth API of the
// real binary as API Management would: register a client, store and redeem a
// code (which creates a token family), then revoke the family. A live
// access token of that family stops working within the family check's cache
// time; the internal API refuses callers without its key.
func TestRevokedFamilyStopsAccessTokens(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	internalKey := base64.StdEncoding.EncodeToString(key)
	st := startStack(t, map[string]string{"MCP_INTERNAL_KEY": internalKey, "MCP_FAMILY_CHECK_SECONDS": "1"})
	base := st.Handler.BaseURL
	internal := func(method, path string, body any, withKey bool) (int, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body)
		if body == nil {
			b = nil
		}
		hdr := map[string]string{}
		if withKey {
			hdr["x-internal-key"] = internalKey
		}
		resp, out := do(t, method, base+"/internal/oauth/"+path, "", string(b), hdr)
		var m map[string]any
		_ = json.Unmarshal([]byte(out), &m)
		return resp.StatusCode, m
	}

	if code, _ := internal("POST", "clients", map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}}, false); code != 401 {
		t.Fatalf("internal API without its key: %d", code)
	}
	code, client := internal("POST", "clients", map[string]any{"redirect_uris": []string{"http://127.0.0.1/cb"}, "client_name": "e2e"}, true)
	if code != 201 {
		t.Fatalf("register: %d %v", code, client)
	}
	verifier := strings.Repeat("v", 43)
	sum := sha256.Sum256([]byte(verifier))
	tid, oid := newUser()
	code, issued := internal("POST", "codes", map[string]any{
		"client_id": client["client_id"], "redirect_uri": "http://127.0.0.1/cb",
		"code_challenge": base64.RawURLEncoding.EncodeToString(sum[:]), "code_challenge_method": "S256",
		"resource": base + "/mcp", "scope": "mcp.tools", "tid": tid, "oid": oid, "name": "E2E",
	}, true)
	if code != 201 {
		t.Fatalf("create code: %d %v", code, issued)
	}
	code, grant := internal("POST", "token/authorization_code", map[string]any{
		"code": issued["code"], "client_id": client["client_id"], "redirect_uri": "http://127.0.0.1/cb", "code_verifier": verifier,
	}, true)
	if code != 200 || grant["fid"] == "" {
		t.Fatalf("redeem: %d %v", code, grant)
	}

	claims := st.Issuer.User(tid, oid)
	claims.FamilyID = grant["fid"].(string)
	tok := st.Issuer.Mint(t, claims)
	call := func() int {
		resp, _ := do(t, "POST", base+"/mcp", tok, initBody, nil)
		return resp.StatusCode
	}
	if got := call(); got != http.StatusOK {
		t.Fatalf("token of an active family: %d", got)
	}
	// A token whose family the store never issued is refused outright.
	stray := st.Issuer.Token(t, tid, oid)
	if resp, _ := do(t, "POST", base+"/mcp", stray, initBody, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("token of an unknown family: %d", resp.StatusCode)
	}

	if code, _ := internal("POST", "families/"+claims.FamilyID+"/revoke", map[string]any{}, true); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for call() != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("token of a revoked family still accepted after 10 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
}
