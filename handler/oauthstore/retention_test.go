package oauthstore

import (
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
)

// The storage lifecycle rules (infra/modules/storage.bicep, checked by
// e2e/deploy against RecordKinds) delete records by name prefix and blob
// last-modified time. These tests hold up what they rely on: RecordKinds
// names every prefix the store writes, and a used record's blob is
// rewritten at least once per TouchInterval.

func TestRecordKindPrefixesAreDisjoint(t *testing.T) {
	kinds := RecordKinds()
	if len(kinds) == 0 {
		t.Fatal("RecordKinds is empty")
	}
	for i, a := range kinds {
		if a.Prefix == "" || !strings.HasSuffix(a.Prefix, "/") || a.KeepFor <= 0 {
			t.Errorf("RecordKinds()[%d] = %+v; want a prefix ending in / and a positive KeepFor", i, a)
		}
		for j, b := range kinds {
			if i != j && strings.HasPrefix(a.Prefix, b.Prefix) {
				t.Errorf("prefix %q lies within %q: a rule for one would delete the other", a.Prefix, b.Prefix)
			}
		}
	}
}

// TestRecordKindsNameEveryBlob runs every operation that writes and lists
// what is stored: each blob must fall under exactly one RecordKinds prefix
// (else no lifecycle rule deletes it), and each prefix must be used (else
// the list has a stale entry).
func TestRecordKindsNameEveryBlob(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)

	f, a := issue(t, st)
	b := mustRotate(t, st, f, a.RefreshToken)
	clk.Advance(TouchInterval + time.Minute)
	mustRotate(t, st, f, b.RefreshToken) // touches family and client
	burnt := newFlow(t, st)
	req := burnt.redeem()
	req.CodeVerifier = strings.Repeat("x", MinCodeVerifierLength)
	if _, err := st.RedeemCode(t.Context(), req); err == nil {
		t.Fatal("RedeemCode with a wrong verifier succeeded")
	}
	if err := st.RevokeToken(t.Context(), a.RefreshToken); err != nil {
		t.Fatalf("RevokeToken: %v", err)
	}

	seen := map[string]int{}
	pager := e.clients.Blob.NewListBlobsFlatPager(st.container.Name(), nil)
	for pager.More() {
		page, err := pager.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, item := range page.Segment.BlobItems {
			var kinds []string
			for _, k := range RecordKinds() {
				if strings.HasPrefix(*item.Name, k.Prefix) {
					kinds = append(kinds, k.Prefix)
				}
			}
			if len(kinds) != 1 {
				t.Errorf("blob %q falls under the RecordKinds prefixes %q; want exactly one", *item.Name, kinds)
				continue
			}
			seen[kinds[0]]++
		}
	}
	for _, k := range RecordKinds() {
		if seen[k.Prefix] == 0 {
			t.Errorf("no blob under %q was written; is the RecordKinds entry stale?", k.Prefix)
		}
	}
}

