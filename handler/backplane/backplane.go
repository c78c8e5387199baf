// Package backplane carries SSE messages between handler instances through
// Azure Queue storage (DESIGN.md section 8).
//
// Every instance has a random id and its own queue "bp-<id>" in the shared
// storage account, created by Start and deleted by Close. The SSE message URL
// an instance hands out names it and carries a MAC (InternalKey, purpose
// "sse-instance") over the instance id, the session id and the subject of the
// user who opened the stream, so a POST that lands on another instance can be
// checked there, tamper and owner alike, before anything is queued. Forward
// puts the message on the owner's queue; the owner's Run loop takes it off,
// hands it to a delivery function in queue order, and puts a receipt with the
// outcome (delivered, no such session, not the owner, busy) on the
// forwarder's queue. Forward returns only once it has the receipt, so the
// POST is answered with what really happened: 202 means the session took the
// message, and a client that waits for 202 before its next POST has its
// messages dispatched in the order it sent them, wherever they land. A
// message nobody takes in time is withdrawn from the queue before Forward
// gives up, so an error never hides a late delivery.
//
// The package knows nothing of SSE or MCP: it moves opaque envelopes.
package backplane

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Purpose is the MAC purpose label of message URLs (FRONTDOOR "Keys").
const Purpose = "sse-instance"

// QueuePrefix starts every backplane queue's name.
const QueuePrefix = "bp-"

// MaxEncoded is Azure's limit on a message's text: the base64 of the
// envelope must fit.
const MaxEncoded = 64 * 1024

// Defaults of Options.
const (
	DefaultMinPoll  = 20 * time.Millisecond
	DefaultMaxPoll  = 500 * time.Millisecond
	DefaultIdlePoll = 5 * time.Second
	// DefaultReceiptPoll is the wait between polls while a Forward waits
	// for its receipt: short, since a POST is waiting on it, and only for
	// as long as some POST is.
	DefaultReceiptPoll = 5 * time.Millisecond
	// DefaultReceiptTimeout is how long Forward waits for the owner's
	// receipt before withdrawing the message: an owner that polls at
	// MaxPoll answers well within it; one that does not is dead or stuck.
	DefaultReceiptTimeout = 8 * time.Second
	// visibility is how long a dequeued message stays hidden before it is
	// deleted; if the owner dies in between, the message reappears (and is
	// then dropped or delivered by nobody, since its sessions died too).
	visibility = 30
	batchSize  = 32
	// hot is how long polls stay at ReceiptPoll after the last message,
	// and linger how long at MinPoll, before backing off: a client's next
	// message often follows the answer to its last one closely.
	hot    = 100 * time.Millisecond
	linger = time.Second
	// DefaultHeartbeat is how often an instance stamps its queue's
	// metadata with the time, so others can tell a live instance from a
	// queue left behind by one that died without deleting it.
	DefaultHeartbeat = 20 * time.Second
	// DefaultStaleAfter is how old a stamp may get before the queue is
	// taken for a dead instance's: forwarded POSTs then get ErrGone, and
	// sweeps delete the queue.
	DefaultStaleAfter = 90 * time.Second
	// sweepEvery is how often Run looks for dead instances' queues.
	sweepEvery = 5 * time.Minute
	// metaAlive is the metadata key of the heartbeat stamp (Unix seconds).
	metaAlive = "alive"
)

var (
	// ErrGone: the instance named in the URL stopped (its queue is gone or
	// was not stamped for StaleAfter), or it did not take the message within
	// ReceiptTimeout and the message was withdrawn. Its sessions are gone;
	// the client must open a new stream.
	ErrGone = errors.New("backplane: the instance holding the session is gone")
	// ErrSessionEnded: the owner is running but no longer holds the session.
	ErrSessionEnded = errors.New("backplane: the session has ended")
	// ErrNotOwner: the owner holds the session for another user.
	ErrNotOwner = errors.New("backplane: the session belongs to another user")
	// ErrBusy: the session has too many messages in flight; the message
	// was not taken and may be sent again.
	ErrBusy = errors.New("backplane: the session is busy")
	// ErrUnconfirmed: no receipt came, and the message could not be
	// withdrawn (the owner had taken it, or storage could not be asked): it
	// may or may not have been delivered.
	ErrUnconfirmed = errors.New("backplane: delivery to the instance holding the session could not be confirmed")
	// ErrTooLarge: the envelope does not fit in a queue message.
	ErrTooLarge = errors.New("backplane: message too large to forward")
)

