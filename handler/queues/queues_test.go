package queues

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/mcp-apim/remote-mcp/handler/storage"
	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

// startService starts Azurite and returns a Service on it.
func startService(t *testing.T) (*Service, testenv.Azurite) {
	t.Helper()
	az := testenv.StartAzurite(t)
	c := az.Clients(t)
	return New(c.Queue), az
}

// Arguments are checked before anything is sent, so a Service without a
// client is enough here.
func TestArgumentsAreChecked(t *testing.T) {
	svc := New(nil)
	ctx := t.Context()
	send := func(queue, text string, opts SendOptions) error {
		_, err := svc.Send(ctx, ownerA, queue, text, opts)
		return err
	}
	tests := []struct {
		name string
		err  error
		kind error
		msg  string
	}{
		{"bad owner", func() error { _, err := svc.Send(ctx, "someone", "q", "x", SendOptions{}); return err }(), storage.ErrInvalid, "user namespace"},
		{"bad queue", send("Q", "x", SendOptions{}), storage.ErrInvalid, "queue names are lowercase"},
		{"empty message", send("q", "", SendOptions{}), storage.ErrInvalid, "message is empty"},
		{"not utf-8", send("q", "\xff", SendOptions{}), storage.ErrInvalid, "not valid UTF-8"},
		{"one byte over", send("q", strings.Repeat("x", MaxMessageBytes+1), SendOptions{}), storage.ErrTooLarge, "message is 49153 bytes; the limit is 49152 bytes (48 KiB)"},
		{"multibyte over", send("q", strings.Repeat("€", MaxMessageBytes/3)+"x", SendOptions{}), storage.ErrTooLarge, "the limit is 49152 bytes"},
		{"ttl too short", send("q", "x", SendOptions{TTL: 500 * time.Millisecond}), storage.ErrInvalid, "ttl must be between 1 second and 7 days"},
		{"ttl too long", send("q", "x", SendOptions{TTL: MaxTTL + time.Second}), storage.ErrInvalid, "ttl must be between"},
		{"negative delay", send("q", "x", SendOptions{VisibilityDelay: -time.Second}), storage.ErrInvalid, "delay must be between 0 and 7 days"},
		{"delay too long", send("q", "x", SendOptions{TTL: NeverExpire, VisibilityDelay: MaxVisibilityDelay + time.Second}), storage.ErrInvalid, "delay must be between"},
		{"delay not below ttl", send("q", "x", SendOptions{TTL: time.Minute, VisibilityDelay: time.Minute}), storage.ErrInvalid, "delay (60 s) must be shorter than the ttl (60 s)"},
		{"peek zero is fine but 33 is not", func() error { _, err := svc.Peek(ctx, ownerA, "q", 33); return err }(), storage.ErrInvalid, "max_messages must be between 1 and 32"},
		{"receive negative", func() error { _, err := svc.Receive(ctx, ownerA, "q", -1, 0); return err }(), storage.ErrInvalid, "max_messages must be between 1 and 32"},
		{"visibility too short", func() error { _, err := svc.Receive(ctx, ownerA, "q", 1, time.Millisecond); return err }(), storage.ErrInvalid, "visibility timeout must be between 1 second and 1 hour"},
		{"visibility too long", func() error { _, err := svc.Receive(ctx, ownerA, "q", 1, 2*time.Hour); return err }(), storage.ErrInvalid, "visibility timeout must be between"},
		{"list bad owner", func() error { _, err := svc.List(ctx, ""); return err }(), storage.ErrInvalid, "user namespace"},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.kind) || !strings.Contains(fmt.Sprint(tt.err), tt.msg) {
			t.Errorf("%s: got %v; want %v containing %q", tt.name, tt.err, tt.kind, tt.msg)
		}
	}
}

func TestDurations(t *testing.T) {
	for _, tt := range []struct {
		ttl  time.Duration
		want int32
	}{{0, 604800}, {NeverExpire, -1}, {-time.Hour, -1}, {time.Second, 1}, {1500 * time.Millisecond, 1}, {MaxTTL, 604800}} {
		if got, err := ttlSeconds(tt.ttl); err != nil || got != tt.want {
			t.Errorf("ttlSeconds(%v) = %d, %v; want %d", tt.ttl, got, err, tt.want)
		}
	}
	if got, err := delaySeconds(time.Hour, -1); err != nil || got != 3600 {
		t.Errorf("delaySeconds with a never-expiring TTL = %d, %v", got, err)
	}
	if got, err := visibilitySeconds(0); err != nil || got != 30 {
		t.Errorf("default visibility = %d, %v", got, err)
	}
}

