package tools

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"

	"github.com/mcp-apim/remote-mcp/handler/auth"
	"github.com/mcp-apim/remote-mcp/handler/queues"
	"github.com/mcp-apim/remote-mcp/handler/storage"
)

const queueRules = "1 to 41 characters: lowercase letters, digits and single hyphens, starting and ending with a letter or digit"

// SentMessage confirms queue_send.
type SentMessage struct {
	Queue      string    `json:"queue"`
	MessageID  string    `json:"message_id"`
	InsertedAt time.Time `json:"inserted_at"`
	ExpiresAt  time.Time `json:"expires_at,omitzero" jsonschema:"absent when the message never expires"`
	VisibleAt  time.Time `json:"visible_at" jsonschema:"when receivers can first see the message"`
}

// QueueMessage is a message as peeked or received.
type QueueMessage struct {
	ID           string    `json:"id"`
	Text         string    `json:"text"`
	InsertedAt   time.Time `json:"inserted_at"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	DequeueCount int64     `json:"dequeue_count" jsonschema:"how many times the message has been received, this time included; above 1 means a redelivery"`
	// ReappearsAt is set by queue_receive for a message it could not remove.
	ReappearsAt time.Time `json:"reappears_at,omitzero" jsonschema:"set when removing the message failed: it stays in the queue and is delivered again at this time"`
}

// QueueMessages is the answer of queue_peek and queue_receive.
type QueueMessages struct {
	Queue    string         `json:"queue"`
	Messages []QueueMessage `json:"messages"`
	Note     string         `json:"note,omitempty" jsonschema:"present when some messages could not be removed"`
}

// QueueInfo is one queue of queue_list.
type QueueInfo struct {
	Name              string `json:"name"`
	ApproximateLength int64  `json:"approximate_message_count"`
}

// QueueList is the answer of queue_list.
type QueueList struct {
	Queues []QueueInfo `json:"queues"`
}

func messages(queue string, ms []queues.Message) QueueMessages {
	out := QueueMessages{Queue: queue, Messages: make([]QueueMessage, 0, len(ms))}
	for _, m := range ms {
		out.Messages = append(out.Messages, QueueMessage{ID: m.ID, Text: m.Text, InsertedAt: m.InsertedAt, ExpiresAt: m.ExpiresAt, DequeueCount: m.DequeueCount})
	}
	return out
}

func seconds(n int, name string, lo, hi int) (time.Duration, error) {
	if n < lo || n > hi {
		return 0, fmt.Errorf("%w: %s must be between %d and %d", storage.ErrInvalid, name, lo, hi)
	}
	return time.Duration(n) * time.Second, nil
}

const week = 7 * 24 * 3600

type sendArgs struct {
	Queue        string `json:"queue"`
	Message      string `json:"message"`
	TTLSeconds   *int   `json:"ttl_seconds"`
	DelaySeconds int    `json:"delay_seconds"`
}

func queueParam(extra string) mcp.ToolOption {
	return mcp.WithString("queue", mcp.Required(), mcp.MinLength(1), mcp.MaxLength(41),
		mcp.Pattern(`^[a-z0-9]([a-z0-9]|-[a-z0-9])*$`),
		mcp.Description("Queue name, "+queueRules+"."+extra))
}

func (t *toolset) queueSend() server.ServerTool {
	tool := mcp.NewTool("queue_send",
		mcp.WithTitleAnnotation("Send a task message"),
		mcp.WithDescription(fmt.Sprintf("Appends a text message (up to %d KiB of UTF-8) to one of the user's task queues, "+
			"creating the queue on first use. Messages expire after ttl_seconds (default 7 days) and can be "+
			"hidden from receivers for delay_seconds.", queues.MaxMessageBytes/1024)),
		queueParam(" Created if it does not exist."),
		mcp.WithString("message", mcp.Required(), mcp.Description("The message text, e.g. a JSON task description.")),
		mcp.WithInteger("ttl_seconds", mcp.Min(-1), mcp.Max(week),
			mcp.Description("Time to live in seconds, 1 to 604800 (7 days, the default), or -1 for never expiring.")),
		mcp.WithInteger("delay_seconds", mcp.Min(0), mcp.Max(week),
			mcp.Description("Seconds before the message becomes visible to receivers; default 0.")),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(false),
		mcp.WithIdempotentHintAnnotation(false),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[SentMessage](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "queue_send", func(ctx context.Context, who auth.Identity, a sendArgs) (SentMessage, error) {
		opts := queues.SendOptions{}
		if a.TTLSeconds != nil {
			if *a.TTLSeconds == -1 {
				opts.TTL = queues.NeverExpire
			} else {
				d, err := seconds(*a.TTLSeconds, "ttl_seconds", 1, week)
				if err != nil {
					return SentMessage{}, err
				}
				opts.TTL = d
			}
		}
		d, err := seconds(a.DelaySeconds, "delay_seconds", 0, week)
		if err != nil {
			return SentMessage{}, err
		}
		opts.VisibilityDelay = d
		s, err := t.d.Queues.Send(ctx, who.Owner(), a.Queue, a.Message, opts)
		if err != nil {
			return SentMessage{}, err
		}
		return SentMessage{Queue: a.Queue, MessageID: s.ID, InsertedAt: s.InsertedAt, ExpiresAt: s.ExpiresAt, VisibleAt: s.VisibleAt}, nil
	})}
}

type peekArgs struct {
	Queue string `json:"queue"`
	Count int    `json:"count"`
}

func (t *toolset) queuePeek() server.ServerTool {
	tool := mcp.NewTool("queue_peek",
		mcp.WithTitleAnnotation("Peek at a task queue"),
		mcp.WithDescription("Shows up to count messages at the front of a queue without removing them or hiding "+
			"them from receivers."),
		queueParam(""),
		mcp.WithInteger("count", mcp.Min(1), mcp.Max(32), mcp.Description("How many messages, 1 to 32; default 1.")),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[QueueMessages](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "queue_peek", func(ctx context.Context, who auth.Identity, a peekArgs) (QueueMessages, error) {
		ms, err := t.d.Queues.Peek(ctx, who.Owner(), a.Queue, max(a.Count, 1))
		return messages(a.Queue, ms), err
	})}
}

type receiveArgs struct {
	Queue             string `json:"queue"`
	Count             int    `json:"count"`
	VisibilityTimeout int    `json:"visibility_timeout_seconds"`
}

func (t *toolset) queueReceive() server.ServerTool {
	tool := mcp.NewTool("queue_receive",
		mcp.WithTitleAnnotation("Take messages from a task queue"),
		mcp.WithDescription("Takes up to count messages from the front of a queue and removes them, so each message "+
			"is handed to one receiver. While this call runs, the messages are hidden from other receivers for "+
			"visibility_timeout_seconds; if removal fails they reappear after that time and are delivered again "+
			"(at-least-once, dequeue_count tells)."),
		queueParam(""),
		mcp.WithInteger("count", mcp.Min(1), mcp.Max(32), mcp.Description("How many messages, 1 to 32; default 1.")),
		mcp.WithInteger("visibility_timeout_seconds", mcp.Min(1), mcp.Max(3600),
			mcp.Description("Seconds the messages stay hidden from other receivers, 1 to 3600; default 30.")),
		mcp.WithReadOnlyHintAnnotation(false),
		mcp.WithDestructiveHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(false),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[QueueMessages](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "queue_receive", func(ctx context.Context, who auth.Identity, a receiveArgs) (QueueMessages, error) {
		vis := 30 * time.Second
		if a.VisibilityTimeout != 0 {
			d, err := seconds(a.VisibilityTimeout, "visibility_timeout_seconds", 1, 3600)
			if err != nil {
				return QueueMessages{}, err
			}
			vis = d
		}
		ms, err := t.d.Queues.Receive(ctx, who.Owner(), a.Queue, max(a.Count, 1), vis)
		// Messages that were taken but not removed are still handed out,
		// marked, rather than hidden behind an error: the caller has them
		// now and will see them again.
		var partial *queues.PartialReceiveError
		if errors.As(err, &partial) {
			out := messages(a.Queue, append(ms, partial.Undeleted...))
			for i := len(ms); i < len(out.Messages); i++ {
				out.Messages[i].ReappearsAt = partial.VisibleAgainAt
			}
			out.Note = partial.Error()
			return out, nil
		}
		return messages(a.Queue, ms), err
	})}
}

type noArgs struct{}

func (t *toolset) queueList() server.ServerTool {
	tool := mcp.NewTool("queue_list",
		mcp.WithTitleAnnotation("List task queues"),
		mcp.WithDescription("Lists the user's task queues with their approximate number of messages."),
		mcp.WithReadOnlyHintAnnotation(true),
		mcp.WithIdempotentHintAnnotation(true),
		mcp.WithOpenWorldHintAnnotation(false),
		outputSchema[QueueList](),
	)
	return server.ServerTool{Tool: tool, Handler: handle(t.d, "queue_list", func(ctx context.Context, who auth.Identity, _ noArgs) (QueueList, error) {
		qs, err := t.d.Queues.List(ctx, who.Owner())
		if err != nil {
			return QueueList{}, err
		}
		out := QueueList{Queues: make([]QueueInfo, 0, len(qs))}
		for _, q := range qs {
			out.Queues = append(out.Queues, QueueInfo{Name: q.Name, ApproximateLength: int64(q.ApproximateMessages)})
		}
		return out, nil
	})}
}