// Outcome is what the owner did with a forwarded message; it travels back
// in the receipt.
type Outcome uint8

// Outcomes of a delivery.
const (
	// Delivered: the session took the message; its answer goes on the
	// stream.
	Delivered Outcome = iota + 1
	// NoSession: no such session on the owner (it ended or the owner is
	// shutting down).
	NoSession
	// NotOwner: the caller is not the user who opened the session.
	NotOwner
	// Busy: the session has too many messages in flight.
	Busy
)

// err is the error Forward returns for an outcome.
func (o Outcome) err() error {
	switch o {
	case Delivered:
		return nil
	case NoSession:
		return ErrSessionEnded
	case NotOwner:
		return ErrNotOwner
	case Busy:
		return ErrBusy
	}
	return fmt.Errorf("backplane: unknown outcome %d in a receipt", o)
}

// Envelope is one forwarded client message.
type Envelope struct {
	// Session is the SSE session id.
	Session string `json:"s,omitempty"`
	// Subject is the token subject of the POST's caller; the owner checks it
	// against the session's again.
	Subject string `json:"u,omitempty"`
	// Message is the JSON-RPC message as posted.
	Message json.RawMessage `json:"m,omitempty"`
	// From is the instance that forwarded it; its receipt goes there.
	From string `json:"f,omitempty"`
}

// wire is a queue message: a forwarded Envelope, or the receipt for one.
type wire struct {
	Envelope
	// ID correlates a message with its receipt: 128 random bits in hex.
	ID string `json:"i"`
	// Outcome is set on receipts only.
	Outcome Outcome `json:"o,omitempty"`
}

// Options configures a Backplane.
type Options struct {
	Client *azqueue.ServiceClient
	// Key is the InternalKey as configured: base64 of 32+ random bytes. The
	// MAC key is the decoded bytes.
	Key string
	// ID overrides the random instance id (tests). 8-40 lowercase hex or
	// letters/digits.
	ID string
	// MinPoll is the wait after an empty poll that followed a busy one;
	// waits double up to MaxPoll while the queue stays empty and someone
	// listens (see Listen), up to IdlePoll while nobody does. After a
	// non-empty poll the next poll is immediate.
	MinPoll, MaxPoll, IdlePoll time.Duration
	// ReceiptPoll and ReceiptTimeout: see DefaultReceiptPoll and
	// DefaultReceiptTimeout.
	ReceiptPoll, ReceiptTimeout time.Duration
	// Heartbeat and StaleAfter: see DefaultHeartbeat and DefaultStaleAfter.
	Heartbeat, StaleAfter time.Duration
	Logger                *slog.Logger
	// now is the clock (tests).
	now func() time.Time
}

// Backplane is one instance's end of the backplane.
type Backplane struct {
	client *azqueue.ServiceClient
	key    []byte
	id     string
	queue  *azqueue.QueueClient
	opts   Options
	log    *slog.Logger

	// kick wakes Run when a Forward starts waiting for a receipt or a
	// listener arrives.
	kick chan struct{}
	// listeners counts Listen calls not yet ended.
	listeners atomic.Int32
	// sending counts receipts being sent, so Close can wait for them.
	sending sync.WaitGroup

	mu   sync.Mutex
	seen map[string]time.Time // message ids delivered recently, against redelivery
	// waiting maps the ids of forwarded messages to their Forward calls.
	waiting map[string]chan Outcome
	// live caches when other instances were last seen alive.
	live map[string]time.Time
	// recreated is when Run last found this instance's queue lost and set
	// about re-creating it.
	recreated time.Time
}

