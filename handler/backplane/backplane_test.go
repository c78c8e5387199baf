package backplane

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/mcp-apim/remote-mcp/handler/testenv"
)

func testKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func queueClient(t *testing.T) (*azqueue.ServiceClient, testenv.Azurite) {
	t.Helper()
	az := testenv.StartAzurite(t)
	c := az.Clients(t)
	return c.Queue, az
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// offline is a client that is never called.
func offline(t *testing.T) *azqueue.ServiceClient {
	c, err := azqueue.NewServiceClientWithNoCredential("http://127.0.0.1:1/devstoreaccount1/", nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMACs(t *testing.T) {
	key := testKey()
	// The client is never used for MACs.
	a, err := New(Options{Client: offline(t), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := New(Options{Client: offline(t), Key: key})
	other, _ := New(Options{Client: offline(t), Key: testKey()})
	if a.ID() == b.ID() || !validID(a.ID()) || !strings.HasPrefix(QueueName(a.ID()), "bp-") {
		t.Fatalf("ids %q %q", a.ID(), b.ID())
	}
	sig := a.Sign(a.ID(), "sess", "alice")
	if !b.Verify(a.ID(), "sess", "alice", sig) {
		t.Fatal("an instance with the same key must accept the MAC")
	}
	for name, ok := range map[string]bool{
		"other user":     b.Verify(a.ID(), "sess", "bob", sig),
		"other session":  b.Verify(a.ID(), "sess2", "alice", sig),
		"other instance": b.Verify(b.ID(), "sess", "alice", sig),
		"other key":      other.Verify(a.ID(), "sess", "alice", sig),
		"garbage":        b.Verify(a.ID(), "sess", "alice", "!!"),
		"empty":          b.Verify(a.ID(), "sess", "alice", ""),
		"bad instance":   b.Verify("BP..", "sess", "alice", sig),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(Options{Client: offline(t), Key: "c2hvcnQ="}); err == nil {
		t.Error("a short key was accepted")
	}
	if _, err := New(Options{Client: offline(t), Key: key, ID: "Has-Upper"}); err == nil {
		t.Error("a bad id was accepted")
	}
}

// newFast returns a started Backplane that polls quickly, with its queue
// deleted at the end of the test.
func newFast(t *testing.T, qc *azqueue.ServiceClient, key string, receiptTimeout time.Duration) *Backplane {
	t.Helper()
	b, err := New(Options{Client: qc, Key: key, MinPoll: 10 * time.Millisecond, MaxPoll: 200 * time.Millisecond, ReceiptTimeout: receiptTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	return b
}

// run runs b's poll loop until the test ends (or stop is called).
func run(t *testing.T, b *Backplane, deliver func(Envelope) Outcome) (stop func()) {
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(c, deliver) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func accept(Envelope) Outcome { return Delivered }

// pair starts Azurite and two fast backplanes sharing a key: an owner and a
// sender whose receipts wait receiptTimeout (0: the default).
func pair(t *testing.T, receiptTimeout time.Duration) (qc *azqueue.ServiceClient, owner, sender *Backplane) {
	t.Helper()
	qc, _ = queueClient(t)
	key := testKey()
	return qc, newFast(t, qc, key, 0), newFast(t, qc, key, receiptTimeout)
}

// Messages forwarded to an instance arrive once each, in order; each
// Forward returns what the owner did with its message; messages still
// queued at Close are answered "no such session", and the queue
// disappears.
func TestForwardRunClose(t *testing.T) {
	qc, owner, sender := pair(t, 0)
	c := ctx(t)

	var mu sync.Mutex
	var got []Envelope
	stopOwner := run(t, owner, func(e Envelope) Outcome {
		switch e.Session {
		case "ended":
			return NoSession
		case "busy":
			return Busy
		}
		if e.Subject != "alice" {
			return NotOwner
		}
		mu.Lock()
		defer mu.Unlock()
		got = append(got, e)
		return Delivered
	})
	run(t, sender, accept)

	const n = 40
	for i := range n {
		msg := json.RawMessage(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i))
		if err := sender.Forward(c, owner.ID(), Envelope{Session: "s1", Subject: "alice", Message: msg}); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	for _, tc := range []struct {
		session, subject string
		want             error
	}{
		{"ended", "alice", ErrSessionEnded},
		{"busy", "alice", ErrBusy},
		{"s1", "mallory", ErrNotOwner},
	} {
		err := sender.Forward(c, owner.ID(), Envelope{Session: tc.session, Subject: tc.subject, Message: json.RawMessage(`{}`)})
		if !errors.Is(err, tc.want) {
			t.Errorf("%s/%s: %v, want %v", tc.session, tc.subject, err, tc.want)
		}
	}
	// Forward returned after delivery, so nothing is pending; give a
	// duplicate the chance to show up all the same.
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	if len(got) != n {
		t.Fatalf("%d messages delivered, want %d", len(got), n)
	}
	for i, e := range got {
		var m struct{ ID int }
		if err := json.Unmarshal(e.Message, &m); err != nil {
			t.Fatal(err)
		}
		if m.ID != i || e.Session != "s1" || e.Subject != "alice" || e.From != sender.ID() {
			t.Fatalf("message %d: %+v", i, e)
		}
	}
	mu.Unlock()

	// Delivered messages were deleted.
	props, err := qc.NewQueueClient(QueueName(owner.ID())).GetProperties(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if props.ApproximateMessagesCount != nil && *props.ApproximateMessagesCount != 0 {
		t.Errorf("%d messages left in the queue", *props.ApproximateMessagesCount)
	}

	// A message that arrives after Run stopped is answered by Close.
	stopOwner()
	late := make(chan error, 1)
	go func() {
		late <- sender.Forward(c, owner.ID(), Envelope{Session: "s1", Subject: "alice", Message: json.RawMessage(`{}`)})
	}()
	waitForMessages(t, qc, owner.ID(), 1)
	if err := owner.Close(c); err != nil {
		t.Fatal(err)
	}
	if err := <-late; !errors.Is(err, ErrSessionEnded) {
		t.Fatalf("message queued at Close: %v, want ErrSessionEnded", err)
	}
	err = sender.Forward(c, owner.ID(), Envelope{Session: "s1", Subject: "alice", Message: json.RawMessage(`{}`)})
	if !errors.Is(err, ErrGone) {
		t.Fatalf("forward to a closed instance: %v, want ErrGone", err)
	}
	if err := owner.Close(c); err != nil {
		t.Fatalf("closing twice: %v", err)
	}
}

// waitForMessages waits until instance's queue holds n messages.
func waitForMessages(t *testing.T, qc *azqueue.ServiceClient, instance string, n int32) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		props, err := qc.NewQueueClient(QueueName(instance)).GetProperties(ctx(t), nil)
		if err == nil && props.ApproximateMessagesCount != nil && *props.ApproximateMessagesCount == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue of %s never held %d messages (%v)", instance, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A message its owner does not take within ReceiptTimeout is withdrawn, so
// ErrGone never hides a late delivery; one the owner takes but does not
// confirm is reported as ErrUnconfirmed.
func TestForwardWithoutReceipt(t *testing.T) {
	qc, owner, sender := pair(t, 300*time.Millisecond)
	run(t, sender, accept)
	c := ctx(t)

	// The owner's queue exists and is stamped, but nobody polls it.
	if err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`1`)}); !errors.Is(err, ErrGone) {
		t.Fatalf("owner not polling: %v, want ErrGone", err)
	}
	waitForMessages(t, qc, owner.ID(), 0)
	var delivered atomic.Int32
	release := make(chan struct{})
	run(t, owner, func(e Envelope) Outcome {
		delivered.Add(1)
		<-release // stuck past both receipt timeouts
		return Delivered
	})
	err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`2`)})
	close(release)
	if !errors.Is(err, ErrUnconfirmed) {
		t.Fatalf("owner stuck: %v, want ErrUnconfirmed", err)
	}
	time.Sleep(300 * time.Millisecond)
	if n := delivered.Load(); n != 1 {
		t.Fatalf("%d deliveries, want 1: the withdrawn message must never arrive", n)
	}
}

// After storage lost every queue (an emulator restarted empty), a Forward
// waits for the owner to re-create its queue instead of calling it gone.
func TestForwardWaitsForRecreatedQueue(t *testing.T) {
	qc, owner, sender := pair(t, 0)
	c := ctx(t)
	delivered := make(chan Envelope, 1)
	run(t, owner, func(e Envelope) Outcome { delivered <- e; return Delivered })
	run(t, sender, accept)
	// Learn that the owner is alive, as a forwarder does on first use.
	if err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`0`)}); err != nil {
		t.Fatal(err)
	}
	<-delivered
	for _, b := range []*Backplane{owner, sender} {
		if _, err := qc.NewQueueClient(QueueName(b.ID())).Delete(c, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`1`)}); err != nil {
		t.Fatalf("forward while queues are re-created: %v", err)
	}
	if e := <-delivered; string(e.Message) != "1" {
		t.Fatalf("got %s", e.Message)
	}
}

