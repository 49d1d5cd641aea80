package deliver

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/sdk"
)

// The direct path. While a destination keeps up, the router hands it each
// batch as soon as it is routed, and an event the plugin accepts never
// touches the routed stream: no store, no delivery, no ack, no removal. The
// routed stream and the destination's consumer stay the way for everything
// else: events the plugin asked to retry, every event of a destination that
// failed, was slow or has a backlog, and everything while the daemon starts.

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
// path and has fewer than directQueue offers waiting, and returns the offer,
// whose answer Await gives: what became of each event. It returns nil, and
// the events must take the routed stream, when the destination is off the
// direct path or that busy. A failed call, a retry answer or an answer later
// than DirectTimeout takes the destination off the direct path until it
// catches up.
func (d *Deliverer) Offer(events []sdk.Event, received []time.Time) *Offered {
	if !d.direct.Load() {
		return nil
	}
	o := &Offered{events: events, received: received, at: time.Now(), answer: make(chan []Outcome, 1)}
	select {
	case d.offers <- o:
		return o
	default:
	}
	// A destination that answers quickly is worth a short wait for room, as
	// its events then skip the routed stream; one that answers slowly is never
	// waited for, so it cannot slow the router.
	if time.Duration(d.callTime.Load()) > directPatience {
		return nil
	}
	t := time.NewTimer(directPatience)
	defer t.Stop()
	select {
	case d.offers <- o:
		return o
	case <-t.C:
		return nil
	}
}

// Offered is an offer made on the direct path.
type Offered struct {
	events   []sdk.Event
	received []time.Time
	at       time.Time
	answer   chan []Outcome
	state    atomic.Int32 // offerWaiting, offerStarted or offerWithdrawn
}

const (
	offerWaiting = iota
	offerStarted
	offerWithdrawn
)

// Await returns the answer to an offer. Past DirectTimeout the destination
// leaves the direct path, and an offer still waiting for the plugin is
// withdrawn: Await returns nil, none of its events was tried. One the plugin
// already has is waited for, as long as a plugin call may take, so that no
// event is both delivered and handed to the consumer.
func (d *Deliverer) Await(o *Offered) []Outcome {
	t := time.NewTimer(time.Until(o.at.Add(d.DirectTimeout)))
	defer t.Stop()
	select {
	case out := <-o.answer:
		return out
	case <-t.C:
	}
	d.leaveDirect("no answer within " + d.DirectTimeout.String() + " (direct_timeout)")
	if o.state.CompareAndSwap(offerWaiting, offerWithdrawn) {
		return nil
	}
	return <-o.answer
}

// serveOffers starts the direct path's offers in order, each as soon as a
// plugin call may begin (of the destination's MaxInFlight), so that an offer
// does not wait for the one before it to be answered; until ctx is done, when
// offers not started are answered nil (not tried). An offer not yet started
// can still be withdrawn.
//
// The offers that queued while every call was busy join the next call, up to
// BatchSize events: under load a destination gets fewer, larger calls rather
// than a queue of small ones, each costing a round trip to the plugin.
func (d *Deliverer) serveOffers(ctx context.Context) {
	var next *Offered // taken from the queue, but too large to join the last call
	for {
		o := next
		next = nil
		if o == nil {
			select {
			case o = <-d.offers:
			case <-ctx.Done():
				d.closeOffers()
				return
			}
		}
		if !d.takeCall(ctx) {
			if o.state.CompareAndSwap(offerWaiting, offerWithdrawn) {
				o.answer <- nil
			}
			d.closeOffers()
			return
		}
		if !o.state.CompareAndSwap(offerWaiting, offerStarted) {
			<-d.calls
			continue // withdrawn while it waited for a call
		}
		group, n := []*Offered{o}, len(o.events)
	join:
		for n < d.BatchSize {
			select {
			case w := <-d.offers:
				if n+len(w.events) > d.BatchSize {
					next = w
					break join
				}
				if w.state.CompareAndSwap(offerWaiting, offerStarted) {
					group, n = append(group, w), n+len(w.events)
				}
			default:
				break join
			}
		}
		events, received := o.events, o.received
		if len(group) > 1 {
			events, received = make([]sdk.Event, 0, n), make([]time.Time, 0, n)
			for _, g := range group {
				events, received = append(events, g.events...), append(received, g.received...)
			}
		}

		d.offering.Add(1)
		out := make([]Outcome, n)
		var wg sync.WaitGroup
		held := true // the slot taken above, for the first call
		for start := 0; start < n; start += d.BatchSize {
			if !held {
				d.calls <- struct{}{}
			}
			held = false
			end := min(start+d.BatchSize, n)
			wg.Go(func() {
				defer func() { <-d.calls }()
				// Each call gets the whole timeout from when it begins.
				cctx, cancel := callContext(ctx)
				defer cancel()
				d.offerCall(cctx, events[start:end], received[start:end], out[start:end])
			})
		}
		if held {
			<-d.calls // an offer without events
		}
		go func() {
			wg.Wait()
			d.offering.Add(-1)
			for _, g := range group {
				k := len(g.events)
				g.answer <- out[:k:k]
				out = out[k:]
			}
		}()
	}
}

