// Package router is the router stage: it reads producers' events from the
// ingest stream, validates and normalizes them, drops repeats, decides their
// destinations and hands each one on to the routed stream before acking it.
package router

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/route"
	"trackd.dev/trackd/daemon/internal/tap"
)

// How long a batch's dedupe claims, and then its hand-offs, may take before
// its messages are nak'ed; past the consumer's AckWait NATS would hand the
// batch to another worker. (Waiting for a plugin's answer is not bounded by
// it: the messages are kept in progress meanwhile.)
const batchTimeout = bus.RouterAckWait

// Router runs the router stage.
type Router struct {
	JS        jetstream.JetStream
	Consumer  jetstream.Consumer
	Claimer   *dedupe.Claimer
	Normalize normalize.Options
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	BatchSize int
	// Linger is how long a batch may wait, after its first event, for more
	// (bus.ConsumeBatches).
	Linger time.Duration
	// Tap, when not nil, hears about each decision while a `trackd tap` listens.
	Tap *tap.Publisher
	// HandOff takes routed events to their destinations.
	HandOff HandOff

	routes atomic.Pointer[route.Table]
}

// HandOff takes routed events to their destinations and says, per event,
// when its ingest message may be acked (deliver.HandOff).
type HandOff interface {
	Start(events []deliver.Routed) *deliver.Batch
}

// SetRoutes replaces the routing table; events in flight keep the old one.
func (r *Router) SetRoutes(t *route.Table) { r.routes.Store(t) }

// Run routes events until ctx is done, then finishes the batches in hand.
//
// A batch is normalized and its dedupe claims sent on the consumer's
// goroutine; a second goroutine settles the claims, routes, and offers the
// events to the destinations on the direct path; then the batch waits for
// the destinations' answers, sends the hand-offs of what they did not take
// and acks, on a goroutine of its own. So while one batch's claims are stored
// the next one is normalized, and batches are settled in any order: a
// destination slow to answer holds up only the batches it was offered, never
// the router. The consumer's MaxAckPending bounds how many batches are in hand.
func (r *Router) Run(ctx context.Context) error {
	claimed := make(chan *batch, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var settling sync.WaitGroup
		for b := range claimed {
			r.route(b)
			settling.Go(func() { r.settle(b) })
		}
		settling.Wait()
	}()
	err := bus.ConsumeBatches(ctx, r.Consumer, r.BatchSize, r.Linger, nil, func(msgs []jetstream.Msg) {
		// A batch in hand is finished even when the daemon is stopping.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
		b := &batch{ctx: bctx, cancel: cancel}
		r.claim(b, msgs)
		claimed <- b
	})
	close(claimed)
	<-done
	return err
}

// settle takes the hand-off's word on each routed event, acking the ingest
// message of each one safely handed on, and acks the invalid events once
// their dead letters are stored.
func (r *Router) settle(b *batch) {
	defer b.cancel()
	if b.handoff != nil {
		stop := func() {}
		if b.handoff.Offered() {
			// A plugin may take minutes to answer: keep the messages from being
			// handed to another worker meanwhile.
			msgs := make([]jetstream.Msg, len(b.routed))
			for i, it := range b.routed {
				msgs[i] = it.msg
			}
			stop = bus.KeepInProgress(msgs, bus.RouterAckWait/3)
		}
		// The hand-off gets its own time, however long the answers took.
		b.handoff.Settle(context.WithoutCancel(b.ctx), func(i int, ok bool) {
			if ok {
				_ = b.routed[i].msg.Ack()
			} else {
				_ = b.routed[i].msg.NakWithDelay(time.Second)
			}
		})
		stop()
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), batchTimeout)
	defer cancel()
	for _, l := range b.letters {
		select {
		case <-l.fut.Ok():
			_ = l.msg.Ack()
		case err := <-l.fut.Err():
			r.Log.Error("cannot store an invalid event in the dead-letter stream; it will be retried", "err", err)
			_ = l.msg.NakWithDelay(time.Second)
		case <-ctx.Done():
			_ = l.msg.Nak()
		}
	}
}

