package deliver

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

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
	// Done: delivered, or dead-lettered (its letter stored).
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
	t := time.NewTimer(time.Until(o.at.Add(d.directTimeout)))
	defer t.Stop()
	select {
	case out := <-o.answer:
		return out
	case <-t.C:
	}
	d.leaveDirect("no answer within " + d.directTimeout.String() + " (direct_timeout)")
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
	defer d.closeOffers()
	var next *Offered // taken from the queue, but too large to join the last group
	for {
		o := d.takeOffer(ctx, next)
		if o == nil {
			return
		}
		var group []*Offered
		group, next = d.joinWaiting(o)
		d.offering.Add(1)
		out, calls := d.startCalls(ctx, group)
		go func() {
			calls.Wait()
			d.offering.Add(-1)
			answer(group, out)
		}()
	}
}

// takeOffer takes next, or else the next offer from the queue, and a plugin
// call slot for it, and marks it started; an offer withdrawn while it waited
// for the slot is passed over. It returns nil once ctx is done.
func (d *Deliverer) takeOffer(ctx context.Context, next *Offered) *Offered {
	o := next
	for {
		if o == nil {
			select {
			case o = <-d.offers:
			case <-ctx.Done():
				return nil
			}
		}
		if !d.takeCall(ctx) {
			if o.state.CompareAndSwap(offerWaiting, offerWithdrawn) {
				o.answer <- nil
			}
			return nil
		}
		if o.state.CompareAndSwap(offerWaiting, offerStarted) {
			return o
		}
		<-d.calls // withdrawn while it waited for the slot
		o = nil
	}
}

// joinWaiting joins to o, started, the offers waiting in the queue, while
// they fit in BatchSize events, and marks them started; withdrawn ones are
// passed over. It returns the group, and the first offer that did not fit,
// to start the next group.
func (d *Deliverer) joinWaiting(o *Offered) (group []*Offered, next *Offered) {
	group, n := []*Offered{o}, len(o.events)
	for n < d.batchSize {
		select {
		case w := <-d.offers:
			if n+len(w.events) > d.batchSize {
				return group, w
			}
			if w.state.CompareAndSwap(offerWaiting, offerStarted) {
				group, n = append(group, w), n+len(w.events)
			}
		default:
			return group, nil
		}
	}
	return group, nil
}

// startCalls starts the plugin calls of a group's events, of at most
// BatchSize events each (an offer alone may hold more), the first in the slot
// takeOffer took. Each records in its part of out what became of its events;
// calls is done once all have ended.
func (d *Deliverer) startCalls(ctx context.Context, group []*Offered) (out []Outcome, calls *sync.WaitGroup) {
	events, received := joined(group)
	out = make([]Outcome, len(events))
	calls = new(sync.WaitGroup)
	held := true // the slot takeOffer took, for the first call
	for start := 0; start < len(events); start += d.batchSize {
		if !held {
			d.calls <- struct{}{}
		}
		held = false
		end := min(start+d.batchSize, len(events))
		calls.Go(func() {
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
	return out, calls
}

// joined is the events of a group of offers, in order, and when each was
// received.
func joined(group []*Offered) ([]sdk.Event, []time.Time) {
	if len(group) == 1 {
		return group[0].events, group[0].received
	}
	n := 0
	for _, g := range group {
		n += len(g.events)
	}
	events, received := make([]sdk.Event, 0, n), make([]time.Time, 0, n)
	for _, g := range group {
		events, received = append(events, g.events...), append(received, g.received...)
	}
	return events, received
}

// answer gives each offer of a group its part of out.
func answer(group []*Offered, out []Outcome) {
	for _, g := range group {
		k := len(g.events)
		g.answer <- out[:k:k]
		out = out[k:]
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
	results, took, err := d.call(ctx, events)
	// A moving average of the call time, weighing the last call by 1/8.
	d.callTime.Store(d.callTime.Load() + (int64(took)-d.callTime.Load())/8)
	if errors.Is(err, errCut) {
		return // out stays zero: not tried, so the events take the routed stream
	}
	if err != nil {
		d.leaveDirect("the plugin failed")
	}
	c := &directCall{d: d, events: events, received: received, out: out}
	d.settle(c, events, received, results, err)
	d.awaitLetters(ctx, c.letters)
}

// directCall settles the events of one plugin call of the direct path in out,
// the router's answer: the call is an event's first attempt, and a retry is a
// RetryAt that the routed stream keeps for the consumer. An event not done
// (its dead letter was not written) takes the routed stream too, and the
// consumer tries it again.
type directCall struct {
	d        *Deliverer
	events   []sdk.Event
	received []time.Time
	out      []Outcome
	letters  []pendingLetter
}

func (c *directCall) attempt(i int, now time.Time) (int, time.Duration) {
	return 1, now.Sub(c.received[i])
}

func (c *directCall) delivered(i int) { c.out[i].Done = true }

func (c *directCall) retry(i int, now time.Time, after time.Duration) {
	c.out[i].RetryAt = now.Add(after)
	c.d.leaveDirect("the destination asked to retry")
}

func (c *directCall) deadLetter(i int, reason string) {
	if fut := c.d.publishLetter(c.events[i].JSON, 1, reason); fut != nil {
		c.letters = append(c.letters, pendingLetter{fut: fut, callType: c.events[i].Type, out: &c.out[i]})
	}
}

func (d *Deliverer) leaveDirect(reason string) {
	if d.direct.Swap(false) {
		d.log.Info("destination left the direct path; its events wait in its consumer", "destination", d.id, "reason", reason)
	}
}

// watchDirect puts the destination on the direct path whenever canGoDirect,
// until ctx is done. It looks every directPoll, and as soon as a batch from
// the consumer is delivered whole: at start-up, while the plugins start, the
// router's first batches take the routed stream, and under load waiting for
// the poll would send thousands more there.
func (d *Deliverer) watchDirect(ctx context.Context) {
	t := time.NewTicker(directPoll)
	defer t.Stop()
	for {
		if !d.direct.Load() && d.canGoDirect(ctx) {
			d.direct.Store(true)
			d.log.Debug("destination is on the direct path", "destination", d.id)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

// canGoDirect reports whether a destination off the direct path may take it:
//   - the daemon is not stopping;
//   - no offer from its last time on the path is under way or waiting: it
//     left because a call failed, asked to retry or answered late, and comes
//     back only once those calls are over;
//   - a plugin call may start: a destination whose every call hangs stays
//     off, or each offer would wait out direct_timeout;
//   - its plugin is running and configured: an offer would otherwise wait
//     for it to start, within direct_timeout;
//   - its last batch from the consumer was delivered whole (it works again),
//     or its consumer has nothing pending (nothing says it fails, as at
//     start-up). Asked last: the consumer's info is a round trip to the
//     server.
func (d *Deliverer) canGoDirect(ctx context.Context) bool {
	return ctx.Err() == nil &&
		d.offering.Load() == 0 && len(d.offers) == 0 &&
		len(d.calls) < d.maxInFlight &&
		d.host.Ready() &&
		(d.healthy.Load() || d.caughtUp(ctx))
}

func (d *Deliverer) caughtUp(ctx context.Context) bool {
	info, err := d.consumer.Info(ctx)
	return err == nil && info.NumPending+uint64(info.NumAckPending) == 0
}
