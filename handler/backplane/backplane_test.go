package backplane

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

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

// Messages forwarded to an instance arrive once each, in order, and the
// queue disappears with Close.
func TestForwardRunClose(t *testing.T) {
	qc, _ := queueClient(t)
	key := testKey()
	owner, err := New(Options{Client: qc, Key: key, MinPoll: 10 * time.Millisecond, MaxPoll: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	sender, _ := New(Options{Client: qc, Key: key})
	c := ctx(t)
	if err := owner.Start(c); err != nil {
		t.Fatal(err)
	}

	const n = 60
	var mu sync.Mutex
	var got []Envelope
	all := make(chan struct{})
	runCtx, stop := context.WithCancel(c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		owner.Run(runCtx, func(e Envelope) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, e)
			if len(got) == n {
				close(all)
			}
		})
	}()
	for i := range n {
		msg := json.RawMessage(fmt.Sprintf(`{"jsonrpc":"2.0","id":%d,"method":"ping"}`, i))
		if err := sender.Forward(c, owner.ID(), Envelope{Session: "s1", Subject: "alice", Message: msg}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-all:
	case <-c.Done():
		t.Fatalf("only %d of %d messages arrived", len(got), n)
	}
	// Give a duplicate the chance to show up.
	time.Sleep(300 * time.Millisecond)
	stop()
	<-done
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

	if err := owner.Close(c); err != nil {
		t.Fatal(err)
	}
	err = sender.Forward(c, owner.ID(), Envelope{Session: "s1", Subject: "alice", Message: json.RawMessage(`{}`)})
	if !errors.Is(err, ErrGone) {
		t.Fatalf("forward to a closed instance: %v, want ErrGone", err)
	}
	if err := owner.Close(c); err != nil {
		t.Fatalf("closing twice: %v", err)
	}
}

func TestForwardLimits(t *testing.T) {
	qc, _ := queueClient(t)
	key := testKey()
	owner, _ := New(Options{Client: qc, Key: key})
	sender, _ := New(Options{Client: qc, Key: key})
	c := ctx(t)
	if err := owner.Start(c); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = owner.Close(context.Background()) })
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
	owner, _ := New(Options{Client: qc, Key: key, MinPoll: 10 * time.Millisecond, MaxPoll: 200 * time.Millisecond})
	sender, _ := New(Options{Client: qc, Key: key})
	c := ctx(t)
	if err := owner.Start(c); err != nil {
		t.Fatal(err)
	}
	got := make(chan Envelope, 10)
	runCtx, stop := context.WithCancel(c)
	defer stop()
	go owner.Run(runCtx, func(e Envelope) { got <- e })

	az.Stop()
	time.Sleep(500 * time.Millisecond)
	az.Restart()
	// Azurite keeps its data across a restart; if it did not, Run recreates
	// the queue.
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
	qc, _ := queueClient(t)
	key := testKey()
	live, _ := New(Options{Client: qc, Key: key})
	sender, _ := New(Options{Client: qc, Key: key})
	c := ctx(t)
	for _, b := range []*Backplane{live, sender} {
		if err := b.Start(c); err != nil {
			t.Fatal(err)
		}
	}
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
	if err := sender.Forward(c, live.ID(), msg); err != nil {
		t.Fatalf("forward to a live instance: %v", err)
	}
	n, err := sender.Sweep(c)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("sweep deleted %d queues, want 2", n)
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