// batch is one batch of ingest messages on its way through the stages.
type batch struct {
	ctx    context.Context
	cancel context.CancelFunc
	items  []item
	claims *dedupe.Pending
	// routed are the items on their way to destinations, which handoff takes.
	routed  []*item
	handoff *deliver.Batch
	// letters are the invalid events' dead letters being stored.
	letters []letter
}

type item struct {
	msg   jetstream.Msg
	seq   uint64
	at    time.Time // when JetStream stored the ingest message
	event normalize.Event
	dests []string
}

type letter struct {
	msg jetstream.Msg
	fut jetstream.PubAckFuture
}

// claim normalizes the messages, dead-letters the invalid ones and sends the
// dedupe claims of the rest.
func (r *Router) claim(b *batch, msgs []jetstream.Msg) {
	var received metrics.ByType
	defer received.AddTo(r.Metrics.Received)
	b.items = make([]item, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			r.Log.Error("ingest message without JetStream metadata", "err", err)
			_ = m.Term()
			continue
		}
		ev, err := normalize.Normalize(m.Data(), md.Timestamp, r.Normalize)
		if err != nil {
			received.Add("")
			field := "body"
			if ne, ok := err.(*normalize.Error); ok && ne.Field != "" {
				field = ne.Field
			}
			fut, perr := dlq.PublishAsync(r.JS, dlq.Letter{
				Body: m.Data(), Stage: dlq.StageValidate, Attempts: int(md.NumDelivered), Reason: err.Error(),
			})
			if perr != nil {
				r.Log.Error("cannot publish an invalid event to the dead-letter stream", "err", perr)
				_ = m.NakWithDelay(time.Second)
				continue
			}
			r.Metrics.Invalid.WithLabelValues(field).Inc()
			r.tapInvalid(md.Timestamp, err)
			b.letters = append(b.letters, letter{msg: m, fut: fut})
			continue
		}
		received.Add(ev.Type)
		b.items = append(b.items, item{msg: m, seq: md.Sequence.Stream, at: md.Timestamp, event: ev})
	}
	if len(b.items) == 0 {
		return
	}
	claims := make([]dedupe.Claim, len(b.items))
	for i, it := range b.items {
		claims[i] = dedupe.Claim{MessageID: it.event.MessageID, Seq: it.seq}
	}
	p, err := r.Claimer.Start(claims)
	if err != nil {
		r.dedupeFailed(b, err)
		return
	}
	b.claims = p
}

func (r *Router) dedupeFailed(b *batch, err error) {
	r.Log.Error("dedupe failed; the batch will be retried", "err", err)
	for _, it := range b.items {
		_ = it.msg.NakWithDelay(time.Second)
	}
	b.items = nil
}

// route settles the claims, acks the repeats and offers the first sightings
// to those of their destinations that are on the direct path.
func (r *Router) route(b *batch) {
	if b.claims == nil {
		return
	}
	first, err := b.claims.Wait(b.ctx)
	if err != nil {
		r.dedupeFailed(b, err)
		return
	}
	crashAfterClaim()
	routes := r.routes.Load()
	var repeats, unrouted int
	var out []*item
	for i := range b.items {
		it := &b.items[i]
		if !first[i] {
			r.tapEvent(it.at, &it.event, tap.Duplicate, routes)
			repeats++
			_ = it.msg.Ack()
			continue
		}
		it.dests = routes.Route(nil, it.event.Type, it.event.Name, it.event.Integrations)
		if len(it.dests) == 0 {
			r.tapEvent(it.at, &it.event, tap.Unrouted, routes)
			unrouted++
			_ = it.msg.Ack()
			continue
		}
		r.tapEvent(it.at, &it.event, tap.Routed, routes)
		out = append(out, it)
	}
	r.Metrics.Deduplicated.Add(float64(repeats))
	r.Metrics.Unrouted.Add(float64(unrouted))
	if len(out) == 0 {
		return
	}
	b.routed = out
	events := make([]deliver.Routed, len(out))
	for i, it := range out {
		events[i] = deliver.Routed{Event: it.event.Event, Received: it.at, Seq: it.seq, Dests: it.dests}
	}
	b.handoff = r.HandOff.Start(events)
}
