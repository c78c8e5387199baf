// Package queues gives each user their own task queues in Azure Queue
// storage: send, peek, receive (dequeue and delete, at least once) and list.
//
// A user-visible queue name maps to a physical queue named
// "u" + 20 hex digits of sha256(owner) + "-" + name, so users never see or
// reach each other's queues. Message text is base64-encoded on the wire so
// any UTF-8 text survives the service's XML format unchanged.
package queues

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue/queueerror"

	"github.com/mcp-apim/remote-mcp/handler/storage"
)

// Limits and defaults.
const (
	// MaxMessageBytes is the largest message text in UTF-8 bytes. Its
	// base64 encoding is exactly 64 KiB, Azure's limit for a message.
	MaxMessageBytes = 48 * 1024
	// MaxBatch is the most messages Peek and Receive return at once.
	MaxBatch = 32
	// DefaultTTL is how long a message lives when SendOptions.TTL is 0.
	DefaultTTL = 7 * 24 * time.Hour
	// MaxTTL is the longest finite TTL.
	MaxTTL = 7 * 24 * time.Hour
	// NeverExpire as SendOptions.TTL keeps a message until it is received.
	// Any negative TTL means the same.
	NeverExpire time.Duration = -1
	// MaxVisibilityDelay is the longest SendOptions.VisibilityDelay.
	MaxVisibilityDelay = 7 * 24 * time.Hour
	// DefaultVisibilityTimeout is Receive's visibility timeout when 0.
	DefaultVisibilityTimeout = 30 * time.Second
	// MaxVisibilityTimeout is the longest visibility timeout Receive takes.
	MaxVisibilityTimeout = time.Hour
	// parallelCalls bounds the per-message deletes and per-queue property
	// reads in flight at once.
	parallelCalls = 8
)

// Service reaches the task queues of every user through one storage account.
type Service struct {
	client *azqueue.ServiceClient
}

// New returns a Service. It does not contact storage.
func New(client *azqueue.ServiceClient) *Service {
	return &Service{client: client}
}

// SendOptions are the optional parts of Send.
type SendOptions struct {
	// TTL is how long the message lives: 1 s to MaxTTL in whole seconds
	// (fractions are dropped), 0 for DefaultTTL, or NeverExpire.
	TTL time.Duration
	// VisibilityDelay hides the message for this long after sending: 0 to
	// MaxVisibilityDelay in whole seconds, and shorter than the TTL.
	VisibilityDelay time.Duration
}

// Sent describes a message that was sent.
type Sent struct {
	ID         string
	InsertedAt time.Time
	// ExpiresAt is the end of the message's life; zero when it never
	// expires.
	ExpiresAt time.Time
	// VisibleAt is when receivers can first see the message.
	VisibleAt time.Time
}

// Message is a message as Peek or Receive returns it.
type Message struct {
	ID         string
	Text       string
	InsertedAt time.Time
	// ExpiresAt is zero when the message never expires.
	ExpiresAt time.Time
	// DequeueCount is how many times the message has been received,
	// counting this time for Receive; above 1 means a redelivery.
	DequeueCount int64
}

// QueueInfo describes one of a user's queues.
type QueueInfo struct {
	// Name is the user-visible name.
	Name string
	// ApproximateMessages counts invisible (delayed or in-flight) messages
	// too, and may lag behind recent changes.
	ApproximateMessages int64
}

// PartialReceiveError reports a Receive in which some messages were taken
// from the queue but could not be deleted. Those messages are not lost: they
// become visible again at VisibleAgainAt and will be delivered again. Receive
// returns it together with the messages that were deleted, so a caller can
// hand those out and tell the user about the rest.
type PartialReceiveError struct {
	// Queue is the user-visible queue name.
	Queue string
	// Undeleted are the messages received but not deleted, with their
	// text, so a caller may show them as "will be delivered again".
	Undeleted []Message
	// VisibleAgainAt is when the undeleted messages reappear.
	VisibleAgainAt time.Time
	// Err is the classified error of the first failed delete.
	Err error
}

