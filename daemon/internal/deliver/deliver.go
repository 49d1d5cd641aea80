// Package deliver runs one destination: it reads the destination's own durable
// consumer on the routed stream, hands batches to the plugin, and acks, retries
// with backoff, or dead-letters each event by the plugin's answer.
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
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/sdk"
)

// Deliverer runs one destination.
type Deliverer struct {
	ID        string
	JS        jetstream.JetStream
	Consumer  jetstream.Consumer
	Host      *pluginhost.Host
	Retry     config.Retry
	BatchSize int
	// MaxInFlight is how many plugin calls may be under way at once, from
	// the consumer and the direct path together (max_in_flight).
	MaxInFlight int
	// DirectTimeout is how long the destination may take to answer an offer
	// on the direct path before it leaves it (direct_timeout).
	DirectTimeout time.Duration
	Metrics       *metrics.Metrics
	Log           *slog.Logger

	calls    chan struct{} // one element for each plugin call under way (MaxInFlight)
	direct   atomic.Bool   // the router may Offer events to the plugin
	offers   chan *Offered
	offering atomic.Int32  // offers started and not yet answered
	callTime atomic.Int64  // a moving average of the direct path's plugin calls, in ns
	healthy  atomic.Bool   // the last batch from the consumer was delivered whole
	wake     chan struct{} // tells watchDirect that a batch from the consumer was delivered whole
}

// Run delivers until ctx is done. A plugin that cannot start holds up only
// this destination: its events wait in the stream while starts are retried.
func (d *Deliverer) Run(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := d.Host.Start(ctx)
		if err == nil {
			break
		}
		wait := backoff(d.Retry, attempt)
		d.Log.Error("destination is stopped until its plugin starts", "destination", d.ID, "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
	d.calls = make(chan struct{}, d.MaxInFlight)
	d.offers = make(chan *Offered, directQueue) // before the direct path opens
	d.wake = make(chan struct{}, 1)
	go d.serveOffers(ctx)
	go d.watchDirect(ctx)
	// A batch from the consumer is gathered only when a plugin call may
	// start: while every call is busy, the next batch gathers in the
	// consumer, so batches grow with load.
	var handling sync.WaitGroup
	defer handling.Wait()
	return bus.ConsumeBatches(ctx, d.Consumer, d.BatchSize, 0, d.takeCall, func(msgs []jetstream.Msg) {
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

// callContext is the context of a plugin call begun while ctx runs: the call
// gets deliverTimeout from when it begins, even when ctx ends meanwhile, but
// no more than stopGrace after that.
func callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliverTimeout)
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(stopGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-cctx.Done():
		}
	})
	return cctx, func() {
		stop()
		cancel()
	}
}

// cutByStop reports, and logs, whether a plugin call failed because
// callContext cut it short at a stop: not the destination's failure, so its
// events are handed back with no attempt counted.
func (d *Deliverer) cutByStop(ctx context.Context, err error, events int) bool {
	if err == nil || !errors.Is(ctx.Err(), context.Canceled) {
		return false
	}
	d.Log.Warn("stopping: handing back the events of a plugin call still under way", "destination", d.ID, "events", events)
	return true
}

