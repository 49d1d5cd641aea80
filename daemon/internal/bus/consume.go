package bus

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pullExpiry is how long one pull request waits on the server; an idle
// consumer sends one a second.
const pullExpiry = time.Second

// One fetch loop feeds ConsumeBatches, one pull request at a time, so that
// messages come in the order the server sends them: with two requests
// waiting, the server deals their messages out in turn, and two loops would
// pass them on in any order (the router's dedupe would then let a repeat
// through ahead of the message it repeats). While the next request is sent,
// the router works through the last one's messages, which the channel holds.
//
// It uses Fetch, one request per batch, rather than Consume, which stalls
// under load in nats.go 1.55.0: it asks for more messages as one arrives, but
// not while its previous request is still being sent, so when sending takes
// longer than the messages already asked for last (a busy connection, a
// descheduled goroutine), they all arrive meanwhile, nothing asks again, and
// the consumer waits for two missed heartbeats (a second at least).

// fetchRetry is how long a fetch loop waits after a failed pull request.
const fetchRetry = 100 * time.Millisecond

// ConsumeBatches pulls from cons and calls handle with batches of at most max
// messages. A batch is what is waiting once its first message has come, plus
// what comes within linger of it: a busy stream gets full batches at once, a
// quiet one waits at most linger, and a steady trickle is gathered into
// batches rather than handled a message or two at a time. When ready
// is not nil, a batch is gathered only once ready, called when a message has
// come, returns true: while it waits, messages gather for the next batch. It
// returns false when ctx is done.
//
// It returns once ctx is done and the batch in hand is handled, or when the
// consumer is gone; messages fetched but not yet handed out are handed back
// (HandBack) so another daemon, or this one restarted, takes them now rather
// than after the ack wait. Other failed pulls (no server for a while, a new
// leader) are tried again.
func ConsumeBatches(ctx context.Context, cons jetstream.Consumer, max int, linger time.Duration, ready func(context.Context) bool, handle func([]jetstream.Msg)) error {
	ctx, cancel := context.WithCancel(ctx)
	msgs := make(chan jetstream.Msg, max)
	gone := make(chan error, 1)
	var fetching sync.WaitGroup
	defer func() {
		cancel()
		fetching.Wait()
		for {
			select {
			case m := <-msgs:
				HandBack(m)
			default:
				return
			}
		}
	}()
	fetching.Go(func() {
		if err := fetchLoop(ctx, cons, max, msgs); err != nil {
			gone <- err
		}
	})
	batch := make([]jetstream.Msg, 0, max)
	lingering := time.NewTimer(linger)
	lingering.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-gone:
			return err
		case m := <-msgs:
			batch = append(batch[:0], m)
		}
		if ready != nil && !ready(ctx) {
			HandBack(batch[0])
			return nil
		}
		batch = gather(ctx, batch, max, linger, msgs, lingering)
		handle(batch)
	}
}

// gather adds to batch, up to max messages, what msgs holds and, for linger
// from when it is called, what comes; it stops early when ctx is done.
func gather(ctx context.Context, batch []jetstream.Msg, max int, linger time.Duration, msgs <-chan jetstream.Msg, lingering *time.Timer) []jetstream.Msg {
	if linger <= 0 {
		for len(batch) < max {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				return batch
			}
		}
		return batch
	}
	lingering.Reset(linger)
	defer lingering.Stop()
	for len(batch) < max {
		select {
		case m := <-msgs:
			batch = append(batch, m)
		case <-lingering.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// fetchLoop sends pull requests for up to max messages one after another
// and passes their messages to msgs, until ctx is done (nil) or the consumer
// is gone (its error).
func fetchLoop(ctx context.Context, cons jetstream.Consumer, max int, msgs chan<- jetstream.Msg) error {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, pullExpiry)
		batch, err := cons.Fetch(max, jetstream.FetchContext(fctx))
		if err == nil {
			for m := range batch.Messages() {
				select {
				case msgs <- m:
				case <-ctx.Done():
					HandBack(m)
				}
			}
			err = batch.Error()
		}
		cancel()
		switch {
		case err == nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound):
			return err
		case errors.Is(err, nats.ErrNoResponders) && consumerGone(ctx, cons):
			// A pull request sent after the consumer was deleted finds no
			// one to answer it, rather than the deletion.
			return jetstream.ErrConsumerDeleted
		default:
			select {
			case <-time.After(fetchRetry):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

// consumerGone reports whether the server no longer has cons.
func consumerGone(ctx context.Context, cons jetstream.Consumer) bool {
	_, err := cons.Info(ctx)
	return errors.Is(err, jetstream.ErrConsumerNotFound)
}

// HandBack returns messages this process will not handle to their stream, to
// be delivered again at once. A plain Nak is kept in the server's memory only:
// with the embedded server, which stops with the daemon, the restarted daemon
// would wait out the ack wait for them. A nak with a delay is written to the
// consumer's stored state, so it holds across the restart (measured with
// nats-server 2.15); a millisecond is as good as none.
func HandBack(msgs ...jetstream.Msg) {
	for _, m := range msgs {
		_ = m.NakWithDelay(time.Millisecond)
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