// TestUseRewritesRecords checks that use moves a record's blob last-modified
// time forward (the lifecycle rules count from it), and that it does so at
// most once per TouchInterval: the lag RecordKinds allows for.
func TestUseRewritesRecords(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)

	type props struct {
		modified time.Time
		etag     string
	}
	get := func(name string) props {
		t.Helper()
		resp, err := st.blob(name).GetProperties(t.Context(), nil)
		if err != nil || resp.LastModified == nil || resp.ETag == nil {
			t.Fatalf("GetProperties(%s): %v", name, err)
		}
		return props{*resp.LastModified, string(*resp.ETag)}
	}
	same := func(x, y props) bool { return x.etag == y.etag && x.modified.Equal(y.modified) }
	// Last-Modified has a resolution of one second.
	tick := func() { time.Sleep(1100 * time.Millisecond) }
	keepFor := map[string]time.Duration{}
	for _, k := range RecordKinds() {
		keepFor[k.Prefix] = k.KeepFor
	}

	f, a := issue(t, st)
	client, family := clientName(f.client.ClientID), familyName(a.FamilyID)
	c0, f0 := get(client), get(family)

	// Within TouchInterval, use writes neither record.
	clk.Advance(TouchInterval - time.Minute)
	tick()
	if _, err := st.GetClient(t.Context(), f.client.ClientID); err != nil {
		t.Fatal(err)
	}
	if got := get(client); !same(got, c0) {
		t.Errorf("client rewritten within TouchInterval: %v -> %v", c0, got)
	}

	// Past it, a read of the client rewrites it.
	clk.Advance(2 * time.Minute)
	if _, err := st.GetClient(t.Context(), f.client.ClientID); err != nil {
		t.Fatal(err)
	}
	c1 := get(client)
	if c1.etag == c0.etag || !c1.modified.After(c0.modified) {
		t.Errorf("GetClient a TouchInterval after the last write did not rewrite the client: %v -> %v", c0, c1)
	}

	// Past it, a rotation rewrites the family and, through it, the client.
	clk.Advance(TouchInterval)
	tick()
	b := mustRotate(t, st, f, a.RefreshToken)
	f1, c2 := get(family), get(client)
	if f1.etag == f0.etag || !f1.modified.After(f0.modified) {
		t.Errorf("Rotate a TouchInterval after the last write did not rewrite the family: %v -> %v", f0, f1)
	}
	if c2.etag == c1.etag || !c2.modified.After(c1.modified) {
		t.Errorf("Rotate a TouchInterval after the last write did not rewrite the client: %v -> %v", c1, c2)
	}
	familyWritten := clk.Now()

	// The worst case for families: a rotation just inside TouchInterval
	// issues a token without rewriting the family, and that token must
	// expire before the family may be deleted.
	clk.Advance(TouchInterval - time.Millisecond)
	c := mustRotate(t, st, f, b.RefreshToken)
	if got := get(family); !same(got, f1) {
		t.Errorf("family rewritten within TouchInterval: %v -> %v", f1, got)
	}
	if limit := familyWritten.Add(keepFor[FamilyPrefix]); c.RefreshExpiresAt.After(limit) {
		t.Errorf("a refresh token expiring %v outlives its family's KeepFor (%v after its last write, %v)", c.RefreshExpiresAt, keepFor[FamilyPrefix], limit)
	}
	// Likewise the refresh record b, last written when c was issued, must
	// outlive c, which reads it on first use.
	if limit := clk.Now().Add(keepFor[RefreshPrefix]); c.RefreshExpiresAt.After(limit) {
		t.Errorf("refresh token expiring %v outlives its parent's KeepFor (until %v)", c.RefreshExpiresAt, limit)
	}
}

// TestRotationNeedsTheFamilyTouch: when a rotation is due to touch its
// family and that write fails, the rotation fails rather than issue a
// successor the lifecycle rule could outlive (it deletes a family a fixed
// time after its last write), and the token is left usable for a retry.
func TestRotationNeedsTheFamilyTouch(t *testing.T) {
	e := startEnv(t)
	clk := newClock()
	st := e.store(t, clk)
	f, a := issue(t, st)

	// A lease makes every write of the family blob fail (412
	// LeaseIdMissing): a storage failure the store cannot take for a race.
	lc, err := lease.NewBlobClient(st.blob(familyName(a.FamilyID)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.AcquireLease(t.Context(), -1, nil); err != nil {
		t.Fatal(err)
	}

	// Within TouchInterval nothing needs the family written.
	b := mustRotate(t, st, f, a.RefreshToken)
	clk.Advance(TouchInterval + time.Minute)
	if is, err := rotate(t, st, f, b.RefreshToken); err == nil {
		t.Fatalf("rotation succeeded although the family could not be touched: %+v", is)
	}

	if _, err := lc.ReleaseLease(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	c := mustRotate(t, st, f, b.RefreshToken) // the retry works
	if c.RefreshToken == "" || c.RefreshToken == b.RefreshToken {
		t.Fatalf("retry issued %+v", c)
	}
	mustRotate(t, st, f, c.RefreshToken)
}
