package snippets

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/mcp-apim/remote-mcp/handler/storage"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// newOwner returns a fresh "<tenant-guid>/<object-guid>" namespace.
func newOwner(t testing.TB) string {
	t.Helper()
	return guid() + "/" + guid()
}

func guid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// startStore starts Azurite and returns a Store on a ready container.
func startStore(t *testing.T) (*Store, testenv.Azurite) {
	t.Helper()
	az := testenv.StartAzurite(t)
	c := az.Clients(t)
	st := New(c.Blob, "snippets")
	if err := st.EnsureContainer(t.Context()); err != nil {
		t.Fatalf("EnsureContainer: %v", err)
	}
	if err := st.EnsureContainer(t.Context()); err != nil {
		t.Fatalf("EnsureContainer on an existing container: %v", err)
	}
	return st, az
}

// Arguments are checked before anything is sent, so a Store without a
// client is enough here.
func TestSaveRejectsBadArguments(t *testing.T) {
	st := New(nil, "snippets")
	owner := newOwner(t)
	tests := []struct {
		name, owner, snippet, content string
		opts                          SaveOptions
		kind                          error
		msg                           string
	}{
		{"owner", "not-an-owner", "a", "x", SaveOptions{}, storage.ErrInvalid, "user namespace"},
		{"owner upper case", strings.ToUpper(owner), "a", "x", SaveOptions{}, storage.ErrInvalid, "user namespace"},
		{"name", owner, "a/b", "x", SaveOptions{}, storage.ErrInvalid, "name contains '/'"},
		{"not utf-8", owner, "a", "\xff\xfe", SaveOptions{}, storage.ErrInvalid, "not valid UTF-8"},
		{"too large", owner, "a", strings.Repeat("x", MaxContentBytes+1), SaveOptions{}, storage.ErrTooLarge, "content is 262145 bytes; the limit is 262144 bytes (256 KiB)"},
		{"too large multibyte", owner, "a", strings.Repeat("é", MaxContentBytes/2) + "x", SaveOptions{}, storage.ErrTooLarge, "the limit is 262144 bytes"},
		{"content type", owner, "a", "x", SaveOptions{ContentType: "not a type"}, storage.ErrInvalid, "content_type is not a valid media type"},
		{"content type header injection", owner, "a", "x", SaveOptions{ContentType: "text/plain\r\nX-Evil: 1"}, storage.ErrInvalid, "printable ASCII"},
		{"content type non-ascii", owner, "a", "x", SaveOptions{ContentType: `text/plain; x="é"`}, storage.ErrInvalid, "printable ASCII"},
		{"content type too long", owner, "a", "x", SaveOptions{ContentType: "text/" + strings.Repeat("x", 124)}, storage.ErrInvalid, "at most 128 characters"},
		{"both conditions", owner, "a", "x", SaveOptions{IfMatch: `"0x1"`, IfNoneMatch: true}, storage.ErrInvalid, "cannot be used together"},
		{"etag with quote inside", owner, "a", "x", SaveOptions{IfMatch: `"0x"1"`}, storage.ErrInvalid, "if_match is not an etag"},
		{"etag with newline", owner, "a", "x", SaveOptions{IfMatch: "0x1\nX: y"}, storage.ErrInvalid, "if_match is not an etag"},
		{"etag empty quotes", owner, "a", "x", SaveOptions{IfMatch: `""`}, storage.ErrInvalid, "if_match is not an etag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.Save(t.Context(), tt.owner, tt.snippet, tt.content, tt.opts)
			if !errors.Is(err, tt.kind) || !strings.Contains(fmt.Sprint(err), tt.msg) {
				t.Errorf("Save = %v; want %v containing %q", err, tt.kind, tt.msg)
			}
		})
	}
	if _, err := st.List(t.Context(), owner, ListOptions{Limit: 101}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("List with limit 101 = %v; want ErrInvalid", err)
	}
	if _, err := st.List(t.Context(), owner, ListOptions{Limit: -1}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("List with limit -1 = %v; want ErrInvalid", err)
	}
	if _, err := st.List(t.Context(), owner, ListOptions{Prefix: "../"}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("List with prefix ../ = %v; want ErrInvalid", err)
	}
	if _, err := st.List(t.Context(), owner, ListOptions{Cursor: "a b\n"}); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("List with a control character in the cursor = %v; want ErrInvalid", err)
	}
	if _, err := st.Get(t.Context(), owner, ".."); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Get(..) = %v; want ErrInvalid", err)
	}
	if err := st.Delete(t.Context(), owner, "a", "x\"y"); !errors.Is(err, storage.ErrInvalid) {
		t.Errorf("Delete with a bad etag = %v; want ErrInvalid", err)
	}
}