// Error says how many messages will come back and when.
func (e *PartialReceiveError) Error() string {
	return fmt.Sprintf("%d received message(s) could not be removed from queue %q; they will be delivered again after %s",
		len(e.Undeleted), e.Queue, e.VisibleAgainAt.UTC().Format(time.RFC3339))
}

// Unwrap returns the delete's classified error. Check for
// *PartialReceiveError with errors.As before testing kinds with errors.Is:
// a delete that failed with ErrNotFound does not mean the queue is missing.
func (e *PartialReceiveError) Unwrap() error { return e.Err }

// Send puts a message on one of owner's queues, creating the queue if it
// does not exist yet.
func (s *Service) Send(ctx context.Context, owner, queue, text string, opts SendOptions) (Sent, error) {
	if err := validate(owner, queue); err != nil {
		return Sent{}, err
	}
	if text == "" {
		return Sent{}, storage.Errorf(storage.ErrInvalid, "message is empty")
	}
	if !utf8.ValidString(text) {
		return Sent{}, storage.Errorf(storage.ErrInvalid, "message is not valid UTF-8 text")
	}
	if len(text) > MaxMessageBytes {
		return Sent{}, storage.Errorf(storage.ErrTooLarge, "message is %d bytes; the limit is %d bytes (48 KiB) of UTF-8 text, which is 64 KiB once encoded", len(text), MaxMessageBytes)
	}
	ttl, err := ttlSeconds(opts.TTL)
	if err != nil {
		return Sent{}, err
	}
	delay, err := delaySeconds(opts.VisibilityDelay, ttl)
	if err != nil {
		return Sent{}, err
	}

	q := s.client.NewQueueClient(physicalName(owner, queue))
	encoded := base64.StdEncoding.EncodeToString([]byte(text))
	enqueue := func() (azqueue.EnqueueMessagesResponse, error) {
		return q.EnqueueMessage(ctx, encoded, &azqueue.EnqueueMessageOptions{TimeToLive: &ttl, VisibilityTimeout: &delay})
	}
	// Sending to an existing queue is the common case, so try first and
	// create on demand rather than paying for a create on every send.
	resp, err := enqueue()
	if queueerror.HasCode(err, queueerror.QueueNotFound) {
		if _, err = q.Create(ctx, nil); err == nil || queueerror.HasCode(err, queueerror.QueueAlreadyExists) {
			resp, err = enqueue()
		}
	}
	if err != nil {
		err = storage.Classify(err)
		if errors.Is(err, storage.ErrTooLarge) {
			return Sent{}, storage.Reword(err, "message is too large for the queue; the limit is %d bytes of UTF-8 text", MaxMessageBytes)
		}
		if errors.Is(err, storage.ErrConflict) {
			// QueueBeingDeleted: the queue is going away right now.
			return Sent{}, storage.Reword(err, "queue %q is being deleted; try again in a minute", queue)
		}
		return Sent{}, err
	}
	if len(resp.Messages) == 0 || resp.Messages[0] == nil {
		return Sent{}, storage.Errorf(storage.ErrUnavailable, "storage accepted the message but did not describe it; check the queue with queue_peek before sending again")
	}
	m := resp.Messages[0]
	return Sent{
		ID:         deref(m.MessageID),
		InsertedAt: timeValue(m.InsertionTime),
		ExpiresAt:  expiry(m.ExpirationTime),
		VisibleAt:  timeValue(m.TimeNextVisible),
	}, nil
}