// New returns a Backplane with a fresh instance id. It does not contact
// storage; call Start.
func New(o Options) (*Backplane, error) {
	if o.Client == nil {
		return nil, errors.New("backplane: a queue client is required")
	}
	key, err := base64.StdEncoding.DecodeString(o.Key)
	if err != nil || len(key) < 32 {
		return nil, errors.New("backplane: the internal key must be base64 of at least 32 bytes")
	}
	if o.ID == "" {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		o.ID = hex.EncodeToString(b)
	}
	if !validID(o.ID) {
		return nil, fmt.Errorf("backplane: instance id %q is not 8-40 lowercase letters and digits", o.ID)
	}
	if o.MinPoll <= 0 {
		o.MinPoll = DefaultMinPoll
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = DefaultMaxPoll
	}
	if o.MaxPoll < o.MinPoll {
		o.MaxPoll = o.MinPoll
	}
	if o.IdlePoll <= 0 {
		o.IdlePoll = DefaultIdlePoll
	}
	if o.IdlePoll < o.MaxPoll {
		o.IdlePoll = o.MaxPoll
	}
	if o.ReceiptPoll <= 0 {
		o.ReceiptPoll = DefaultReceiptPoll
	}
	if o.ReceiptTimeout <= 0 {
		o.ReceiptTimeout = DefaultReceiptTimeout
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.StaleAfter <= 0 {
		o.StaleAfter = DefaultStaleAfter
	}
	if o.StaleAfter < 2*o.Heartbeat {
		o.StaleAfter = 2 * o.Heartbeat
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return &Backplane{
		live:   map[string]time.Time{},
		client: o.Client, key: key, id: o.ID, opts: o, log: o.Logger,
		queue:   o.Client.NewQueueClient(QueueName(o.ID)),
		seen:    map[string]time.Time{},
		waiting: map[string]chan Outcome{},
		kick:    make(chan struct{}, 1),
	}, nil
}

func validID(id string) bool {
	if len(id) < 8 || len(id) > 40 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// QueueName is the queue of instance id: lowercase letters, digits and one
// hyphen, 11-43 characters, within Azure's 3-63 rule.
func QueueName(id string) string { return QueuePrefix + id }

// ID is this instance's id.
func (b *Backplane) ID() string { return b.id }

// Start creates this instance's queue. An existing queue of the same name
// (only possible with a fixed ID) is cleared, so a restart starts clean.
func (b *Backplane) Start(ctx context.Context) error {
	_, err := b.queue.Create(ctx, &azqueue.CreateOptions{Metadata: b.stamp()})
	if queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
		if _, err = b.queue.ClearMessages(ctx, nil); err == nil {
			err = b.beat(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("backplane: creating queue %s: %w", QueueName(b.id), storage.Classify(err))
	}
	b.log.Info("backplane queue ready", "instance", b.id, "queue", QueueName(b.id))
	return nil
}

func (b *Backplane) stamp() map[string]*string {
	v := fmt.Sprint(b.opts.now().Unix())
	return map[string]*string{metaAlive: &v}
}

// beat stamps this instance's queue with the time.
func (b *Backplane) beat(ctx context.Context) error {
	_, err := b.queue.SetMetadata(ctx, &azqueue.SetMetadataOptions{Metadata: b.stamp()})
	return err
}

// stale reports whether queue metadata names an instance that stopped
// stamping it. A queue without a stamp counts as stale too: every live
// instance stamps its queue when it creates it.
func (b *Backplane) stale(meta map[string]*string) bool {
	for k, v := range meta {
		if v == nil || !strings.EqualFold(k, metaAlive) {
			continue
		}
		sec, err := strconv.ParseInt(*v, 10, 64)
		if err != nil {
			return true
		}
		return b.opts.now().Sub(time.Unix(sec, 0)) > b.opts.StaleAfter
	}
	return true
}

// alive reports whether instance may be running: false only when its
// queue is stamped and the stamp is stale (it died without Close), in which
// case the queue is deleted on the way. A missing queue is left for enqueue
// to judge. A yes is cached for a heartbeat.
func (b *Backplane) alive(ctx context.Context, instance string) (bool, error) {
	now := b.opts.now()
	b.mu.Lock()
	at, ok := b.live[instance]
	b.mu.Unlock()
	if ok && now.Sub(at) < b.opts.Heartbeat {
		return true, nil
	}
	q := b.client.NewQueueClient(QueueName(instance))
	props, err := q.GetProperties(ctx, nil)
	switch {
	case queueerror.HasCode(err, queueerror.QueueNotFound, queueerror.QueueBeingDeleted):
		return true, nil
	case err != nil:
		return false, storage.Classify(err)
	case b.stale(props.Metadata):
		b.log.Info("backplane: deleting the queue of an instance that stopped stamping it", "instance", instance)
		if _, err := q.Delete(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueNotFound) {
			b.log.Warn("backplane: could not delete a dead instance's queue", "instance", instance, "err", storage.Classify(err))
		}
		b.mu.Lock()
		delete(b.live, instance)
		b.mu.Unlock()
		return false, nil
	}
	b.mu.Lock()
	if len(b.live) > 1000 {
		clear(b.live)
	}
	b.live[instance] = now
	b.mu.Unlock()
	return true, nil
}

// storageReset reports whether storage seems to have lost every queue
// lately (an emulator restarted empty): this instance's own queue is
// missing too, or Run re-created it within the last two MaxPolls. Then
// another instance's missing queue is likely to come back at its next
// poll; otherwise it was deleted on purpose (Close, Sweep) and stays gone.
func (b *Backplane) storageReset(ctx context.Context) bool {
	_, err := b.queue.GetProperties(ctx, nil)
	if queueerror.HasCode(err, queueerror.QueueNotFound, queueerror.QueueBeingDeleted) {
		b.wake() // Run re-creates it
		return true
	}
	// Read after the queue was seen: Run notes the time before it
	// re-creates the queue.
	b.mu.Lock()
	r := b.recreated
	b.mu.Unlock()
	return !r.IsZero() && b.opts.now().Sub(r) < 2*b.opts.MaxPoll
}

// Listen declares that this instance holds something forwarded messages
// may be for (an SSE session) until the returned function is called. While
// anyone listens, an empty queue is polled at least every MaxPoll; while
// nobody does, every IdlePoll, since then only messages for sessions that
// ended can arrive (and receipts, which Forward polls for itself).
func (b *Backplane) Listen() (stop func()) {
	b.listeners.Add(1)
	b.wake()
	var once sync.Once
	return func() { once.Do(func() { b.listeners.Add(-1) }) }
}

// wake makes Run poll now.
func (b *Backplane) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Sweep deletes the queues of instances that stopped stamping them (died
// without Close) and returns how many it deleted. Run sweeps at start and
// every few minutes.
func (b *Backplane) Sweep(ctx context.Context) (int, error) {
	prefix := QueuePrefix
	pager := b.client.NewListQueuesPager(&azqueue.ListQueuesOptions{Prefix: &prefix, Include: azqueue.ListQueuesInclude{Metadata: true}})
	n := 0
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return n, storage.Classify(err)
		}
		for _, q := range page.Queues {
			if q == nil || q.Name == nil || *q.Name == QueueName(b.id) || !b.stale(q.Metadata) {
				continue
			}
			if _, err := b.client.NewQueueClient(*q.Name).Delete(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueNotFound) {
				return n, storage.Classify(err)
			}
			b.log.Info("backplane: deleted the queue of a dead instance", "queue", *q.Name)
			n++
		}
	}
	return n, nil
}

// Close answers the messages still on this instance's queue "no such
// session" (its sessions are gone) and deletes the queue, so that POSTs for
// its sessions are answered "session not found; reconnect" at once instead
// of waiting: nothing is left behind. Stop Run first.
func (b *Backplane) Close(ctx context.Context) error {
	for range 8 { // a bounded drain: forwarders racing the delete time out and withdraw
		n, err := b.pollOnce(ctx, func(Envelope) Outcome { return NoSession })
		if err != nil || n == 0 {
			break
		}
	}
	_, err := b.queue.Delete(ctx, nil)
	b.sending.Wait()
	if err != nil && !queueerror.HasCode(err, queueerror.QueueNotFound) {
		return fmt.Errorf("backplane: deleting queue %s: %w", QueueName(b.id), storage.Classify(err))
	}
	return nil
}

// Sign returns the MAC of a message URL: base64url of
// HMAC-SHA256(key, "sse-instance\n<instance>\n<session>\n<subject>").
func (b *Backplane) Sign(instance, session, subject string) string {
	return base64.RawURLEncoding.EncodeToString(b.mac(instance, session, subject))
}

func (b *Backplane) mac(instance, session, subject string) []byte {
	m := hmac.New(sha256.New, b.key)
	m.Write([]byte(Purpose + "\n" + instance + "\n" + session + "\n" + subject))
	return m.Sum(nil)
}

// Verify reports whether sig is the MAC of (instance, session, subject),
// compared in constant time. A false answer means the URL was altered or
// the caller is not the user who opened the session; the two cannot be told
// apart, by design.
func (b *Backplane) Verify(instance, session, subject, sig string) bool {
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || !validID(instance) {
		return false
	}
	return hmac.Equal(got, b.mac(instance, session, subject))
}

// Forward puts e on instance's queue and waits for the owner's receipt. It
// returns nil once the session took the message; ErrSessionEnded,
// ErrNotOwner or ErrBusy as the owner answered; ErrGone when the instance
// is gone or did not take the message within ReceiptTimeout (the message is
// withdrawn first); ErrUnconfirmed when it took the message but sent no
// receipt; ErrTooLarge when the envelope is over MaxEncoded once encoded;
// or a classified storage error. Run must be running: it collects receipts.
func (b *Backplane) Forward(ctx context.Context, instance string, e Envelope) error {
	if !validID(instance) {
		return ErrGone
	}
	if instance != b.id {
		ok, err := b.alive(ctx, instance)
		if err != nil {
			return err
		}
		if !ok {
			return ErrGone
		}
	}
	w := wire{Envelope: e, ID: newMessageID()}
	w.From = b.id
	raw, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("backplane: encoding envelope: %w", err)
	}
	if base64.StdEncoding.EncodedLen(len(raw)) > MaxEncoded {
		return ErrTooLarge
	}
	text := base64.StdEncoding.EncodeToString(raw)

	receipt := make(chan Outcome, 1)
	b.mu.Lock()
	b.waiting[w.ID] = receipt
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.waiting, w.ID)
		b.mu.Unlock()
	}()

	q := b.client.NewQueueClient(QueueName(instance))
	sent, err := b.enqueue(ctx, q, text, 300) // a message nobody takes in 5 minutes is useless
	if err != nil {
		return err
	}
	b.wake() // poll for the receipt now
	timer := time.NewTimer(b.opts.ReceiptTimeout)
	defer timer.Stop()
	select {
	case o := <-receipt:
		return o.err()
	case <-ctx.Done():
		// The caller left; take the message back if nobody has it yet.
		b.withdraw(q, sent)
		return ctx.Err()
	case <-timer.C:
	}
	if b.withdraw(q, sent) {
		b.log.Info("backplane: withdrew a message its instance did not take in time", "instance", instance)
		return ErrGone
	}
	// The owner took it just now, or took it and died, or storage did not
	// answer: give the receipt a last chance.
	timer.Reset(b.opts.ReceiptTimeout)
	select {
	case o := <-receipt:
		return o.err()
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return ErrUnconfirmed
	}
}

