package bus

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pullExpiry is how long one pull request waits on the server. A pull was
// seen, under load, to stop being served in the middle of a full stream until
// it expired (nats-server 2.15.2, nats.go 1.55.0): with 5 s, two of six runs
// of the floor benchmark stalled once or twice for 5 s each; with 1 s, none
// of six stalled at all. An idle consumer then sends a pull a second.
const pullExpiry = time.Second

// ConsumeBatches pulls from cons and calls handle with batches of at most max
// messages. A batch is whatever is waiting — it never waits to fill — so a
// quiet stream gets low latency and a busy one gets full batches. When ready
// is not nil, a batch is gathered only once ready, called when a message has
// come, returns true: while it waits, messages gather for the next batch. It
// returns false when ctx is done.
//
// It returns once ctx is done and the batch in hand is handled; messages
// fetched but not yet handed out are nak'ed so another daemon takes them now
// rather than after the ack wait.
func ConsumeBatches(ctx context.Context, cons jetstream.Consumer, max int, ready func(context.Context) bool, handle func([]jetstream.Msg)) error {
	msgs := make(chan jetstream.Msg, max)
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
			_ = m.Nak()
		}
	}, jetstream.PullMaxMessages(2*max),
		jetstream.PullExpiry(pullExpiry), jetstream.PullHeartbeat(pullExpiry/2))
	if err != nil {
		return err
	}
	defer func() {
		cc.Stop()
		for {
			select {
			case m := <-msgs:
				_ = m.Nak()
			default:
				return
			}
		}
	}()
	batch := make([]jetstream.Msg, 0, max)
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			batch = append(batch[:0], m)
		}
		if ready != nil && !ready(ctx) {
			_ = batch[0].Nak()
			return nil
		}
	fill:
		for len(batch) < max {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		handle(batch)
	}
}

// KeepInProgress tells NATS, every so often, that the messages are still
// being worked on, so that they are not handed to another worker, until the
// returned stop is called.
func KeepInProgress(msgs []jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
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
