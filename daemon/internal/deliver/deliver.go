// Package deliver takes routed events to each destination's plugin.
//
// The router gives each batch it routed to a HandOff (handoff.go). Every
// destination on the direct path is offered its share at once (direct.go): its
// Deliverer calls the plugin straight away, and an event delivered there never
// touches the routed stream. The rest (not offered, not tried, asked to
// retry, or dropped but its dead letter not stored) is queued for its
// destination on the routed stream (routed.go) before the router acks the
// ingest message.
//
// Each destination's Deliverer also reads its own durable consumer on the
// routed stream: the consumer path (deliver.go). Both paths make and settle a
// plugin call the same way (call.go): each event is delivered, retried with
// backoff, or, once the destination drops it or its attempts or age run out,
// dead-lettered (outcome.go); an event is dead-lettered only once JetStream
// has stored its letter on the dead-letter stream.
package deliver

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/sdk"
)

// Deliverer runs one destination.
type Deliverer struct {
	id        string
	js        jetstream.JetStream
	consumer  jetstream.Consumer
	host      *pluginhost.Host
	retry     config.Retry
	batchSize int
	// maxInFlight is how many plugin calls may be under way at once, from
	// the consumer and the direct path together (max_in_flight).
	maxInFlight int
	// directTimeout is how long the destination may take to answer an offer
	// on the direct path before it leaves it (direct_timeout).
	directTimeout time.Duration
	metrics       *metrics.Metrics
	log           *slog.Logger

	calls    chan struct{} // one element for each plugin call under way (maxInFlight)
	direct   atomic.Bool   // the router may Offer events to the plugin
	offers   chan *Offered
	offering atomic.Int32  // offers started and not yet answered
	callTime atomic.Int64  // a moving average of the direct path's plugin calls, in ns
	healthy  atomic.Bool   // the last batch from the consumer was delivered whole
	wake     chan struct{} // tells watchDirect that a batch from the consumer was delivered whole
}

// New returns the deliverer of destination id: it reads the destination's
// consumer on the routed stream, takes offers from the router, and calls the
// plugin through host. What opts leave out is as an empty [destinations.<id>]
// table and [retry] say (config.DestinationDefaults, config.Defaults).
func New(id string, js jetstream.JetStream, consumer jetstream.Consumer, host *pluginhost.Host, opts ...Option) *Deliverer {
	def := config.DestinationDefaults()
	d := &Deliverer{
		id: id, js: js, consumer: consumer, host: host, retry: config.Defaults().Retry,
		batchSize: def.BatchSize, maxInFlight: def.MaxInFlight, directTimeout: def.DirectTimeout,
		metrics: metrics.New(), log: slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(d)
	}
	d.calls = make(chan struct{}, d.maxInFlight)
	d.offers = make(chan *Offered, directQueue)
	d.wake = make(chan struct{}, 1)
	return d
}

// Option changes a default of New.
type Option func(*Deliverer)

// WithRetry retries and gives up as r says (the destination's retry table
// over [retry]).
func WithRetry(r config.Retry) Option { return func(d *Deliverer) { d.retry = r } }

// WithBatchSize makes plugin calls of at most n events (batch_size).
func WithBatchSize(n int) Option { return func(d *Deliverer) { d.batchSize = n } }

// WithMaxInFlight lets n plugin calls be under way at once (max_in_flight).
func WithMaxInFlight(n int) Option { return func(d *Deliverer) { d.maxInFlight = n } }

// WithDirectTimeout takes the destination off the direct path when an offer
// waits longer than t for its answer (direct_timeout).
func WithDirectTimeout(t time.Duration) Option { return func(d *Deliverer) { d.directTimeout = t } }

// WithMetrics counts into m instead of a registry of the deliverer's own.
func WithMetrics(m *metrics.Metrics) Option { return func(d *Deliverer) { d.metrics = m } }

// WithLogger logs to log instead of nowhere.
func WithLogger(log *slog.Logger) Option { return func(d *Deliverer) { d.log = log } }

// Run delivers until ctx is done. A plugin that cannot start holds up only
// this destination: its events wait in the stream while starts are retried.
func (d *Deliverer) Run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := d.host.Start(ctx)
		if err == nil {
			break
		}
		wait := backoff(d.retry, attempt)
		d.log.Error("destination is stopped until its plugin starts", "destination", d.id, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	go d.serveOffers(ctx)
	go d.watchDirect(ctx)
	// A batch from the consumer is gathered only when a plugin call may
	// start: while every call is busy, the next batch gathers in the
	// consumer, so batches grow with load.
	var handling sync.WaitGroup
	defer handling.Wait()
	return bus.ConsumeBatches(ctx, d.consumer, d.batchSize, 0, d.takeCall, func(msgs []jetstream.Msg) {
		b := d.prepare(msgs)
		handling.Go(func() {
			defer func() { <-d.calls }()
			// A batch in hand is finished even when the daemon is stopping,
			// unless its plugin call outlasts stopGrace.
			bctx, cancel := callContext(ctx)
			defer cancel()
			d.handle(bctx, b)
		})
	})
}

