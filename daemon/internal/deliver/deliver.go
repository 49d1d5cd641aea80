// Package deliver runs one destination: it reads the destination's own durable
// consumer on the routed stream, hands batches to the plugin, and acks, retries
// with backoff, or dead-letters each event by the plugin's answer.
package deliver

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
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

const (
	// deliverTimeout bounds one plugin call; plugins have their own, shorter,
	// request timeouts, so this only catches a plugin that hangs.
	deliverTimeout = 2 * time.Minute
	// progressEvery keeps a long batch's messages from passing bus.AckWait.
	progressEvery = bus.AckWait / 3
)

// Deliverer runs one destination.
type Deliverer struct {
	ID        string
	JS        jetstream.JetStream
	Consumer  jetstream.Consumer
	Host      *pluginhost.Host
	Retry     config.Retry
	BatchSize int
	Metrics   *metrics.Metrics
	Log       *slog.Logger
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
	return bus.ConsumeBatches(ctx, d.Consumer, d.BatchSize, func(msgs []jetstream.Msg) {
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliverTimeout)
		defer cancel()
		d.handle(bctx, msgs)
	})
}

func (d *Deliverer) handle(ctx context.Context, msgs []jetstream.Msg) {
	mine := msgs[:0:0]
	events := make([]sdk.Event, 0, len(msgs))
	received := make([]time.Time, 0, len(msgs))
	var letters []pendingLetter
	for _, m := range msgs {
		if !addressedTo(m.Headers().Get(bus.HeaderDestinations), d.ID) {
			_ = m.Ack()
			continue
		}
		ev, at, err := toEvent(m.Data())
		if err != nil {
			letters = d.deadLetter(letters, m, "the routed event is unreadable: "+err.Error())
			continue
		}
		mine = append(mine, m)
		events = append(events, ev)
		received = append(received, at)
	}
	if len(mine) > 0 {
		letters = d.deliver(ctx, mine, events, received, letters)
	}
	for _, l := range letters {
		select {
		case <-l.fut.Ok():
			_ = l.msg.Ack()
			d.Metrics.DeadLettered.WithLabelValues(d.ID).Inc()
		case err := <-l.fut.Err():
			d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
			_ = l.msg.NakWithDelay(d.Retry.Initial.Duration)
		case <-ctx.Done():
			_ = l.msg.Nak()
		}
	}
}

func (d *Deliverer) deliver(ctx context.Context, mine []jetstream.Msg, events []sdk.Event, received []time.Time, letters []pendingLetter) []pendingLetter {
	stop := keepInProgress(mine)
	start := time.Now()
	results, err := d.Host.Deliver(ctx, events)
	d.Metrics.BatchSeconds.WithLabelValues(d.ID).Observe(time.Since(start).Seconds())
	stop()
	if err != nil {
		d.Log.Error("batch not delivered", "destination", d.ID, "events", len(mine), "err", err)
		for _, m := range mine {
			letters = d.retry(letters, m, err.Error(), 0)
		}
		return letters
	}
	delivered, delay := d.Metrics.Delivered.WithLabelValues(d.ID), d.Metrics.DelaySeconds.WithLabelValues(d.ID)
	now := time.Now()
	for i, res := range results {
		m := mine[i]
		switch res.Status {
		case sdk.StatusOK:
			_ = m.Ack()
			delivered.Inc()
			delay.Observe(now.Sub(received[i]).Seconds())
		case sdk.StatusRetry:
			letters = d.retry(letters, m, res.Reason, res.RetryAfter)
		default:
			letters = d.deadLetter(letters, m, "dropped by the destination: "+res.Reason)
		}
	}
	return letters
}

type pendingLetter struct {
	msg jetstream.Msg
	fut jetstream.PubAckFuture
}

// retry naks m with backoff, or dead-letters it once attempts or age run out.
func (d *Deliverer) retry(letters []pendingLetter, m jetstream.Msg, reason string, after time.Duration) []pendingLetter {
	md, err := m.Metadata()
	if err != nil {
		_ = m.NakWithDelay(d.Retry.Initial.Duration)
		return letters
	}
	attempts := int(md.NumDelivered)
	if attempts >= d.Retry.MaxAttempts {
		return d.deadLetter(letters, m, fmt.Sprintf("gave up after %d attempts: %s", attempts, reason))
	}
	delay := max(backoff(d.Retry, attempts), after)
	if age := time.Since(md.Timestamp); age+delay > d.Retry.MaxAge.Duration {
		return d.deadLetter(letters, m, fmt.Sprintf("gave up after %s and %d attempts: %s", age.Round(time.Second), attempts, reason))
	}
	d.Metrics.Retried.WithLabelValues(d.ID).Inc()
	_ = m.NakWithDelay(delay)
	return letters
}

func (d *Deliverer) deadLetter(letters []pendingLetter, m jetstream.Msg, reason string) []pendingLetter {
	attempts := 0
	if md, err := m.Metadata(); err == nil {
		attempts = int(md.NumDelivered)
	}
	fut, err := dlq.PublishAsync(d.JS, dlq.Letter{
		Body: m.Data(), Destination: d.ID, Stage: dlq.StageDeliver, Attempts: attempts, Reason: reason,
	})
	if err != nil {
		d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
		_ = m.NakWithDelay(d.Retry.Initial.Duration)
		return letters
	}
	return append(letters, pendingLetter{msg: m, fut: fut})
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

// keepInProgress tells NATS the messages are still being worked on until the
// returned stop is called, so a slow batch is not redelivered meanwhile.
func keepInProgress(msgs []jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() { close(done) }
}

func addressedTo(header, id string) bool {
	for header != "" {
		var d string
		d, header, _ = strings.Cut(header, ",")
		if d == id {
			return true
		}
	}
	return false
}

// toEvent reads what a plugin gets besides the bytes, and when the event was received.
func toEvent(body []byte) (sdk.Event, time.Time, error) {
	r, err := normalize.Summarize(body)
	if err != nil {
		return sdk.Event{}, time.Time{}, err
	}
	return sdk.Event{
		JSON: body, MessageID: r.MessageID, Name: r.Name,
		UserID: r.UserID, AnonymousID: r.AnonymousID, Timestamp: r.Timestamp,
	}, r.ReceivedAt, nil
}