// Peek returns up to max visible messages (1 to MaxBatch; 0 means 1)
// without changing them.
func (s *Service) Peek(ctx context.Context, owner, queue string, max int) ([]Message, error) {
	if err := validate(owner, queue); err != nil {
		return nil, err
	}
	n, err := batch(max)
	if err != nil {
		return nil, err
	}
	q := s.client.NewQueueClient(physicalName(owner, queue))
	resp, err := q.PeekMessages(ctx, &azqueue.PeekMessagesOptions{NumberOfMessages: &n})
	if err != nil {
		return nil, queueNotFound(storage.Classify(err), queue)
	}
	out := make([]Message, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		if m == nil {
			continue
		}
		out = append(out, Message{
			ID:           deref(m.MessageID),
			Text:         decode(deref(m.MessageText)),
			InsertedAt:   timeValue(m.InsertionTime),
			ExpiresAt:    expiry(m.ExpirationTime),
			DequeueCount: derefInt(m.DequeueCount),
		})
	}
	return out, nil
}

// Receive takes up to max messages (1 to MaxBatch; 0 means 1) off a queue:
// it dequeues them with the given visibility timeout (1 s to
// MaxVisibilityTimeout in whole seconds; 0 means DefaultVisibilityTimeout),
// then deletes each before returning it, so every message is returned once.
//
// Delivery is at least once: if a delete fails, that message is not
// returned in the slice but in a *PartialReceiveError together with the
// messages that were deleted; it becomes visible again when the timeout
// ends. If the caller's context ends between dequeue and delete, the same
// applies to every message.
func (s *Service) Receive(ctx context.Context, owner, queue string, max int, visibility time.Duration) ([]Message, error) {
	if err := validate(owner, queue); err != nil {
		return nil, err
	}
	n, err := batch(max)
	if err != nil {
		return nil, err
	}
	vis, err := visibilitySeconds(visibility)
	if err != nil {
		return nil, err
	}
	q := s.client.NewQueueClient(physicalName(owner, queue))
	resp, err := q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: &n, VisibilityTimeout: &vis})
	if err != nil {
		return nil, queueNotFound(storage.Classify(err), queue)
	}

	type received struct {
		msg        Message
		popReceipt string
		visibleAt  time.Time
		err        error
	}
	got := make([]received, 0, len(resp.Messages))
	for _, m := range resp.Messages {
		if m == nil {
			continue
		}
		got = append(got, received{
			msg: Message{
				ID:           deref(m.MessageID),
				Text:         decode(deref(m.MessageText)),
				InsertedAt:   timeValue(m.InsertionTime),
				ExpiresAt:    expiry(m.ExpirationTime),
				DequeueCount: derefInt(m.DequeueCount),
			},
			popReceipt: deref(m.PopReceipt),
			visibleAt:  timeValue(m.TimeNextVisible),
		})
	}

	// Deleting with the caller's context is deliberate: if the caller has
	// gone, deleting would lose messages nobody will see; leaving them
	// makes them reappear after the timeout instead.
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelCalls)
	for i := range got {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, got[i].err = q.DeleteMessage(ctx, got[i].msg.ID, got[i].popReceipt, nil)
		}()
	}
	wg.Wait()

	deleted := make([]Message, 0, len(got))
	var partial *PartialReceiveError
	for _, r := range got {
		if r.err == nil {
			deleted = append(deleted, r.msg)
			continue
		}
		if partial == nil {
			partial = &PartialReceiveError{Queue: queue, Err: storage.Classify(r.err)}
		}
		partial.Undeleted = append(partial.Undeleted, r.msg)
		if r.visibleAt.After(partial.VisibleAgainAt) {
			partial.VisibleAgainAt = r.visibleAt
		}
	}
	if partial != nil {
		return deleted, partial
	}
	return deleted, nil
}

