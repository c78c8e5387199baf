// Package backplane carries SSE messages between handler instances through
// Azure Queue storage (DESIGN.md section 8).
//
// Every instance has a random id and its own queue "bp-<id>" in the shared
// storage account, created by Start and deleted by Close. The SSE message URL
// an instance hands out names it and carries a MAC (InternalKey, purpose
// "sse-instance") over the instance id, the session id and the subject of the
// user who opened the stream, so a POST that lands on another instance can be
// checked there, tamper and owner alike, before anything is queued. Forward
// puts the message on the owner's queue; the owner's Run loop takes it off and
// hands it to a delivery function, in queue order.
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
	DefaultMinPoll = 20 * time.Millisecond
	DefaultMaxPoll = 1500 * time.Millisecond
	// visibility is how long a dequeued message stays hidden before it is
	// deleted; if the owner dies in between, the message reappears (and is
	// then dropped or delivered by nobody, since its sessions died too).
	visibility = 30
	batchSize  = 32
	// linger is how long polls stay at MinPoll after the last message
	// before backing off: a conversation's next message usually follows
	// its answer within a few hundred milliseconds.
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
	// ErrGone: the instance named in the URL has no queue: it stopped. Its
	// sessions are gone; the client must open a new stream.
	ErrGone = errors.New("backplane: the instance holding the session is gone")
	// ErrTooLarge: the envelope does not fit in a queue message.
	ErrTooLarge = errors.New("backplane: message too large to forward")
)

// Envelope is one forwarded client message.
type Envelope struct {
	// Session is the SSE session id.
	Session string `json:"s"`
	// Subject is the token subject of the POST's caller; the owner checks it
	// against the session's again.
	Subject string `json:"u"`
	// Message is the JSON-RPC message as posted.
	Message json.RawMessage `json:"m"`
	// From is the instance that forwarded it, for logs.
	From string `json:"f,omitempty"`
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
	// waits double up to MaxPoll while the queue stays empty. After a
	// non-empty poll the next poll is immediate.
	MinPoll, MaxPoll time.Duration
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

	mu   sync.Mutex
	seen map[string]time.Time // message ids delivered recently, against redelivery
	// live caches other instances' liveness: when it was checked and the
	// answer.
	live map[string]liveness
}

