// Package router is the router stage: it reads producers' events from the
// ingest stream, validates and normalizes them, drops repeats, decides their
// destinations and hands each one on to the routed stream before acking it.
package router

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/route"
	"trackd.dev/trackd/daemon/internal/tap"
	"trackd.dev/trackd/sdk"
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
	// Tap, when not nil, hears about each decision while a `trackd tap` listens.
	Tap *tap.Publisher
	// Deliverer, when not nil, returns a destination's deliverer, to which
	// routed events are offered directly before they take the routed stream.
	Deliverer func(id string) *deliver.Deliverer

	routes atomic.Pointer[route.Table]
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
	err := bus.ConsumeBatches(ctx, r.Consumer, r.BatchSize, nil, func(msgs []jetstream.Msg) {
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

// settle takes the direct path's answers, hands on what was not taken, and
// acks once JetStream has confirmed the hand-offs.
func (r *Router) settle(b *batch) {
	defer b.cancel()
	stop := func() {}
	if len(b.offers) > 0 {
		// A plugin may take minutes to answer: keep the messages from being
		// handed to another worker meanwhile.
		msgs := make([]jetstream.Msg, len(b.routed))
		for i, it := range b.routed {
			msgs[i] = it.msg
		}
		stop = bus.KeepInProgress(msgs, bus.RouterAckWait/3)
	}
	r.handOn(b)
	stop()
	// The hand-offs get their own time, however long the answers took.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), batchTimeout)
	defer cancel()
	r.finish(ctx, b)
}

// batch is one batch of ingest messages on its way through the stages.
type batch struct {
	ctx    context.Context
	cancel context.CancelFunc
	items  []item
	claims *dedupe.Pending
	// routed are the items on their way to destinations, and offers what the
	// direct path was given of them.
	routed []*item
	offers []offer
	// pending are the items whose ack waits on a publish: dead letters from
	// claim, hand-offs from handOn.
	pending []item
}

type item struct {
	msg      jetstream.Msg
	seq      uint64
	at       time.Time // when JetStream stored the ingest message
	event    normalize.Event
	dests    []string
	outcomes []deliver.Outcome // of the direct path, by dests; nil when none was offered
	futs     []jetstream.PubAckFuture
}

// claim normalizes the messages, dead-letters the invalid ones and sends the
// dedupe claims of the rest.
func (r *Router) claim(b *batch, msgs []jetstream.Msg) {
	r.Metrics.Received.Add(float64(len(msgs)))
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
			b.pending = append(b.pending, item{msg: m, futs: []jetstream.PubAckFuture{fut}})
			continue
		}
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
		it.dests = routes.Route(nil, it.event.Name, it.event.Integrations)
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
	b.routed = out
	b.offers = r.offer(out)
}

// offer is one destination's share of a batch, offered on the direct path.
type offer struct {
	deliverer *deliver.Deliverer
	offered   *deliver.Offered
	items     []int // each event's item in batch.routed,
	dpos      []int // and the destination's position in the item's dests
}

// offer gives each destination on the direct path its share of the items;
// the answers come later.
func (r *Router) offer(items []*item) []offer {
	if r.Deliverer == nil || len(items) == 0 {
		return nil
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
	for _, it := range items {
		total += len(it.dests)
	}
	outcomes := make([]deliver.Outcome, total)
	for i, it := range items {
		nd := len(it.dests)
		it.outcomes, outcomes = outcomes[:nd:nd], outcomes[nd:]
		for k, d := range it.dests {
			s := shares[d]
			if s == nil {
				n := len(items)
				s = &share{
					offer:  offer{items: make([]int, 0, n), dpos: make([]int, 0, n)},
					events: make([]sdk.Event, 0, n), received: make([]time.Time, 0, n),
				}
				shares[d] = s
				order = append(order, d)
			}
			s.items, s.dpos = append(s.items, i), append(s.dpos, k)
			s.events = append(s.events, sdk.Event{
				JSON: it.event.JSON, MessageID: it.event.MessageID, Name: it.event.Name,
				UserID: it.event.UserID, AnonymousID: it.event.AnonymousID, Timestamp: it.event.Timestamp,
			})
			s.received = append(s.received, it.at)
		}
	}
	var offers []offer
	for _, d := range order {
		s := shares[d]
		if s.deliverer = r.Deliverer(d); s.deliverer == nil {
			continue
		}
		if s.offered = s.deliverer.Offer(s.events, s.received); s.offered == nil {
			continue
		}
		offers = append(offers, s.offer)
	}
	return offers
}

// handOn takes the direct path's answers and publishes each item to the
// routed stream for every destination that did not take it.
func (r *Router) handOn(b *batch) {
	for _, o := range b.offers {
		for n, out := range o.deliverer.Await(o.offered) {
			b.routed[o.items[n]].outcomes[o.dpos[n]] = out
		}
	}
	for _, it := range b.routed {
		if !r.publish(it) {
			_ = it.msg.NakWithDelay(time.Second)
			continue
		}
		b.pending = append(b.pending, *it)
	}
}

// publish sends the item to the routed stream for each destination that did
// not take it directly; false if a publish could not be sent.
func (r *Router) publish(it *item) bool {
	for k, d := range it.dests {
		var o deliver.Outcome
		if it.outcomes != nil {
			o = it.outcomes[k]
		}
		if o.Done {
			continue
		}
		fut, err := r.JS.PublishMsgAsync(routedMsg(it, d, o.RetryAt))
		if err != nil {
			r.Log.Error("cannot publish to the routed stream", "err", err)
			return false
		}
		it.futs = append(it.futs, fut)
	}
	return true
}

// finish acks each message once JetStream has confirmed its hand-offs.
func (r *Router) finish(ctx context.Context, b *batch) {
	routed, queued := map[string]int{}, map[string]int{}
	for _, it := range b.pending {
		if !r.settled(ctx, &it) {
			continue
		}
		_ = it.msg.Ack()
		for k, d := range it.dests {
			routed[d]++
			if it.outcomes == nil || !it.outcomes[k].Done {
				queued[d]++
			}
		}
	}
	for d, n := range routed {
		r.Metrics.Routed.WithLabelValues(d).Add(float64(n))
	}
	for d, n := range queued {
		r.Metrics.Queued.WithLabelValues(d).Add(float64(n))
	}
}

// settled waits for an item's publishes; when one failed it naks the ingest
// message and returns false.
func (r *Router) settled(ctx context.Context, it *item) bool {
	for _, fut := range it.futs {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			r.Log.Error("hand-off failed; the event will be retried", "messageId", it.event.MessageID, "err", err)
			_ = it.msg.NakWithDelay(time.Second)
			return false
		case <-ctx.Done():
			_ = it.msg.Nak()
			return false
		}
	}
	return true
}

// routedMsg is the item on its way to one destination; retryAt, when not
// zero, says the direct path tried it and when to try again.
func routedMsg(it *item, dest string, retryAt time.Time) *nats.Msg {
	h := nats.Header{
		bus.HeaderDestinations: {dest},
		// Keyed by the ingest message, not the messageId: a redelivered router step
		// is absorbed even when it assigned a fresh messageId, while the same
		// messageId accepted again after the dedupe window is not. The store time
		// tells apart the messages of a stream that was deleted and made again.
		jetstream.MsgIDHeader: {strconv.FormatUint(it.seq, 10) + "@" + strconv.FormatInt(it.at.UnixNano(), 10) + "/" + dest},
	}
	if !retryAt.IsZero() {
		h[bus.HeaderRetryAt] = []string{retryAt.UTC().Format(time.RFC3339Nano)}
	}
	return &nats.Msg{Subject: bus.RoutedSubjectFor(dest), Data: it.event.JSON, Header: h}
}