func TestService(t *testing.T) {
	svc, _ := startService(t)

	t.Run("send, peek, receive", func(t *testing.T) {
		ctx := t.Context()
		texts := []string{"first ✓", "<xml attr=\"&amp;\">]]></xml>", "line\nbreak\ttab 🚀", "  padded  "}
		before := time.Now().Add(-time.Minute)
		for _, text := range texts {
			sent, err := svc.Send(ctx, ownerA, "work", text, SendOptions{TTL: time.Hour})
			if err != nil {
				t.Fatalf("Send(%q): %v", text, err)
			}
			if sent.ID == "" || sent.InsertedAt.Before(before) || sent.VisibleAt.Before(before) {
				t.Errorf("Send returned %+v", sent)
			}
			if d := sent.ExpiresAt.Sub(sent.InsertedAt); d != time.Hour {
				t.Errorf("expiry - insertion = %v; want 1h", d)
			}
		}
		peeked, err := svc.Peek(ctx, ownerA, "work", 32)
		if err != nil {
			t.Fatal(err)
		}
		if got := messageTexts(peeked); !slices.Equal(got, texts) {
			t.Errorf("Peek = %q; want %q", got, texts)
		}
		again, _ := svc.Peek(ctx, ownerA, "work", 0)
		if len(again) != 1 || again[0].Text != texts[0] || again[0].DequeueCount != 0 {
			t.Errorf("Peek(0) = %+v; want the first message, never dequeued", again)
		}

		got, err := svc.Receive(ctx, ownerA, "work", 2, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(messageTexts(got), texts[:2]) || got[0].DequeueCount != 1 {
			t.Errorf("Receive(2) = %+v", got)
		}
		got, err = svc.Receive(ctx, ownerA, "work", 32, time.Minute)
		if err != nil || !slices.Equal(messageTexts(got), texts[2:]) {
			t.Errorf("Receive(32) = %q, %v; want %q", messageTexts(got), err, texts[2:])
		}
		if left, err := svc.Peek(ctx, ownerA, "work", 32); err != nil || len(left) != 0 {
			t.Errorf("after receiving everything Peek = %q, %v", messageTexts(left), err)
		}
		if got, err := svc.Receive(ctx, ownerA, "work", 5, 0); err != nil || len(got) != 0 {
			t.Errorf("Receive on an empty queue = %v, %v", got, err)
		}
	})

	t.Run("missing queue", func(t *testing.T) {
		ctx := t.Context()
		want := `queue "nothing-here" does not exist; send a message to create it`
		if _, err := svc.Peek(ctx, ownerA, "nothing-here", 1); !errors.Is(err, storage.ErrNotFound) || err.Error() != want {
			t.Errorf("Peek = %v", err)
		}
		if _, err := svc.Receive(ctx, ownerA, "nothing-here", 1, 0); !errors.Is(err, storage.ErrNotFound) || err.Error() != want {
			t.Errorf("Receive = %v", err)
		}
	})

	t.Run("ttl and delay", func(t *testing.T) {
		ctx := t.Context()
		sent, err := svc.Send(ctx, ownerA, "forever", "keep me", SendOptions{TTL: NeverExpire})
		if err != nil {
			t.Fatal(err)
		}
		if !sent.ExpiresAt.IsZero() {
			t.Errorf("a never-expiring message expires at %v", sent.ExpiresAt)
		}
		peeked, err := svc.Peek(ctx, ownerA, "forever", 1)
		if err != nil || len(peeked) != 1 || !peeked[0].ExpiresAt.IsZero() {
			t.Errorf("Peek of a never-expiring message = %+v, %v", peeked, err)
		}

		sent, err = svc.Send(ctx, ownerA, "later", "not yet", SendOptions{VisibilityDelay: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if d := sent.VisibleAt.Sub(sent.InsertedAt); d != time.Hour {
			t.Errorf("visible - inserted = %v; want 1h", d)
		}
		if d := sent.ExpiresAt.Sub(sent.InsertedAt); d != DefaultTTL {
			t.Errorf("default TTL = %v; want %v", d, DefaultTTL)
		}
		if got, err := svc.Peek(ctx, ownerA, "later", 32); err != nil || len(got) != 0 {
			t.Errorf("a delayed message is visible: %v, %v", got, err)
		}
		if got, err := svc.Receive(ctx, ownerA, "later", 32, 0); err != nil || len(got) != 0 {
			t.Errorf("a delayed message was received: %v, %v", got, err)
		}
	})

	t.Run("message size boundary", func(t *testing.T) {
		ctx := t.Context()
		for _, text := range []string{strings.Repeat("x", MaxMessageBytes), strings.Repeat("€", MaxMessageBytes/3)} {
			if _, err := svc.Send(ctx, ownerA, "big", text, SendOptions{}); err != nil {
				t.Fatalf("Send of exactly %d bytes: %v", len(text), err)
			}
			got, err := svc.Receive(ctx, ownerA, "big", 1, 0)
			if err != nil || len(got) != 1 || got[0].Text != text {
				t.Fatalf("Receive of the largest message: %d messages, %v", len(got), err)
			}
		}
		_, err := svc.Send(ctx, ownerA, "big", strings.Repeat("x", MaxMessageBytes+1), SendOptions{})
		if !errors.Is(err, storage.ErrTooLarge) || !strings.Contains(err.Error(), "49152") {
			t.Errorf("Send of one byte more = %v; want ErrTooLarge naming the limit", err)
		}
	})

	t.Run("owners are isolated", func(t *testing.T) {
		ctx := t.Context()
		alice, bob := ownerWith("a1"), ownerWith("b1")
		if _, err := svc.Send(ctx, alice, "inbox", "for alice only", SendOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Peek(ctx, bob, "inbox", 1); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("bob peeks at alice's queue: %v", err)
		}
		if got, err := svc.Receive(ctx, bob, "inbox", 1, 0); !errors.Is(err, storage.ErrNotFound) || len(got) != 0 {
			t.Errorf("bob receives from alice's queue: %v, %v", got, err)
		}
		if qs, err := svc.List(ctx, bob); err != nil || len(qs) != 0 {
			t.Errorf("bob lists %+v, %v", qs, err)
		}
		if _, err := svc.Send(ctx, bob, "inbox", "bob's own", SendOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := svc.Peek(ctx, alice, "inbox", 32)
		if err != nil || !slices.Equal(messageTexts(got), []string{"for alice only"}) {
			t.Errorf("alice's queue after bob sent to his = %q, %v", messageTexts(got), err)
		}
	})

	t.Run("list", func(t *testing.T) {
		ctx := t.Context()
		owner := ownerWith("c1")
		for i, q := range []string{"beta", "alpha", "beta", "gamma-2", "beta"} {
			opts := SendOptions{}
			if i == 4 {
				opts.VisibilityDelay = time.Hour // invisible messages count too
			}
			if _, err := svc.Send(ctx, owner, q, "m", opts); err != nil {
				t.Fatal(err)
			}
		}
		got, err := svc.List(ctx, owner)
		if err != nil {
			t.Fatal(err)
		}
		want := []QueueInfo{{"alpha", 1}, {"beta", 3}, {"gamma-2", 1}}
		if !slices.Equal(got, want) {
			t.Errorf("List = %+v; want %+v", got, want)
		}
		if qs, err := svc.List(ctx, ownerWith("c2")); err != nil || len(qs) != 0 {
			t.Errorf("List of a user without queues = %v, %v", qs, err)
		}
	})

	t.Run("two receivers share 20 messages", func(t *testing.T) {
		ctx := t.Context()
		const n = 20
		want := map[string]bool{}
		for i := range n {
			text := fmt.Sprintf("task %02d", i)
			want[text] = true
			if _, err := svc.Send(ctx, ownerA, "shared", text, SendOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		var (
			mu    sync.Mutex
			seen  = map[string][]int{} // text -> receivers that got it
			total atomic.Int32
			wg    sync.WaitGroup
		)
		deadline := time.Now().Add(30 * time.Second)
		for r := range 2 {
			wg.Go(func() {
				for total.Load() < n && time.Now().Before(deadline) {
					got, err := svc.Receive(ctx, ownerA, "shared", 3, 30*time.Second)
					if err != nil {
						t.Errorf("receiver %d: %v", r, err)
						return
					}
					mu.Lock()
					for _, m := range got {
						seen[m.Text] = append(seen[m.Text], r)
					}
					mu.Unlock()
					total.Add(int32(len(got)))
				}
			})
		}
		wg.Wait()
		if len(seen) != n {
			t.Errorf("%d distinct messages received; want %d", len(seen), n)
		}
		for text, by := range seen {
			if !want[text] {
				t.Errorf("received %q, which was never sent", text)
			}
			if len(by) != 1 {
				t.Errorf("%q was received %d times (by receivers %v)", text, len(by), by)
			}
		}
		if left, _ := svc.Peek(ctx, ownerA, "shared", 32); len(left) != 0 {
			t.Errorf("%d messages left behind", len(left))
		}
	})
}

// TestPartialReceive makes some deletes fail and checks that Receive says
// so, returns only what it deleted, and that the rest comes back.
func TestPartialReceive(t *testing.T) {
	svc, az := startService(t)
	ctx := t.Context()
	for i := range 5 {
		if _, err := svc.Send(ctx, ownerA, "flaky", fmt.Sprintf("m%d", i), SendOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	ft := &failDeletes{base: http.DefaultTransport}
	ft.remaining.Store(2)
	cred, err := azqueue.NewSharedKeyCredential(testenv.AzuriteAccountName, testenv.AzuriteAccountKey)
	if err != nil {
		t.Fatal(err)
	}
	client, err := azqueue.NewServiceClientWithSharedKeyCredential(az.QueueURL+"/", cred, &azqueue.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: ft,
		Retry:     policy.RetryOptions{MaxRetries: -1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	flaky := New(client)

	got, err := flaky.Receive(ctx, ownerA, "flaky", 5, time.Second)
	var partial *PartialReceiveError
	if !errors.As(err, &partial) {
		t.Fatalf("Receive with failing deletes = %d messages, %v; want a *PartialReceiveError", len(got), err)
	}
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("the partial error does not carry the delete's kind: %v", partial.Err)
	}
	if len(got) != 3 || len(partial.Undeleted) != 2 || partial.Queue != "flaky" {
		t.Fatalf("deleted %q, undeleted %q; want 3 and 2", messageTexts(got), messageTexts(partial.Undeleted))
	}
	all := append(messageTexts(got), messageTexts(partial.Undeleted)...)
	slices.Sort(all)
	if !slices.Equal(all, []string{"m0", "m1", "m2", "m3", "m4"}) {
		t.Errorf("deleted plus undeleted = %q; want every message once", all)
	}
	if msg := err.Error(); !strings.Contains(msg, `2 received message(s) could not be removed from queue "flaky"`) || strings.Contains(msg, "127.0.0.1") {
		t.Errorf("message = %q", msg)
	}
	if time.Until(partial.VisibleAgainAt) > 5*time.Second || partial.VisibleAgainAt.IsZero() {
		t.Errorf("VisibleAgainAt = %v; want about a second from now", partial.VisibleAgainAt)
	}

	// The undeleted messages come back once their visibility timeout ends.
	var back []Message
	for deadline := time.Now().Add(15 * time.Second); len(back) < 2 && time.Now().Before(deadline); {
		more, err := svc.Receive(ctx, ownerA, "flaky", 5, 0)
		if err != nil {
			t.Fatal(err)
		}
		back = append(back, more...)
		if len(back) < 2 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if got, want := messageTexts(back), messageTexts(partial.Undeleted); !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("redelivered %q; want %q", got, want)
	}
	for _, m := range back {
		if m.DequeueCount != 2 {
			t.Errorf("redelivered %q has dequeue count %d; want 2", m.Text, m.DequeueCount)
		}
	}
}

// failDeletes fails the first few message deletes as a dropped connection.
type failDeletes struct {
	base      http.RoundTripper
	remaining atomic.Int32
}

func (f *failDeletes) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodDelete && strings.Contains(req.URL.Path, "/messages/") && f.remaining.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	}
	return f.base.RoundTrip(req)
}

func TestServiceOutage(t *testing.T) {
	svc, az := startService(t)
	ctx := t.Context()
	if _, err := svc.Send(ctx, ownerA, "jobs", "before", SendOptions{}); err != nil {
		t.Fatal(err)
	}

	az.Stop()
	checks := map[string]func() error{
		"Send":    func() error { _, err := svc.Send(ctx, ownerA, "jobs", "during", SendOptions{}); return err },
		"Peek":    func() error { _, err := svc.Peek(ctx, ownerA, "jobs", 1); return err },
		"Receive": func() error { _, err := svc.Receive(ctx, ownerA, "jobs", 1, 0); return err },
		"List":    func() error { _, err := svc.List(ctx, ownerA); return err },
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

	az.Restart() // in-memory: the queue is gone and Send recreates it
	if _, err := svc.Send(ctx, ownerA, "jobs", "after", SendOptions{}); err != nil {
		t.Fatalf("Send after restart: %v", err)
	}
	got, err := svc.Receive(ctx, ownerA, "jobs", 32, 0)
	if err != nil || !slices.Equal(messageTexts(got), []string{"after"}) {
		t.Errorf("Receive after restart = %q, %v", messageTexts(got), err)
	}
}

// A caller that has given up gets context.Canceled, not a storage kind that
// would blame storage or the arguments.
func TestReceiveCanceled(t *testing.T) {
	// Nothing listens there; the canceled context stops the call first.
	client, err := azqueue.NewServiceClientWithNoCredential("http://127.0.0.1:9/devstoreaccount1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := New(client)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := svc.Receive(ctx, ownerA, "q", 1, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Receive with a canceled context = %v; want context.Canceled", err)
	}
}

func ownerWith(suffix string) string {
	return "72f988bf-86f1-41af-91ab-2d7cd011db47/00000000-0000-0000-0000-0000000000" + suffix
}

func messageTexts(ms []Message) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.Text)
	}
	return out
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