func TestForwardLimits(t *testing.T) {
	_, owner, sender := pair(t, 0)
	run(t, owner, accept)
	run(t, sender, accept)
	c := ctx(t)
	big := json.RawMessage(`"` + strings.Repeat("x", 48*1024) + `"`)
	if err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: big}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("48 KiB message: %v, want ErrTooLarge", err)
	}
	fits := json.RawMessage(`"` + strings.Repeat("x", 47*1024) + `"`)
	if err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: fits}); err != nil {
		t.Fatalf("47 KiB message: %v", err)
	}
	if err := sender.Forward(c, "nosuchinstance0", Envelope{Session: "s", Subject: "u", Message: fits}); !errors.Is(err, ErrGone) {
		t.Fatalf("unknown instance: %v, want ErrGone", err)
	}
	if err := sender.Forward(c, "../x", Envelope{Session: "s", Subject: "u", Message: fits}); !errors.Is(err, ErrGone) {
		t.Fatalf("malformed instance: %v, want ErrGone", err)
	}
}

// Polling survives a storage outage and resumes after it.
func TestRunSurvivesOutage(t *testing.T) {
	qc, az := queueClient(t)
	key := testKey()
	owner := newFast(t, qc, key, 0)
	sender := newFast(t, qc, key, 0)
	c := ctx(t)
	got := make(chan Envelope, 10)
	run(t, owner, func(e Envelope) Outcome { got <- e; return Delivered })
	run(t, sender, accept)

	az.Stop()
	time.Sleep(500 * time.Millisecond)
	az.Restart()
	// Whether Azurite kept its queues or not, polling resumes (re-creating
	// a lost queue).
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := sender.Forward(c, owner.ID(), Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`1`)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("forward after restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case e := <-got:
		if string(e.Message) != "1" {
			t.Fatalf("got %s", e.Message)
		}
	case <-c.Done():
		t.Fatal("no delivery after the outage")
	}
}