// closeOffers takes the destination off the direct path and answers the
// offers left in the queue nil: none of their events was tried.
func (d *Deliverer) closeOffers() {
	d.direct.Store(false)
	for {
		select {
		case o := <-d.offers:
			o.answer <- nil
		default:
			return
		}
	}
}

// offerCall makes one plugin call of an offer, of at most BatchSize events,
// and records in out what became of each.
func (d *Deliverer) offerCall(ctx context.Context, events []sdk.Event, received []time.Time, out []Outcome) {
	t0 := time.Now()
	results, err := d.Host.Deliver(ctx, events)
	took := time.Since(t0)
	d.Metrics.BatchSeconds.WithLabelValues(d.ID).Observe(took.Seconds())
	// A moving average of the call time, weighing the last call by 1/8.
	d.callTime.Store(d.callTime.Load() + (int64(took)-d.callTime.Load())/8)
	if d.cutByStop(ctx, err, len(events)) {
		return // out stays zero: not tried, so the events take the routed stream
	}
	if err != nil {
		d.Log.Error("batch not delivered", "destination", d.ID, "events", len(events), "err", err)
		d.leaveDirect("the plugin failed")
		results = make([]sdk.Result, len(events))
	}
	type letter struct {
		i   int
		fut jetstream.PubAckFuture
	}
	var letters []letter
	var delivered, dead metrics.ByType
	var retried float64
	delay := d.Metrics.DelaySeconds.WithLabelValues(d.ID)
	now := time.Now()
	for i, res := range results {
		// The direct path's is an event's first attempt.
		v := d.judge(res, err, func() (int, time.Duration) { return 1, now.Sub(received[i]) })
		switch v.fate {
		case fateDelivered:
			out[i].Done = true
			delivered.Add(events[i].Type)
			delay.Observe(now.Sub(received[i]).Seconds())
		case fateRetry:
			out[i].RetryAt = now.Add(v.after)
			retried++
			d.leaveDirect("the destination asked to retry")
		default:
			// One not sent is not done: the consumer will have it and try again.
			if fut := d.publishLetter(events[i].JSON, 1, v.reason); fut != nil {
				letters = append(letters, letter{i, fut})
			}
		}
	}
	for _, l := range letters {
		select {
		case <-l.fut.Ok():
			out[l.i].Done = true
			dead.Add(events[l.i].Type)
		case err := <-l.fut.Err():
			d.Log.Error("cannot write a dead letter; the event will be retried", "destination", d.ID, "err", err)
		case <-ctx.Done():
		}
	}
	delivered.AddTo(d.Metrics.Delivered, d.ID)
	d.Metrics.Retried.WithLabelValues(d.ID).Add(retried)
	dead.AddTo(d.Metrics.DeadLettered, d.ID)
}

func (d *Deliverer) leaveDirect(reason string) {
	if d.direct.Swap(false) {
		d.Log.Info("destination left the direct path; its events wait in its consumer", "destination", d.ID, "reason", reason)
	}
}

// watchDirect puts the destination on the direct path whenever its plugin is
// running, no offer is pending, a plugin call may start (a destination whose
// every call hangs stays off), and either its consumer is empty or its last
// batch from the consumer was delivered whole; until ctx is done. It looks
// every directPoll, and as soon as a batch from the consumer is delivered
// whole: at start-up, while the plugins start, the router's first batches
// take the routed stream, and under load waiting for the poll would send
// thousands more there.
func (d *Deliverer) watchDirect(ctx context.Context) {
	t := time.NewTicker(directPoll)
	defer t.Stop()
	for {
		if !d.direct.Load() && d.offering.Load() == 0 && len(d.calls) < d.MaxInFlight && len(d.offers) == 0 && d.Host.Ready() && (d.healthy.Load() || d.caughtUp(ctx)) && ctx.Err() == nil {
			d.direct.Store(true)
			d.Log.Debug("destination is on the direct path", "destination", d.ID)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

func (d *Deliverer) caughtUp(ctx context.Context) bool {
	info, err := d.Consumer.Info(ctx)
	return err == nil && info.NumPending+uint64(info.NumAckPending) == 0
}
