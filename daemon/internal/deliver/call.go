package deliver

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/sdk"
)

// One plugin call, made the same way from the consumer (deliver.go) and on the
// direct path (direct.go): take a call slot, call the plugin and time the
// call, judge each event by its result (outcome.go) and settle it on its path,
// await its dead letters, and count what became of the events.

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

// errCut is call's error when callContext cut the call short at a stop: not
// the destination's failure, so its events count as not tried and are handed
// back with no attempt counted.
var errCut = errors.New("the plugin call was cut short at a stop")

// call makes one plugin call of events, in ctx from callContext, and times it.
// A failed call is logged and answers a zero result for each event, which
// settle retries with err as the reason.
func (d *Deliverer) call(ctx context.Context, events []sdk.Event) (results []sdk.Result, took time.Duration, err error) {
	start := time.Now()
	results, err = d.host.Deliver(ctx, events)
	took = time.Since(start)
	d.metrics.BatchSeconds.WithLabelValues(d.id).Observe(took.Seconds())
	switch {
	case err == nil:
		return results, took, nil
	case errors.Is(ctx.Err(), context.Canceled):
		d.log.Warn("stopping: handing back the events of a plugin call still under way", "destination", d.id, "events", len(events))
		return nil, took, errCut
	default:
		d.log.Error("batch not delivered", "destination", d.id, "events", len(events), "err", err)
		return make([]sdk.Result, len(events)), took, err
	}
}

// A path is where the events of a plugin call came from, and so what settling
// each one means: a batch from the consumer acks and naks its messages
// (*batch); the direct path records an Outcome for the router (*directCall).
type path interface {
	// attempt is which attempt at event i the call was, counting it, and how
	// long ago the event was stored.
	attempt(i int, now time.Time) (n int, age time.Duration)
	delivered(i int)
	retry(i int, now time.Time, after time.Duration)
	// deadLetter sends event i to the dead-letter stream, leaving a
	// pendingLetter for awaitLetters.
	deadLetter(i int, reason string)
}

// settle judges each event of a call by its result (or the call's failure,
// err), settles it on p, and counts the delivered and the retried. It reports
// whether the call went through whole: it did not fail, and the destination
// asked to retry none of its events.
func (d *Deliverer) settle(p path, events []sdk.Event, received []time.Time, results []sdk.Result, err error) (whole bool) {
	delay := d.metrics.DelaySeconds.WithLabelValues(d.id)
	now := time.Now()
	var delivered metrics.ByType
	var retried float64
	whole = err == nil
	for i, res := range results {
		v := d.judge(res, err, func() (int, time.Duration) { return p.attempt(i, now) })
		switch v.fate {
		case fateDelivered:
			p.delivered(i)
			delivered.Add(events[i].Type)
			delay.Observe(now.Sub(received[i]).Seconds())
		case fateRetry:
			p.retry(i, now, v.after)
			retried++
		default:
			p.deadLetter(i, v.reason)
		}
		whole = whole && res.Status != sdk.StatusRetry
	}
	delivered.AddTo(d.metrics.Delivered, d.id)
	d.metrics.Retried.WithLabelValues(d.id).Add(retried)
	return whole
}

// pendingLetter is a dead letter on its way to the dead-letter stream, and the
// event it settles once JetStream answers: either a message from the consumer
// (msg), or an event offered on the direct path (out).
type pendingLetter struct {
	fut      jetstream.PubAckFuture
	callType string        // "" when the event could not be read
	msg      jetstream.Msg // from the consumer: acked once written, else nakked
	out      *Outcome      // on the direct path: done once written, else left for the routed stream
}

// publishLetter sends an event the destination finally failed to the
// dead-letter stream; nil when it could not be sent, and the event must be
// retried.
func (d *Deliverer) publishLetter(body []byte, attempts int, reason string) jetstream.PubAckFuture {
	fut, err := dlq.PublishAsync(d.js, dlq.Letter{
		Body: body, Destination: d.id, Stage: dlq.StageDeliver, Attempts: attempts, Reason: reason,
	})
	if err != nil {
		d.log.Error("cannot write a dead letter; the event will be retried", "destination", d.id, "err", err)
		return nil
	}
	return fut
}

// awaitLetters waits for JetStream to store each dead letter and settles its
// event: done once its letter is written, retried if not. It counts the
// dead-lettered.
func (d *Deliverer) awaitLetters(ctx context.Context, letters []pendingLetter) {
	var dead metrics.ByType
	for _, l := range letters {
		select {
		case <-l.fut.Ok():
			if l.msg != nil {
				_ = l.msg.Ack()
			} else {
				l.out.Done = true
			}
			dead.Add(l.callType)
		case err := <-l.fut.Err():
			d.log.Error("cannot write a dead letter; the event will be retried", "destination", d.id, "err", err)
			if l.msg != nil {
				_ = l.msg.NakWithDelay(d.retry.Initial)
			}
		case <-ctx.Done():
			if l.msg != nil {
				_ = l.msg.Nak()
			}
		}
	}
	dead.AddTo(d.metrics.DeadLettered, d.id)
}