// An instance that died without deleting its queue stops stamping it:
// forwarding to it answers ErrGone and deletes the queue, and sweeps delete
// such queues; live instances' queues stay.
func TestDeadInstancesQueues(t *testing.T) {
	qc, live, sender := pair(t, 0)
	c := ctx(t)
	old := fmt.Sprint(time.Now().Add(-time.Hour).Unix())
	mk := func(id string, meta map[string]*string) {
		if _, err := qc.NewQueueClient(QueueName(id)).Create(c, &azqueue.CreateOptions{Metadata: meta}); err != nil {
			t.Fatal(err)
		}
	}
	mk("dead0000forward", map[string]*string{metaAlive: &old})
	mk("dead0000stamped", map[string]*string{metaAlive: &old})
	mk("dead00000nostamp", nil)

	msg := Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`1`)}
	if err := sender.Forward(c, "dead0000forward", msg); !errors.Is(err, ErrGone) {
		t.Fatalf("forward to a dead instance: %v, want ErrGone", err)
	}
	// Run sweeps when it starts: sweep by hand first.
	n, err := sender.Sweep(c)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("sweep deleted %d queues, want 2", n)
	}
	run(t, live, accept)
	run(t, sender, accept)
	if err := sender.Forward(c, live.ID(), msg); err != nil {
		t.Fatalf("forward to a live instance: %v", err)
	}
	var left []string
	prefix := QueuePrefix
	pager := qc.NewListQueuesPager(&azqueue.ListQueuesOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(c)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range page.Queues {
			left = append(left, *q.Name)
		}
	}
	want := []string{QueueName(live.ID()), QueueName(sender.ID())}
	if len(left) != 2 || !slices.Contains(left, want[0]) || !slices.Contains(left, want[1]) {
		t.Errorf("queues left %v, want %v", left, want)
	}
}