// enqueue puts text on q. A missing queue means its instance is gone,
// unless storage lost every queue lately: then it is waited for a little,
// since every live instance re-creates its own on its next poll, within
// MaxPoll.
func (b *Backplane) enqueue(ctx context.Context, q *azqueue.QueueClient, text string, ttl int32) (*azqueue.EnqueuedMessage, error) {
	var deadline time.Time
	for {
		resp, err := q.EnqueueMessage(ctx, text, &azqueue.EnqueueMessageOptions{TimeToLive: &ttl})
		switch {
		case err == nil:
			if len(resp.Messages) == 0 || resp.Messages[0] == nil || resp.Messages[0].MessageID == nil || resp.Messages[0].PopReceipt == nil {
				return nil, errors.New("backplane: the queue service returned no message id")
			}
			return resp.Messages[0], nil
		case queueerror.HasCode(err, queueerror.RequestBodyTooLarge, queueerror.MessageTooLarge):
			return nil, ErrTooLarge
		case !queueerror.HasCode(err, queueerror.QueueNotFound, queueerror.QueueBeingDeleted):
			return nil, storage.Classify(err)
		case deadline.IsZero():
			if !b.storageReset(ctx) {
				return nil, ErrGone
			}
			deadline = b.opts.now().Add(2 * b.opts.MaxPoll)
		case b.opts.now().After(deadline):
			return nil, ErrGone
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// withdraw deletes a message this instance enqueued, and reports whether
// that means it will never be delivered: true when the delete worked or the
// queue is gone, false when the owner had already taken it (its dequeue
// changed the pop receipt) or storage could not be asked.
func (b *Backplane) withdraw(q *azqueue.QueueClient, m *azqueue.EnqueuedMessage) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := q.DeleteMessage(ctx, *m.MessageID, *m.PopReceipt, nil)
	return err == nil || queueerror.HasCode(err, queueerror.QueueNotFound)
}

func newMessageID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run polls this instance's queue until ctx ends. It calls deliver for every
// forwarded envelope in the order the queue returns them, one at a time,
// sends the outcome back to the forwarder, and deletes the message; it hands
// receipts to the Forward calls waiting for them. deliver must not block
// (hand the message over, do not process it).
//
// Polls are immediate while messages flow, every ReceiptPoll while a
// Forward waits for a receipt and for 100 ms after the last message, every
// MinPoll until a second after it, then back off, doubling up to MaxPoll
// while someone listens (see Listen) or IdlePoll while nobody does; storage
// errors back off to MaxPoll. An instance holding quiet sessions thus polls
// about once per MaxPoll, one holding none once per IdlePoll.
func (b *Backplane) Run(ctx context.Context, deliver func(Envelope) Outcome) {
	defer b.sending.Wait()
	wait := b.opts.MinPoll
	var last time.Time
	lastBeat := b.opts.now()
	var lastSweep time.Time
	failing := false // log an outage once, not every poll
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-b.kick:
			timer.Stop()
			wait = b.opts.MinPoll // back off afresh from here
		}
		if now := b.opts.now(); now.Sub(lastBeat) >= b.opts.Heartbeat {
			if err := b.beat(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("backplane: heartbeat failed", "err", storage.Classify(err))
			} else {
				lastBeat = now
			}
		}
		if now := b.opts.now(); now.Sub(lastSweep) >= sweepEvery {
			lastSweep = now
			if _, err := b.Sweep(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("backplane: sweeping dead instances' queues failed", "err", err)
			}
		}
		n, err := b.pollOnce(ctx, deliver)
		if err == nil && failing {
			failing = false
			b.log.Info("backplane: polling works again")
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				failing = true
				b.log.Warn("backplane: polling failed; retrying", "err", err, "cause", causeOf(err))
			}
			wait = b.opts.MaxPoll
			if b.awaited() {
				// A POST waits: retry sooner, but do not spin on a
				// storage outage.
				wait = 100 * time.Millisecond
			}
			if queueerror.HasCode(err, queueerror.QueueNotFound) {
				// Storage lost our queue: make it again. Note the time first
				// (see storageReset).
				b.mu.Lock()
				b.recreated = b.opts.now()
				b.mu.Unlock()
				if serr := b.Start(ctx); serr != nil {
					b.log.Warn("backplane: recreating queue failed", "err", serr)
				} else {
					wait = 0
				}
			}
		case n > 0:
			wait, last = 0, time.Now()
		case time.Since(last) < hot:
			wait = b.opts.ReceiptPoll
		case time.Since(last) < linger:
			wait = b.opts.MinPoll
		case b.listeners.Load() > 0:
			wait = min(max(wait*2, b.opts.MinPoll), b.opts.MaxPoll)
		default:
			wait = min(max(wait*2, b.opts.MinPoll), b.opts.IdlePoll)
		}
		if err == nil && b.awaited() {
			wait = min(wait, b.opts.ReceiptPoll)
		}
		timer.Reset(wait)
	}
}