// takeCall waits for one of the destination's MaxInFlight plugin call slots; it
// returns false, with none taken, once ctx is done. The call gives it back
// with <-d.calls.
func (d *Deliverer) takeCall(ctx context.Context) bool {
	select {
	case d.calls <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// batch is what prepare read of a batch of routed messages.
type batch struct {
	mine     []jetstream.Msg // the messages addressed to this destination
	events   []sdk.Event
	received []time.Time
	letters  []pendingLetter // unreadable events on their way to the dead-letter stream
}

// prepare acks the messages meant for other destinations and decodes the rest.
func (d *Deliverer) prepare(msgs []jetstream.Msg) *batch {
	b := &batch{events: make([]sdk.Event, 0, len(msgs)), received: make([]time.Time, 0, len(msgs))}
	for _, m := range msgs {
		if !addressedTo(m, d.ID) {
			_ = m.Ack()
			continue
		}
		if wait := firstTryWait(m); wait > 0 {
			// The direct path tried it already; that was attempt 1, and this
			// delivery stands for it.
			_ = m.NakWithDelay(wait)
			continue
		}
		ev, at, err := normalize.Summarize(m.Data())
		if err != nil {
			b.letters = d.deadLetter(b.letters, m, "", "the routed event is unreadable: "+err.Error())
			continue
		}
		b.mine = append(b.mine, m)
		b.events = append(b.events, ev)
		b.received = append(b.received, at)
	}
	return b
}

// handle delivers a prepared batch and settles each message by its result.
func (d *Deliverer) handle(ctx context.Context, b *batch) {
	letters := b.letters
	if len(b.mine) > 0 {
		letters = d.deliver(ctx, b, letters)
	}
	var dead metrics.ByType
	for _, l := range letters {
		select {
		case <-l.fut.Ok():
			_ = l.msg.Ack()
			dead.Add(l.callType)
		case err := <-l.fut.Err():
			d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
			_ = l.msg.NakWithDelay(d.Retry.Initial.Duration)
		case <-ctx.Done():
			_ = l.msg.Nak()
		}
	}
	dead.AddTo(d.Metrics.DeadLettered, d.ID)
}

func (d *Deliverer) deliver(ctx context.Context, b *batch, letters []pendingLetter) []pendingLetter {
	stop := bus.KeepInProgress(b.mine, progressEvery)
	start := time.Now()
	results, err := d.Host.Deliver(ctx, b.events)
	d.Metrics.BatchSeconds.WithLabelValues(d.ID).Observe(time.Since(start).Seconds())
	stop()
	if d.cutByStop(ctx, err, len(b.mine)) {
		bus.HandBack(b.mine...)
		return letters
	}
	if err != nil {
		d.Log.Error("batch not delivered", "destination", d.ID, "events", len(b.mine), "err", err)
		results = make([]sdk.Result, len(b.mine))
	}
	delay := d.Metrics.DelaySeconds.WithLabelValues(d.ID)
	now := time.Now()
	var delivered metrics.ByType
	var retried float64
	healthy := err == nil
	for i, res := range results {
		m := b.mine[i]
		v := d.judge(res, err, func() (int, time.Duration) {
			md, err := m.Metadata()
			if err != nil {
				return 1, 0
			}
			return int(md.NumDelivered), now.Sub(md.Timestamp)
		})
		switch v.fate {
		case fateDelivered:
			_ = m.Ack()
			delivered.Add(b.events[i].Type)
			delay.Observe(now.Sub(b.received[i]).Seconds())
		case fateRetry:
			healthy = false
			retried++
			_ = m.NakWithDelay(v.after)
		default:
			healthy = healthy && res.Status != sdk.StatusRetry
			letters = d.deadLetter(letters, m, b.events[i].Type, v.reason)
		}
	}
	delivered.AddTo(d.Metrics.Delivered, d.ID)
	d.Metrics.Retried.WithLabelValues(d.ID).Add(retried)
	d.healthy.Store(healthy)
	if healthy {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return letters
}

type pendingLetter struct {
	msg      jetstream.Msg
	fut      jetstream.PubAckFuture
	callType string // "" when the event could not be read
}

func (d *Deliverer) deadLetter(letters []pendingLetter, m jetstream.Msg, callType, reason string) []pendingLetter {
	attempts := 0
	if md, err := m.Metadata(); err == nil {
		attempts = int(md.NumDelivered)
	}
	fut := d.publishLetter(m.Data(), attempts, reason)
	if fut == nil {
		_ = m.NakWithDelay(d.Retry.Initial.Duration)
		return letters
	}
	return append(letters, pendingLetter{msg: m, fut: fut, callType: callType})
}

// publishLetter sends an event the destination finally failed to the
// dead-letter stream; nil when it could not be sent, and the event must be
// retried.
func (d *Deliverer) publishLetter(body []byte, attempts int, reason string) jetstream.PubAckFuture {
	fut, err := dlq.PublishAsync(d.JS, dlq.Letter{
		Body: body, Destination: d.ID, Stage: dlq.StageDeliver, Attempts: attempts, Reason: reason,
	})
	if err != nil {
		d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
		return nil
	}
	return fut
}

// backoff is the wait after attempt: initial doubling up to max, with ±20%
// jitter so that a burst of failures does not come back as one burst, and
// never more than max.
func backoff(r config.Retry, attempt int) time.Duration {
	d := r.Initial.Duration
	for i := 1; i < attempt && d < r.Max.Duration; i++ {
		d *= 2
	}
	jitter := 0.8 + 0.4*rand.Float64()
	return min(time.Duration(float64(d)*jitter), r.Max.Duration)
}