// BenchmarkForward measures one Forward round trip on Azurite: the message
// onto the owner's queue, the owner's poll and delivery, the receipt back
// and the forwarder's poll, with the default poll settings and a listener
// on the owner (an open SSE session). "busy" forwards back to back;
// "quiet" pauses past the owner's fast-poll second before each forward, so
// the owner has backed off towards MaxPoll (run it with -benchtime=10x).
func BenchmarkForward(b *testing.B) {
	az := testenv.StartAzurite(b)
	qc := az.Clients(b).Queue
	key := testKey()
	var bps []*Backplane
	for range 2 {
		bp, err := New(Options{Client: qc, Key: key})
		if err != nil {
			b.Fatal(err)
		}
		if err := bp.Start(b.Context()); err != nil {
			b.Fatal(err)
		}
		c, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); bp.Run(c, accept) }()
		b.Cleanup(func() { cancel(); <-done; _ = bp.Close(context.Background()) })
		bps = append(bps, bp)
	}
	defer bps[1].Listen()()
	msg := Envelope{Session: "s", Subject: "u", Message: json.RawMessage(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)}
	run := func(b *testing.B, pause func() time.Duration) {
		lat := make([]time.Duration, 0, 1024)
		for b.Loop() {
			if d := pause(); d > 0 {
				b.StopTimer()
				time.Sleep(d)
				b.StartTimer()
			}
			t0 := time.Now()
			if err := bps[0].Forward(b.Context(), bps[1].ID(), msg); err != nil {
				b.Fatal(err)
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
	b.Run("busy", func(b *testing.B) { run(b, func() time.Duration { return 0 }) })
	b.Run("parallel", func(b *testing.B) {
		// 32 forwarders at once: throughput of one owner's poll loop.
		b.SetParallelism(16)
		t0 := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := bps[0].Forward(context.Background(), bps[1].ID(), msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "msgs/s")
	})
	b.Run("quiet", func(b *testing.B) {
		// Past linger, with a varying phase against the owner's poll timer.
		run(b, func() time.Duration { return linger + time.Duration(mrand.Int64N(int64(2*DefaultMaxPoll))) })
	})
}

// countPolls is a pipeline policy counting dequeue requests (GET on a
// queue's messages).
type countPolls struct{ n atomic.Int64 }

func (c *countPolls) Do(req *policy.Request) (*http.Response, error) {
	if r := req.Raw(); r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/messages") {
		c.n.Add(1)
	}
	return req.Next()
}

// An instance nobody listens on polls about once per IdlePoll; one with a
// listener about once per MaxPoll; neither polls faster than that once
// traffic stopped. (Bounds from above are exact; the comparison between
// the two leaves a wide margin for a slow machine.)
func TestPollRates(t *testing.T) {
	az := testenv.StartAzurite(t)
	counter := &countPolls{}
	qc, err := azqueue.NewServiceClientFromConnectionString(az.ConnectionString, &azqueue.ClientOptions{
		ClientOptions: policy.ClientOptions{PerCallPolicies: []policy.Policy{counter}},
	})
	if err != nil {
		t.Fatal(err)
	}
	const minPoll, maxPoll, idlePoll = 10 * time.Millisecond, 50 * time.Millisecond, 250 * time.Millisecond
	b, err := New(Options{Client: qc, Key: testKey(), MinPoll: minPoll, MaxPoll: maxPoll, IdlePoll: idlePoll})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })
	run(t, b, accept)
	const window = 2 * time.Second
	measure := func() int64 {
		time.Sleep(linger + idlePoll) // past the fast polls after start or a wake
		before := counter.n.Load()
		time.Sleep(window)
		return counter.n.Load() - before
	}
	idle := measure()
	stop := b.Listen()
	listening := measure()
	stop()
	t.Logf("polls in %v: %d idle, %d with a listener", window, idle, listening)
	if limit := int64(window/idlePoll) + 2; idle > limit {
		t.Errorf("idle: %d polls, at most %d expected", idle, limit)
	}
	if limit := int64(window/maxPoll) + 2; listening > limit {
		t.Errorf("listening: %d polls, at most %d expected", listening, limit)
	}
	if listening < 2*idle {
		t.Errorf("a listener did not speed polling up: %d polls against %d idle", listening, idle)
	}
}
