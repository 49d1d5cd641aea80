package deliver

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/sdk"
)

// The hand-off, the router's way into this package: Start offers each
// destination on the direct path its share of a routed batch, and Settle
// queues on the routed stream, for the destinations' consumers, every event a
// destination did not take, then tells the router which ingest messages it may
// ack.

// Routed is one event the router routed, on its way to its destinations.
type Routed struct {
	Event    sdk.Event
	Received time.Time // when JetStream stored the ingest message
	Seq      uint64    // the ingest message's stream sequence
	Dests    []string
}

// HandOff takes routed events to their destinations: each destination on the
// direct path is offered its share at once; what a destination did not take
// is queued for it on the routed stream, where its consumer retries it.
type HandOff struct {
	js          jetstream.JetStream
	destination func(id string) *Deliverer
	metrics     *metrics.Metrics
	log         *slog.Logger
}

// NewHandOff returns a hand-off that queues on the routed stream through js.
// destination returns a destination's running deliverer, or nil, and then
// its events are queued; a nil destination queues every event.
func NewHandOff(js jetstream.JetStream, destination func(id string) *Deliverer, m *metrics.Metrics, log *slog.Logger) *HandOff {
	return &HandOff{js: js, destination: destination, metrics: m, log: log}
}

// Batch is a batch of routed events being handed off.
type Batch struct {
	h      *HandOff
	events []Routed
	// outcomes holds, per event and in the order of its Dests, what the
	// direct path did with it; nil for an event none was offered.
	outcomes [][]Outcome
	offers   []offer
}

// offer is one destination's share of a batch, offered on the direct path.
type offer struct {
	deliverer *Deliverer
	offered   *Offered
	events    []int // each event's index in the batch,
	dpos      []int // and the destination's position in its Dests
}

// Start offers each destination on the direct path its share of the events;
// Settle takes the answers.
func (h *HandOff) Start(events []Routed) *Batch {
	b := &Batch{h: h, events: events, outcomes: make([][]Outcome, len(events))}
	if h.destination == nil || len(events) == 0 {
		return b
	}
	type share struct {
		offer
		events   []sdk.Event
		received []time.Time
	}
	shares := map[string]*share{}
	var order []string
	// One allocation for the batch's outcomes, not one per event.
	total := 0
	for _, ev := range events {
		total += len(ev.Dests)
	}
	outcomes := make([]Outcome, total)
	for i, ev := range events {
		nd := len(ev.Dests)
		b.outcomes[i], outcomes = outcomes[:nd:nd], outcomes[nd:]
		for k, d := range ev.Dests {
			s := shares[d]
			if s == nil {
				n := len(events)
				s = &share{
					offer:  offer{events: make([]int, 0, n), dpos: make([]int, 0, n)},
					events: make([]sdk.Event, 0, n), received: make([]time.Time, 0, n),
				}
				shares[d] = s
				order = append(order, d)
			}
			s.offer.events, s.dpos = append(s.offer.events, i), append(s.dpos, k)
			s.events = append(s.events, ev.Event)
			s.received = append(s.received, ev.Received)
		}
	}
	for _, d := range order {
		s := shares[d]
		if s.deliverer = h.destination(d); s.deliverer == nil {
			continue
		}
		if s.offered = s.deliverer.Offer(s.events, s.received); s.offered == nil {
			continue
		}
		b.offers = append(b.offers, s.offer)
	}
	return b
}

// Offered reports whether a destination was offered part of the batch: its
// answer may take as long as a plugin call.
func (b *Batch) Offered() bool { return len(b.offers) > 0 }

// Settle waits for the direct path's answers, queues every event on the routed
// stream for each destination that did not take it, and calls safe for each
// event, in order, once it is delivered, dead-lettered or queued for every
// destination (ok true: its ingest message may be acked), or once that failed
// (ok false: it must come again). Queueing is bounded by queueTimeout.
func (b *Batch) Settle(ctx context.Context, safe func(i int, ok bool)) {
	for _, o := range b.offers {
		for n, out := range o.deliverer.Await(o.offered) {
			b.outcomes[o.events[n]][o.dpos[n]] = out
		}
	}
	futs := make([][]jetstream.PubAckFuture, len(b.events))
	sent := make([]bool, len(b.events))
	for i := range b.events {
		futs[i], sent[i] = b.queue(i)
	}
	ctx, cancel := context.WithTimeout(ctx, queueTimeout)
	defer cancel()
	routed, queued := map[string]*metrics.ByType{}, map[string]int{}
	for i, ev := range b.events {
		ok := sent[i] && b.confirmed(ctx, ev, futs[i])
		safe(i, ok)
		if !ok {
			continue
		}
		for k, d := range ev.Dests {
			if routed[d] == nil {
				routed[d] = new(metrics.ByType)
			}
			routed[d].Add(ev.Event.Type)
			if b.outcomes[i] == nil || !b.outcomes[i][k].Done {
				queued[d]++
			}
		}
	}
	for d, n := range routed {
		n.AddTo(b.h.metrics.Routed, d)
	}
	for d, n := range queued {
		b.h.metrics.Queued.WithLabelValues(d).Add(float64(n))
	}
}

// queue publishes event i to the routed stream for each destination that did
// not take it directly; false if a publish could not be sent.
func (b *Batch) queue(i int) ([]jetstream.PubAckFuture, bool) {
	ev := &b.events[i]
	var futs []jetstream.PubAckFuture
	for k, d := range ev.Dests {
		var o Outcome
		if b.outcomes[i] != nil {
			o = b.outcomes[i][k]
		}
		if o.Done {
			continue
		}
		fut, err := b.h.js.PublishMsgAsync(routedMsg(d, ev.Event.JSON, handOffID(ev, d), o.RetryAt))
		if err != nil {
			b.h.log.Error("cannot publish to the routed stream", "err", err)
			return nil, false
		}
		futs = append(futs, fut)
	}
	return futs, true
}

// confirmed waits for an event's publishes to the routed stream.
func (b *Batch) confirmed(ctx context.Context, ev Routed, futs []jetstream.PubAckFuture) bool {
	for _, fut := range futs {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			b.h.log.Error("hand-off failed; the event will be retried", "messageId", ev.Event.MessageID, "err", err)
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}