// awaited reports whether some Forward waits for a receipt.
func (b *Backplane) awaited() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.waiting) > 0
}

func causeOf(err error) error {
	var se *storage.Error
	if errors.As(err, &se) {
		return se.Cause()
	}
	return nil
}

// pollOnce takes one batch off the queue, delivers it and hands out the
// receipts in it.
func (b *Backplane) pollOnce(ctx context.Context, deliver func(Envelope) Outcome) (int, error) {
	n, vis := int32(batchSize), int32(visibility)
	resp, err := b.queue.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &vis})
	if err != nil {
		if queueerror.HasCode(err, queueerror.QueueNotFound) {
			return 0, err
		}
		return 0, storage.Classify(err)
	}
	b.pruneSeen()
	count := 0
	// Deliver in queue order; delete beside it, all at once: a batch must
	// not wait for its messages' deletes one after another.
	var deletes sync.WaitGroup
	for _, m := range resp.Messages {
		if m == nil || m.MessageID == nil || m.PopReceipt == nil {
			continue
		}
		count++
		id, pop := *m.MessageID, *m.PopReceipt
		b.mu.Lock()
		_, dup := b.seen[id]
		b.mu.Unlock()
		if !dup {
			b.take(m.MessageText, deliver)
			b.mu.Lock()
			b.seen[id] = time.Now()
			b.mu.Unlock()
		}
		deletes.Go(func() { b.delete(ctx, id, pop) })
	}
	deletes.Wait()
	return count, nil
}