func TestNormalizeETag(t *testing.T) {
	for in, want := range map[string]string{`"0x8D1"`: `"0x8D1"`, `0x8D1`: `"0x8D1"`, `*`: `*`} {
		got, err := normalizeETag(in)
		if err != nil || string(got) != want {
			t.Errorf("normalizeETag(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestStore(t *testing.T) {
	st, _ := startStore(t)

	t.Run("save, get, overwrite", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		content := "línea 1\n<xml attr=\"&\"> ✓ 🚀\n"
		saved, err := st.Save(ctx, owner, "notes.md", content, SaveOptions{})
		if err != nil {
			t.Fatalf("Save: %v", err)
		}
		if saved.Name != "notes.md" || saved.ContentType != DefaultContentType || saved.Size != int64(len(content)) ||
			!strings.HasPrefix(saved.ETag, `"`) || saved.LastModified.IsZero() {
			t.Errorf("Save returned %+v", saved)
		}
		got, err := st.Get(ctx, owner, "notes.md")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if got.Content != content || got.ETag != saved.ETag || got.ContentType != DefaultContentType || got.Size != saved.Size {
			t.Errorf("Get = %+v; saved %+v", got, saved)
		}

		again, err := st.Save(ctx, owner, "notes.md", "v2", SaveOptions{ContentType: "text/markdown; charset=utf-8"})
		if err != nil {
			t.Fatalf("overwrite: %v", err)
		}
		if again.ETag == saved.ETag {
			t.Error("the ETag did not change on overwrite")
		}
		got, _ = st.Get(ctx, owner, "notes.md")
		if got.Content != "v2" || got.ContentType != "text/markdown; charset=utf-8" {
			t.Errorf("after overwrite Get = %+v", got)
		}
	})

	t.Run("empty content", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		if _, err := st.Save(ctx, owner, "empty", "", SaveOptions{}); err != nil {
			t.Fatalf("Save: %v", err)
		}
		got, err := st.Get(ctx, owner, "empty")
		if err != nil || got.Content != "" || got.Size != 0 {
			t.Errorf("Get = %+v, %v", got, err)
		}
	})

	t.Run("missing", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		_, err := st.Get(ctx, owner, "nope")
		if !errors.Is(err, storage.ErrNotFound) || err.Error() != `snippet "nope" does not exist` {
			t.Errorf("Get missing = %v", err)
		}
		err = st.Delete(ctx, owner, "nope", "")
		if !errors.Is(err, storage.ErrNotFound) || err.Error() != `snippet "nope" does not exist` {
			t.Errorf("Delete missing = %v", err)
		}
	})

	t.Run("if-match and create-only", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		first, err := st.Save(ctx, owner, "doc", "one", SaveOptions{IfNoneMatch: true})
		if err != nil {
			t.Fatalf("create-only on a new name: %v", err)
		}
		_, err = st.Save(ctx, owner, "doc", "dup", SaveOptions{IfNoneMatch: true})
		if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), `snippet "doc" already exists`) {
			t.Errorf("create-only on an existing name = %v", err)
		}
		second, err := st.Save(ctx, owner, "doc", "two", SaveOptions{IfMatch: first.ETag})
		if err != nil {
			t.Fatalf("Save with the current quoted etag: %v", err)
		}
		_, err = st.Save(ctx, owner, "doc", "stale", SaveOptions{IfMatch: first.ETag})
		if !errors.Is(err, storage.ErrConflict) || !strings.Contains(err.Error(), "changed since you read it") || !strings.Contains(err.Error(), "get_snippet") {
			t.Errorf("Save with a stale etag = %v", err)
		}
		bare := strings.Trim(second.ETag, `"`)
		third, err := st.Save(ctx, owner, "doc", "three", SaveOptions{IfMatch: bare})
		if err != nil {
			t.Fatalf("Save with the current etag without quotes: %v", err)
		}
		if _, err := st.Save(ctx, owner, "other", "x", SaveOptions{IfMatch: third.ETag}); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("Save with if_match on a missing snippet = %v; want ErrConflict", err)
		}
		if err := st.Delete(ctx, owner, "doc", second.ETag); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("Delete with a stale etag = %v; want ErrConflict", err)
		}
		if err := st.Delete(ctx, owner, "doc", bare+"x"); !errors.Is(err, storage.ErrConflict) {
			t.Errorf("Delete with a wrong etag = %v; want ErrConflict", err)
		}
		if err := st.Delete(ctx, owner, "doc", third.ETag); err != nil {
			t.Fatalf("Delete with the current etag: %v", err)
		}
		if _, err := st.Get(ctx, owner, "doc"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get after Delete = %v; want ErrNotFound", err)
		}
	})

	t.Run("list pages", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		want := []string{"a1", "a2", "a3", "b1", "b2"}
		for _, n := range slices.Backward(want) {
			if _, err := st.Save(ctx, owner, n, "content of "+n, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		var got []string
		cursor, pages := "", 0
		for {
			page, err := st.List(ctx, owner, ListOptions{Limit: 2, Cursor: cursor})
			if err != nil {
				t.Fatalf("List page %d: %v", pages+1, err)
			}
			pages++
			if len(page.Items) > 2 {
				t.Errorf("page %d has %d items; limit was 2", pages, len(page.Items))
			}
			for _, it := range page.Items {
				got = append(got, it.Name)
				if it.Content != "" || it.Size != int64(len("content of "+it.Name)) || it.ETag == "" || it.ContentType != DefaultContentType || it.LastModified.IsZero() {
					t.Errorf("list item %+v", it)
				}
			}
			if page.NextCursor == "" {
				break
			}
			if pages > 10 {
				t.Fatal("paging does not end")
			}
			cursor = page.NextCursor
		}
		if !slices.Equal(got, want) || pages != 3 {
			t.Errorf("listed %v in %d pages; want %v in 3", got, pages, want)
		}

		page, err := st.List(ctx, owner, ListOptions{Prefix: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if names := itemNames(page); !slices.Equal(names, []string{"a1", "a2", "a3"}) || page.NextCursor != "" {
			t.Errorf("prefix a: %v (next %q)", names, page.NextCursor)
		}
		page, err = st.List(ctx, newOwner(t), ListOptions{})
		if err != nil || page.Items == nil || len(page.Items) != 0 || page.NextCursor != "" {
			t.Errorf("List of an empty namespace = %+v, %v; want an empty, non-nil page", page, err)
		}
	})

	t.Run("content size boundary", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		exact := strings.Repeat("é", MaxContentBytes/2) // 2 bytes each
		if _, err := st.Save(ctx, owner, "max", exact, SaveOptions{}); err != nil {
			t.Fatalf("Save of exactly %d bytes: %v", MaxContentBytes, err)
		}
		got, err := st.Get(ctx, owner, "max")
		if err != nil || got.Content != exact || got.Size != MaxContentBytes {
			t.Fatalf("Get of the largest snippet: size %d, %v", got.Size, err)
		}
		_, err = st.Save(ctx, owner, "over", exact+"x", SaveOptions{})
		if !errors.Is(err, storage.ErrTooLarge) {
			t.Errorf("Save of %d bytes = %v; want ErrTooLarge", MaxContentBytes+1, err)
		}
		if _, err := st.Get(ctx, owner, "over"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("a rejected save left something behind: %v", err)
		}
	})

	t.Run("owners are isolated", func(t *testing.T) {
		ctx, alice, bob := t.Context(), newOwner(t), newOwner(t)
		for _, n := range []string{"secret1", "secret2", "secret3"} {
			if _, err := st.Save(ctx, alice, n, "alice's "+n, SaveOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := st.Get(ctx, bob, "secret1"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("bob reads alice's snippet: %v", err)
		}
		if err := st.Delete(ctx, bob, "secret1", ""); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("bob deletes alice's snippet: %v", err)
		}
		page, err := st.List(ctx, bob, ListOptions{})
		if err != nil || len(page.Items) != 0 {
			t.Errorf("bob lists %v, %v", itemNames(page), err)
		}
		// A cursor is the service's marker; one taken from alice's
		// listing must not show bob anything of hers.
		alicePage, err := st.List(ctx, alice, ListOptions{Limit: 1})
		if err != nil || alicePage.NextCursor == "" {
			t.Fatalf("alice's first page: %+v, %v", alicePage, err)
		}
		page, err = st.List(ctx, bob, ListOptions{Cursor: alicePage.NextCursor})
		if err != nil && !errors.Is(err, storage.ErrInvalid) {
			t.Fatalf("bob with alice's cursor: %v", err)
		}
		if len(page.Items) != 0 {
			t.Errorf("bob with alice's cursor sees %v", itemNames(page))
		}
		if got, err := st.Get(ctx, alice, "secret1"); err != nil || got.Content != "alice's secret1" {
			t.Errorf("alice's snippet after bob's attempts: %+v, %v", got, err)
		}
	})

	t.Run("concurrent if-match updates", func(t *testing.T) {
		ctx, owner := t.Context(), newOwner(t)
		base, err := st.Save(ctx, owner, "counter", "0", SaveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		const n = 8
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []string
			others  []error
		)
		start := make(chan struct{})
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				content := fmt.Sprintf("writer %d", i)
				_, err := st.Save(ctx, owner, "counter", content, SaveOptions{IfMatch: base.ETag})
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					winners = append(winners, content)
				} else {
					others = append(others, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%d writers won (%v); want exactly 1", len(winners), winners)
		}
		for _, err := range others {
			if !errors.Is(err, storage.ErrConflict) {
				t.Errorf("a losing writer got %v; want ErrConflict", err)
			}
		}
		got, err := st.Get(ctx, owner, "counter")
		if err != nil || got.Content != winners[0] {
			t.Errorf("final content %q, %v; want the winner's %q", got.Content, err, winners[0])
		}
	})

	t.Run("container deleted under the store", func(t *testing.T) {
		ctx := t.Context()
		other := New(st.client, "scratch")
		if err := other.EnsureContainer(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := st.client.DeleteContainer(ctx, "scratch", nil); err != nil {
			t.Fatal(err)
		}
		owner := newOwner(t)
		page, err := other.List(ctx, owner, ListOptions{})
		if err != nil || len(page.Items) != 0 {
			t.Errorf("List without a container = %+v, %v; want an empty page", page, err)
		}
		if _, err := other.Get(ctx, owner, "x"); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get without a container = %v; want ErrNotFound", err)
		}
		if _, err := other.Save(ctx, owner, "x", "y", SaveOptions{}); err != nil {
			t.Errorf("Save without a container = %v; want it recreated", err)
		}
	})
}

// After Stop every operation fails as ErrUnavailable, quickly thanks to the
// client's retry budget, and works again after Restart.
func TestStoreOutage(t *testing.T) {
	st, az := startStore(t)
	ctx, owner := t.Context(), newOwner(t)
	saved, err := st.Save(ctx, owner, "n", "before", SaveOptions{})
	if err != nil {
		t.Fatal(err)
	}

	az.Stop()
	checks := map[string]func() error{
		"Save": func() error {
			_, err := st.Save(ctx, owner, "n", "during", SaveOptions{IfMatch: saved.ETag})
			return err
		},
		"Get":    func() error { _, err := st.Get(ctx, owner, "n"); return err },
		"List":   func() error { _, err := st.List(ctx, owner, ListOptions{}); return err },
		"Delete": func() error { return st.Delete(ctx, owner, "n", "") },
		"Ensure": func() error { return st.EnsureContainer(ctx) },
	}
	// In parallel: each one spends the client's whole retry budget.
	var wg sync.WaitGroup
	for name, op := range checks {
		wg.Go(func() {
			err := op()
			if !errors.Is(err, storage.ErrUnavailable) {
				t.Errorf("%s during the outage = %v; want ErrUnavailable", name, err)
				return
			}
			if strings.Contains(err.Error(), "127.0.0.1") || strings.Contains(err.Error(), "http") {
				t.Errorf("%s error leaks the endpoint: %v", name, err)
			}
		})
	}
	wg.Wait()

	az.Restart() // in-memory: the data is gone, the container too
	if err := st.EnsureContainer(ctx); err != nil {
		t.Fatalf("EnsureContainer after restart: %v", err)
	}
	if _, err := st.Save(ctx, owner, "n", "after", SaveOptions{}); err != nil {
		t.Fatalf("Save after restart: %v", err)
	}
	if got, err := st.Get(ctx, owner, "n"); err != nil || got.Content != "after" {
		t.Errorf("Get after restart = %+v, %v", got, err)
	}
}

func itemNames(p Page) []string {
	var out []string
	for _, it := range p.Items {
		out = append(out, it.Name)
	}
	return out
}
