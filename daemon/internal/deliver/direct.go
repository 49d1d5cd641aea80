package deliver

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/sdk"
)

// The direct path. While a destination keeps up, the router hands it each
// batch as soon as it is routed, and an event the plugin accepts never
// touches the routed stream: no store, no delivery, no ack, no removal. The
// routed stream and the destination's consumer stay the way for everything
// else: events the plugin asked to retry, every event of a destination that
// failed, was slow or has a backlog, and everything while the daemon starts.

const (
	// directWait is how long the router waits for a destination's answer on
	// the direct path.
	directWait = 2 * time.Second
	// directQueue is how many offers may wait for a destination's plugin; past
	// that, a batch's events for it take the routed stream.
	directQueue = 2
	// directPoll is how often a destination off the direct path looks whether
	// its consumer is empty, to take the direct path again.
	directPoll = 500 * time.Millisecond
)

// Outcome is what became of one event offered on the direct path.
type Outcome struct {
	// Done: delivered, or dead-lettered because the destination dropped it.
	Done bool
	// RetryAt, when the event is not done and RetryAt is not zero: the
	// destination had the event and asked for it again at that time. Zero: it
	// did not get the event.
	RetryAt time.Time
}

// Offer hands events to the plugin when the destination is on the direct
// path and has fewer than directQueue offers waiting, and returns where the
// answer will come: what became of each event (see Await). It returns nil,
// and the events must take the routed stream, when the destination is off
// the direct path or that busy. A failed call, a retry answer or no answer in
// time takes the destination off the direct path until it catches up.
func (d *Deliverer) Offer(events []sdk.Event, received []time.Time) <-chan []Outcome {
	if !d.direct.Load() {
		return nil
	}
	req := offerReq{events: events, received: received, answer: make(chan []Outcome, 1)}
	select {
	case d.offers <- req:
		return req.answer
	default:
		return nil
	}
}

type offerReq struct {
	events   []sdk.Event
	received []time.Time
	answer   chan []Outcome
}

// serveOffers makes the plugin calls of the direct path, one after another,
// until ctx is done. An answer that comes too late is dropped; until it comes
// the plugin is busy, so the destination's consumer waits for it rather than
// calling a stuck plugin again.
func (d *Deliverer) serveOffers(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			d.direct.Store(false)
			for {
				select {
				case req := <-d.offers:
					req.answer <- nil
				default:
					return
				}
			}
		case req := <-d.offers:
			d.offering.Store(true)
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deliverTimeout)
			req.answer <- d.offer(cctx, req.events, req.received)
			cancel()
			d.offering.Store(false)
		}
	}
}

// Await returns the answer to an Offer made at the given time, waiting until
// directWait after it at most. Without an answer by then it returns nil (no
// event is done) and the destination leaves the direct path: a slow
// destination holds up the router, and so every other destination, once, for
// at most directWait.
func (d *Deliverer) Await(answer <-chan []Outcome, offered time.Time) []Outcome {
	t := time.NewTimer(time.Until(offered.Add(directWait)))
	defer t.Stop()
	select {
	case out := <-answer:
		return out
	case <-t.C:
		d.leaveDirect("no answer within " + directWait.String())
		return nil
	}
}

func (d *Deliverer) offer(ctx context.Context, events []sdk.Event, received []time.Time) []Outcome {
	out := make([]Outcome, len(events))
	type letter struct {
		i   int
		fut jetstream.PubAckFuture
	}
	var letters []letter
	deadLetter := func(i int, reason string) {
		fut, err := dlq.PublishAsync(d.JS, dlq.Letter{
			Body: events[i].JSON, Destination: d.ID, Stage: dlq.StageDeliver, Attempts: 1, Reason: reason,
		})
		if err != nil {
			// Not done: the consumer will have it and try again.
			d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
			return
		}
		letters = append(letters, letter{i, fut})
	}
	var delivered, retried float64
	delay := d.Metrics.DelaySeconds.WithLabelValues(d.ID)
	for start := 0; start < len(events); start += d.BatchSize {
		end := min(start+d.BatchSize, len(events))
		t0 := time.Now()
		results, err := d.Host.Deliver(ctx, events[start:end])
		d.Metrics.BatchSeconds.WithLabelValues(d.ID).Observe(time.Since(t0).Seconds())
		if err != nil {
			d.Log.Error("batch not delivered", "destination", d.ID, "events", end-start, "err", err)
			at := time.Now().Add(backoff(d.Retry, 1))
			for i := start; i < end; i++ {
				out[i].RetryAt = at
			}
			retried += float64(end - start)
			d.leaveDirect("the plugin failed")
			break // the rest did not reach the plugin
		}
		now := time.Now()
		for j, res := range results {
			i := start + j
			switch res.Status {
			case sdk.StatusOK:
				out[i].Done = true
				delivered++
				delay.Observe(now.Sub(received[i]).Seconds())
			case sdk.StatusRetry:
				if d.Retry.MaxAttempts <= 1 {
					deadLetter(i, "gave up after 1 attempts: "+res.Reason)
					continue
				}
				out[i].RetryAt = now.Add(max(backoff(d.Retry, 1), res.RetryAfter))
				retried++
				d.leaveDirect("the destination asked to retry")
			default:
				deadLetter(i, "dropped by the destination: "+res.Reason)
			}
		}
	}
	var dead float64
	for _, l := range letters {
		select {
		case <-l.fut.Ok():
			out[l.i].Done = true
			dead++
		case err := <-l.fut.Err():
			d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
		case <-ctx.Done():
		}
	}
	d.Metrics.Delivered.WithLabelValues(d.ID).Add(delivered)
	d.Metrics.Retried.WithLabelValues(d.ID).Add(retried)
	d.Metrics.DeadLettered.WithLabelValues(d.ID).Add(dead)
	return out
}

func (d *Deliverer) leaveDirect(reason string) {
	if d.direct.Swap(false) {
		d.Log.Info("destination left the direct path; its events wait in its consumer", "destination", d.ID, "reason", reason)
	}
}

// watchDirect puts the destination on the direct path whenever its plugin is
// running, no direct call is pending, and either its consumer is empty or its
// last batch from the consumer was delivered whole; until ctx is done.
func (d *Deliverer) watchDirect(ctx context.Context) {
	t := time.NewTicker(directPoll)
	defer t.Stop()
	for {
		if !d.direct.Load() && !d.offering.Load() && len(d.offers) == 0 && d.Host.Ready() && (d.healthy.Load() || d.caughtUp(ctx)) && ctx.Err() == nil {
			d.direct.Store(true)
			d.Log.Debug("destination is on the direct path", "destination", d.ID)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Deliverer) caughtUp(ctx context.Context) bool {
	info, err := d.Consumer.Info(ctx)
	return err == nil && info.NumPending+uint64(info.NumAckPending) == 0
}