// delete removes a handled message, with a context of its own: a message
// handed over must not come back because shutdown began. If it does come
// back (the delete failed), seen makes Run skip it.
func (b *Backplane) delete(ctx context.Context, id, pop string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_, err := b.queue.DeleteMessage(dctx, id, pop, nil)
	if err != nil && !queueerror.HasCode(err, queueerror.MessageNotFound) {
		b.log.Warn("backplane: could not delete a delivered message; it will be skipped if it returns", "err", storage.Classify(err))
		return
	}
	b.mu.Lock()
	delete(b.seen, id)
	b.mu.Unlock()
}

// take handles one queue message: a receipt goes to its waiting Forward
// (if it still waits), an envelope to deliver, and its outcome back to the
// forwarder.
func (b *Backplane) take(text *string, deliver func(Envelope) Outcome) {
	w, err := decode(text)
	if err != nil {
		b.log.Warn("backplane: dropping an undecodable message", "err", err)
		return
	}
	if w.Outcome != 0 {
		b.mu.Lock()
		ch := b.waiting[w.ID]
		b.mu.Unlock()
		if ch != nil {
			select {
			case ch <- w.Outcome:
			default:
			}
		}
		return
	}
	o := deliver(w.Envelope)
	if w.From == "" {
		return
	}
	// Send the receipt beside the loop: the next message must not wait for
	// this one's round trip.
	r, err := json.Marshal(wire{ID: w.ID, Outcome: o})
	if err != nil {
		return
	}
	b.sending.Add(1)
	go func() {
		defer b.sending.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Nobody waits for a receipt longer than two ReceiptTimeouts.
		ttl := int32(2*b.opts.ReceiptTimeout/time.Second + 1)
		if _, err := b.enqueue(ctx, b.client.NewQueueClient(QueueName(w.From)), base64.StdEncoding.EncodeToString(r), ttl); err != nil {
			b.log.Warn("backplane: could not send a receipt; its forwarder will give up waiting", "to", w.From, "err", err)
		}
	}()
}

// pruneSeen forgets ids older than twice the visibility timeout.
func (b *Backplane) pruneSeen() {
	b.mu.Lock()
	defer b.mu.Unlock()
	cut := time.Now().Add(-2 * visibility * time.Second)
	for id, t := range b.seen {
		if t.Before(cut) {
			delete(b.seen, id)
		}
	}
}

func decode(text *string) (wire, error) {
	var w wire
	if text == nil {
		return w, errors.New("empty message")
	}
	raw, err := base64.StdEncoding.DecodeString(*text)
	if err != nil {
		return w, err
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return w, err
	}
	switch {
	case w.ID == "":
		return w, errors.New("message without id")
	case w.Outcome > Busy:
		return w, fmt.Errorf("receipt with unknown outcome %d", w.Outcome)
	case w.Outcome != 0:
		return w, nil
	case w.Session == "" || len(w.Message) == 0:
		return w, errors.New("envelope without session or message")
	case w.From != "" && !validID(w.From):
		return w, errors.New("envelope from an invalid instance id")
	}
	return w, nil
}
