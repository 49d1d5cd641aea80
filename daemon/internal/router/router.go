// Package router is the router stage: it reads producers' events from the
// ingest stream in batches, validates and normalizes them (dead-lettering the
// invalid ones), drops repeats through dedupe's claims, decides each event's
// destinations, and hands the events to deliver's hand-off, which offers them
// to destinations on the direct path and queues the rest on the routed
// stream. An ingest message is acked only once its event is delivered,
// dead-lettered or queued for every destination.
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

// BatchSize is how many events the router takes at a time; the dedupe
// claims and hand-offs of a batch are pipelined.
const BatchSize = 512

// Linger is how long a batch waits after its first event for more, up to
// BatchSize. At moderate load events otherwise come a few at a time, and each
// batch costs dedupe round trips, a plugin call per destination and
// goroutines: at half of the benchmark's rate, 2 ms made the batches 50
// events rather than 2 and cut the daemon's CPU per event by 8–12%, for at
// most 2 ms more latency.
const Linger = 2 * time.Millisecond

// MaxAckPending is the router consumer's: how many events may be in hand at
// once, over the batches being claimed, handed on and settled.
const MaxAckPending = 8 * BatchSize

// Router runs the router stage.
type Router struct {
	js        jetstream.JetStream
	consumer  jetstream.Consumer
	claimer   *dedupe.Claimer
	handOff   *deliver.HandOff
	normalize normalize.Options
	metrics   *metrics.Metrics
	log       *slog.Logger
	batchSize int
	linger    time.Duration
	tap       *tap.Publisher // nil: no `trackd tap` is told anything

	routes atomic.Pointer[route.Table]
}

// New returns a router that reads the ingest stream through consumer,
// claims messageIds with claimer, writes dead letters through js and hands
// routed events to handOff. It routes nothing until SetRoutes is called.
func New(js jetstream.JetStream, consumer jetstream.Consumer, claimer *dedupe.Claimer, handOff *deliver.HandOff, opts ...Option) *Router {
	r := &Router{
		js: js, consumer: consumer, claimer: claimer, handOff: handOff,
		metrics: metrics.New(), log: slog.New(slog.DiscardHandler), batchSize: BatchSize, linger: Linger,
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Option changes a default of New.
type Option func(*Router)

// WithMetrics counts into m instead of a registry of the router's own.
func WithMetrics(m *metrics.Metrics) Option { return func(r *Router) { r.metrics = m } }

// WithLogger logs to log instead of nowhere.
func WithLogger(log *slog.Logger) Option { return func(r *Router) { r.log = log } }

// WithNormalize sets the options events are normalized with.
func WithNormalize(o normalize.Options) Option { return func(r *Router) { r.normalize = o } }

// WithTap tells each decision to p while a `trackd tap` listens.
func WithTap(p *tap.Publisher) Option { return func(r *Router) { r.tap = p } }

// WithBatch takes events size at a time, each batch waiting linger after its
// first event for more, instead of BatchSize and Linger.
func WithBatch(size int, linger time.Duration) Option {
	return func(r *Router) { r.batchSize, r.linger = size, linger }
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
	err := bus.ConsumeBatches(ctx, r.consumer, r.batchSize, r.linger, nil, func(msgs []jetstream.Msg) {
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
			r.log.Error("cannot store an invalid event in the dead-letter stream; it will be retried", "err", err)
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
	defer received.AddTo(r.metrics.Received)
	b.items = make([]item, 0, len(msgs))
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			r.log.Error("ingest message without JetStream metadata", "err", err)
			_ = m.Term()
			continue
		}
		ev, err := normalize.Normalize(m.Data(), md.Timestamp, r.normalize)
		if err != nil {
			received.Add("")
			field := "body"
			if ne, ok := err.(*normalize.Error); ok && ne.Field != "" {
				field = ne.Field
			}
			fut, perr := dlq.PublishAsync(r.js, dlq.Letter{
				Body: m.Data(), Stage: dlq.StageValidate, Attempts: int(md.NumDelivered), Reason: err.Error(),
			})
			if perr != nil {
				r.log.Error("cannot publish an invalid event to the dead-letter stream", "err", perr)
				_ = m.NakWithDelay(time.Second)
				continue
			}
			r.metrics.Invalid.WithLabelValues(field).Inc()
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
	p, err := r.claimer.Start(claims)
	if err != nil {
		r.dedupeFailed(b, err)
		return
	}
	b.claims = p
}

func (r *Router) dedupeFailed(b *batch, err error) {
	r.log.Error("dedupe failed; the batch will be retried", "err", err)
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
	r.metrics.Deduplicated.Add(float64(repeats))
	r.metrics.Unrouted.Add(float64(unrouted))
	if len(out) == 0 {
		return
	}
	b.routed = out
	events := make([]deliver.Routed, len(out))
	for i, it := range out {
		events[i] = deliver.Routed{Event: it.event.Event, Received: it.at, Seq: it.seq, Dests: it.dests}
	}
	b.handoff = r.handOff.Start(events)
}
