package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stored is a dead letter as read back from the stream.
type Stored struct {
	Letter
	At  time.Time // when it died
	Seq uint64    // its sequence in the stream
	// What the event says it is, each "" when missing (an invalid event may
	// not be JSON at all): the call's type, its messageId, and its event name
	// (or page or screen name).
	Type, MessageID, Name string
}

// ErrNoStream is Open's error when the dead-letter stream does not exist.
var ErrNoStream = errors.New("there is no stream " + Stream)

// Walk is a pass over the dead letters stored when it was opened, oldest first.
type Walk struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer // ordered, on the chosen subjects
	// Count is how many letters the walk holds: those there when it was
	// opened, up to the limit.
	Count int
}

// Open starts a walk over the dead letters of destination ("" for every
// destination's and the invalid events', Invalid for those alone), at most
// limit of them (0: all).
func Open(ctx context.Context, js jetstream.JetStream, destination string, limit int) (*Walk, error) {
	stream, err := js.Stream(ctx, Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, ErrNoStream
	}
	if err != nil {
		return nil, err
	}
	subject := Subjects
	if destination != "" {
		subject = Subject(destination)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	w := &Walk{js: js, stream: stream, cons: cons, Count: int(info.NumPending)}
	if limit > 0 {
		w.Count = min(w.Count, limit)
	}
	return w, nil
}

// Next reads the next dead letter of the walk; call it at most Count times.
func (w *Walk) Next(ctx context.Context) (Stored, error) {
	m, err := w.cons.Next(jetstream.FetchContext(ctx))
	if err != nil {
		return Stored{}, err
	}
	return read(m)
}

func read(m jetstream.Msg) (Stored, error) {
	md, err := m.Metadata()
	if err != nil {
		return Stored{}, err
	}
	h := m.Headers()
	attempts, _ := strconv.Atoi(h.Get(HeaderAttempts))
	s := Stored{
		Letter: Letter{Body: m.Data(), Destination: h.Get(HeaderDestination), Stage: h.Get(HeaderStage),
			Attempts: attempts, Reason: h.Get(HeaderError)},
		At: md.Timestamp, Seq: md.Sequence.Stream,
	}
	var ev struct {
		Type      any `json:"type"`
		MessageID any `json:"messageId"`
		Event     any `json:"event"`
		Name      any `json:"name"`
	}
	if json.Unmarshal(m.Data(), &ev) == nil && ev.Type == nil {
		ev.Type = "track" // as the router reads a call without one
	}
	if ev.Event == nil {
		ev.Event = ev.Name
	}
	s.Type, s.MessageID, s.Name = text(ev.Type), text(ev.MessageID), text(ev.Event)
	return s, nil
}

// text is a JSON value read from an event as a string: "" when it is missing.
func text(v any) string {
	if s, ok := v.(string); ok || v == nil {
		return s
	}
	return fmt.Sprint(v)
}

// Replay queues every letter of the walk again, as the message queue makes
// of its body, and deletes each from the stream once it is stored there; it
// returns how many it replayed. queue must give the message msgID as its
// Nats-Msg-Id: it is made from the letter's sequence, so a replay run again
// after an interruption does not queue a letter twice.
func (w *Walk) Replay(ctx context.Context, queue func(body []byte, msgID string) *nats.Msg) (int, error) {
	replayed := 0
	for range w.Count {
		l, err := w.Next(ctx)
		if err != nil {
			return replayed, fmt.Errorf("after %d replayed: %w", replayed, err)
		}
		out := queue(l.Body, "dlq-"+strconv.FormatUint(l.Seq, 10))
		if _, err := w.js.PublishMsg(ctx, out); err != nil {
			return replayed, fmt.Errorf("after %d replayed, cannot queue messageId %q again: %w", replayed, l.MessageID, err)
		}
		if err := w.stream.DeleteMsg(ctx, l.Seq); err != nil {
			return replayed, fmt.Errorf("after %d replayed, messageId %q is queued again but still in %s: %w", replayed, l.MessageID, Stream, err)
		}
		replayed++
	}
	return replayed, nil
}

// ToSubject is a queue for Replay that publishes to subject, such as the
// ingest stream's, where invalid events go back through validation.
func ToSubject(subject string) func(body []byte, msgID string) *nats.Msg {
	return func(body []byte, msgID string) *nats.Msg {
		return &nats.Msg{Subject: subject, Data: body, Header: nats.Header{jetstream.MsgIDHeader: {msgID}}}
	}
}