// List returns owner's queues in name order, with approximate message
// counts.
func (s *Service) List(ctx context.Context, owner string) ([]QueueInfo, error) {
	if err := storage.ValidateOwner(owner); err != nil {
		return nil, err
	}
	prefix := ownerPrefix(owner)
	var names []string
	pager := s.client.NewListQueuesPager(&azqueue.ListQueuesOptions{Prefix: &prefix})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, storage.Classify(err)
		}
		for _, q := range page.Queues {
			if q != nil && q.Name != nil && len(*q.Name) > len(prefix) && (*q.Name)[:len(prefix)] == prefix {
				names = append(names, *q.Name)
			}
		}
	}

	infos := make([]QueueInfo, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelCalls)
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			infos[i].Name = name[len(prefix):]
			props, err := s.client.NewQueueClient(name).GetProperties(ctx, nil)
			if err != nil {
				errs[i] = err
				return
			}
			if props.ApproximateMessagesCount != nil {
				infos[i].ApproximateMessages = int64(*props.ApproximateMessagesCount)
			}
		}()
	}
	wg.Wait()

	out := infos[:0]
	for i, info := range infos {
		if err := errs[i]; err != nil {
			if queueerror.HasCode(err, queueerror.QueueNotFound) {
				continue // deleted since it was listed
			}
			return nil, storage.Classify(err)
		}
		out = append(out, info)
	}
	return out, nil
}

// validate checks the owner and the user-visible queue name.
func validate(owner, name string) error {
	if err := storage.ValidateOwner(owner); err != nil {
		return err
	}
	return ValidateName(name)
}

func queueNotFound(err error, queue string) error {
	if errors.Is(err, storage.ErrNotFound) {
		return storage.Reword(err, "queue %q does not exist; send a message to create it", queue)
	}
	return err
}

func batch(max int) (int32, error) {
	if max == 0 {
		return 1, nil
	}
	if max < 1 || max > MaxBatch {
		return 0, storage.Errorf(storage.ErrInvalid, "max_messages must be between 1 and %d", MaxBatch)
	}
	return int32(max), nil
}

// ttlSeconds converts a TTL to the service's seconds, -1 meaning never.
func ttlSeconds(ttl time.Duration) (int32, error) {
	switch {
	case ttl == 0:
		return int32(DefaultTTL / time.Second), nil
	case ttl < 0:
		return -1, nil
	case ttl < time.Second || ttl > MaxTTL:
		return 0, storage.Errorf(storage.ErrInvalid, "ttl must be between 1 second and 7 days (604800 seconds), or -1 to never expire")
	}
	return int32(ttl / time.Second), nil
}

func delaySeconds(delay time.Duration, ttl int32) (int32, error) {
	if delay < 0 || delay > MaxVisibilityDelay {
		return 0, storage.Errorf(storage.ErrInvalid, "delay must be between 0 and 7 days (604800 seconds)")
	}
	d := int32(delay / time.Second)
	if ttl > 0 && d >= ttl {
		return 0, storage.Errorf(storage.ErrInvalid, "delay (%d s) must be shorter than the ttl (%d s), or the message would expire before anyone could see it", d, ttl)
	}
	return d, nil
}

func visibilitySeconds(v time.Duration) (int32, error) {
	if v == 0 {
		return int32(DefaultVisibilityTimeout / time.Second), nil
	}
	if v < time.Second || v > MaxVisibilityTimeout {
		return 0, storage.Errorf(storage.ErrInvalid, "visibility timeout must be between 1 second and 1 hour (3600 seconds)")
	}
	return int32(v / time.Second), nil
}

// decode reverses Send's base64. A message that is not base64 of UTF-8
// text was put there by something else; its text is returned as it is
// rather than hidden.
func decode(s string) string {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || !utf8.Valid(b) {
		return s
	}
	return string(b)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func derefInt(n *int64) int64 {
	if n == nil {
		return 0
	}
	return *n
}

// expiry returns a message's expiry time, or zero for a message that never
// expires, which the service reports as the end of year 9999.
func expiry(t *time.Time) time.Time {
	if t == nil || t.Year() >= 9999 {
		return time.Time{}
	}
	return t.UTC()
}

func timeValue(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}