// The consumer path: the destination's consumer is read in batches of up to
// BatchSize, each as soon as a plugin call may start. A message for other
// destinations only (on the shared subject of earlier versions) is acked, the
// first delivery of one the direct path tried is nak'ed until its
// Trackd-Retry-At, and an unreadable one is dead-lettered.

// batch is what prepare read of a batch of routed messages, on its way to
// the plugin.
type batch struct {
	d        *Deliverer
	mine     []jetstream.Msg // the messages addressed to this destination
	events   []sdk.Event
	received []time.Time
	letters  []pendingLetter // its dead letters on their way, for handle to await
}

// prepare acks the messages meant for other destinations and decodes the rest.
func (d *Deliverer) prepare(msgs []jetstream.Msg) *batch {
	b := &batch{d: d, events: make([]sdk.Event, 0, len(msgs)), received: make([]time.Time, 0, len(msgs))}
	for _, m := range msgs {
		if !addressedTo(m, d.id) {
			_ = m.Ack()
			continue
		}
		if wait, ok := standsForDirectTry(m); ok {
			_ = m.NakWithDelay(wait)
			continue
		}
		ev, at, err := normalize.Summarize(m.Data())
		if err != nil {
			b.sendLetter(m, "", "the routed event is unreadable: "+err.Error())
			continue
		}
		b.mine = append(b.mine, m)
		b.events = append(b.events, ev)
		b.received = append(b.received, at)
	}
	return b
}

// handle delivers a prepared batch, settles each message by its result, and
// awaits its dead letters.
func (d *Deliverer) handle(ctx context.Context, b *batch) {
	if len(b.mine) > 0 {
		d.deliverBatch(ctx, b)
	}
	d.awaitLetters(ctx, b.letters)
}

// deliverBatch makes the plugin call of a batch, keeping its messages in
// progress meanwhile, and settles each by its result. A batch delivered whole
// tells watchDirect that the destination works.
func (d *Deliverer) deliverBatch(ctx context.Context, b *batch) {
	stop := bus.KeepInProgress(b.mine, progressEvery)
	results, _, err := d.call(ctx, b.events)
	stop()
	if errors.Is(err, errCut) {
		bus.HandBack(b.mine...)
		return
	}
	whole := d.settle(b, b.events, b.received, results, err)
	d.healthy.Store(whole)
	if whole {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// A batch settles its messages from the consumer: an event's attempt is
// counted by JetStream, a retry is a nak with delay.

func (b *batch) attempt(i int, now time.Time) (int, time.Duration) {
	md, err := b.mine[i].Metadata()
	if err != nil {
		return 1, 0
	}
	return int(md.NumDelivered), now.Sub(md.Timestamp)
}

func (b *batch) delivered(i int) { _ = b.mine[i].Ack() }

func (b *batch) retry(i int, _ time.Time, after time.Duration) { _ = b.mine[i].NakWithDelay(after) }

func (b *batch) deadLetter(i int, reason string) { b.sendLetter(b.mine[i], b.events[i].Type, reason) }

// sendLetter sends message m to the dead-letter stream, or naks it when the
// letter cannot be sent.
func (b *batch) sendLetter(m jetstream.Msg, callType, reason string) {
	attempts := 0
	if md, err := m.Metadata(); err == nil {
		attempts = int(md.NumDelivered)
	}
	fut := b.d.publishLetter(m.Data(), attempts, reason)
	if fut == nil {
		_ = m.NakWithDelay(b.d.retry.Initial)
		return
	}
	b.letters = append(b.letters, pendingLetter{fut: fut, callType: callType, msg: m})
}

// backoff is the wait after attempt: initial doubling up to max, with ±20%
// jitter so that a burst of failures does not come back as one burst, and
// never more than max.
func backoff(r config.Retry, attempt int) time.Duration {
	d := r.Initial
	for i := 1; i < attempt && d < r.Max; i++ {
		d *= 2
	}
	jitter := 0.8 + 0.4*rand.Float64()
	return min(time.Duration(float64(d)*jitter), r.Max)
}