type liveness struct {
	checked time.Time
	alive   bool
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
		live:   map[string]liveness{},
		client: o.Client, key: key, id: o.ID, opts: o, log: o.Logger,
		queue: o.Client.NewQueueClient(QueueName(o.ID)),
		seen:  map[string]time.Time{},
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

// alive reports whether instance's queue exists and was stamped recently.
// A yes is cached for a heartbeat; a no is not, since a POST for a dead
// instance's session is rare (the client reconnects after the 404) and a
// queue can come back (Run recreates a lost one). A stale queue is deleted
// on the way.
func (b *Backplane) alive(ctx context.Context, instance string) (bool, error) {
	now := b.opts.now()
	b.mu.Lock()
	l, ok := b.live[instance]
	b.mu.Unlock()
	if ok && l.alive && now.Sub(l.checked) < b.opts.Heartbeat {
		return true, nil
	}
	q := b.client.NewQueueClient(QueueName(instance))
	props, err := q.GetProperties(ctx, nil)
	switch {
	case queueerror.HasCode(err, queueerror.QueueNotFound, queueerror.QueueBeingDeleted):
		l = liveness{checked: now, alive: false}
	case err != nil:
		return false, storage.Classify(err)
	default:
		l = liveness{checked: now, alive: !b.stale(props.Metadata)}
		if !l.alive {
			b.log.Info("backplane: deleting the queue of an instance that stopped stamping it", "instance", instance)
			if _, err := q.Delete(ctx, nil); err != nil && !queueerror.HasCode(err, queueerror.QueueNotFound) {
				b.log.Warn("backplane: could not delete a dead instance's queue", "instance", instance, "err", storage.Classify(err))
			}
		}
	}
	b.mu.Lock()
	if len(b.live) > 1000 {
		clear(b.live)
	}
	if l.alive {
		b.live[instance] = l
	} else {
		delete(b.live, instance)
	}
	b.mu.Unlock()
	return l.alive, nil
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

// Close deletes this instance's queue, so that POSTs for its sessions are
// answered "session not found" at once. Stop Run first.
func (b *Backplane) Close(ctx context.Context) error {
	_, err := b.queue.Delete(ctx, nil)
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

// Forward puts e on instance's queue. It returns ErrGone when that queue
// does not exist, ErrTooLarge when the envelope is over MaxEncoded once
// encoded, or a classified storage error.
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
	e.From = b.id
	raw, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("backplane: encoding envelope: %w", err)
	}
	if base64.StdEncoding.EncodedLen(len(raw)) > MaxEncoded {
		return ErrTooLarge
	}
	text := base64.StdEncoding.EncodeToString(raw)
	ttl := int32(300) // a message nobody takes in 5 minutes is useless
	_, err = b.client.NewQueueClient(QueueName(instance)).EnqueueMessage(ctx, text, &azqueue.EnqueueMessageOptions{TimeToLive: &ttl})
	switch {
	case err == nil:
		return nil
	case queueerror.HasCode(err, queueerror.QueueNotFound, queueerror.QueueBeingDeleted):
		return ErrGone
	case queueerror.HasCode(err, queueerror.RequestBodyTooLarge, queueerror.MessageTooLarge):
		return ErrTooLarge
	}
	return storage.Classify(err)
}

// Run polls this instance's queue until ctx ends, calling deliver for every
// envelope in the order the queue returns them, one at a time, then deleting
// the message. deliver must not block for long (hand the message over, do
// not process it). Polls are immediate while messages flow, every MinPoll
// for a second after the last message, then back off, doubling up to
// MaxPoll, while the queue stays empty; storage errors back off to MaxPoll
// too. An idle instance thus polls about once per MaxPoll.
func (b *Backplane) Run(ctx context.Context, deliver func(Envelope)) {
	wait := b.opts.MinPoll
	var last time.Time
	lastBeat := b.opts.now()
	var lastSweep time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
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
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			b.log.Warn("backplane: polling failed; retrying", "err", err, "cause", causeOf(err))
			wait = b.opts.MaxPoll
			if queueerror.HasCode(err, queueerror.QueueNotFound) {
				// Someone deleted our queue: make it again.
				if serr := b.Start(ctx); serr != nil {
					b.log.Warn("backplane: recreating queue failed", "err", serr)
				}
			}
		case n > 0:
			wait, last = 0, time.Now()
		case time.Since(last) < linger:
			wait = b.opts.MinPoll
		default:
			wait = min(wait*2, b.opts.MaxPoll)
		}
		timer.Reset(wait)
	}
}

func causeOf(err error) error {
	var se *storage.Error
	if errors.As(err, &se) {
		return se.Cause()
	}
	return nil
}

// pollOnce takes one batch off the queue and delivers it.
func (b *Backplane) pollOnce(ctx context.Context, deliver func(Envelope)) (int, error) {
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
	for _, m := range resp.Messages {
		if m == nil || m.MessageID == nil || m.PopReceipt == nil {
			continue
		}
		count++
		id := *m.MessageID
		b.mu.Lock()
		_, dup := b.seen[id]
		b.mu.Unlock()
		if !dup {
			e, derr := decode(m.MessageText)
			if derr != nil {
				b.log.Warn("backplane: dropping an undecodable message", "err", derr)
			} else {
				deliver(e)
			}
			b.mu.Lock()
			b.seen[id] = time.Now()
			b.mu.Unlock()
		}
		// Delete with a context of its own: a message handed over must not
		// come back because shutdown began.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		_, derr := b.queue.DeleteMessage(dctx, id, *m.PopReceipt, nil)
		cancel()
		if derr != nil && !queueerror.HasCode(derr, queueerror.MessageNotFound) {
			b.log.Warn("backplane: could not delete a delivered message; it will be skipped if it returns", "err", storage.Classify(derr))
		} else {
			b.mu.Lock()
			delete(b.seen, id)
			b.mu.Unlock()
		}
	}
	return count, nil
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

func decode(text *string) (Envelope, error) {
	var e Envelope
	if text == nil {
		return e, errors.New("empty message")
	}
	raw, err := base64.StdEncoding.DecodeString(*text)
	if err != nil {
		return e, err
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		return e, err
	}
	if e.Session == "" || len(e.Message) == 0 {
		return e, errors.New("envelope without session or message")
	}
	return e, nil
}
