package bus_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/bus/bustest"
)

// Every message comes once, in stream order (the router's dedupe lets the
// first of two messages with one messageId through), in batches of at most
// max, and ConsumeBatches returns the consumer's error once it is deleted
// rather than waiting for messages that cannot come.
func TestConsumeBatches(t *testing.T) {
	b, topo := bustest.Open(t)
	ctx := t.Context()
	const n, max = 1000, 64
	for range n {
		if _, err := b.JS.PublishAsync("track", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	<-b.JS.PublishAsyncComplete()
	cons, err := topo.Router(ctx, 4*max)
	if err != nil {
		t.Fatal(err)
	}
	var got atomic.Int64
	var last uint64 // handle is called on one goroutine
	done := make(chan error, 1)
	go func() {
		done <- bus.ConsumeBatches(ctx, cons, max, 0, nil, func(msgs []jetstream.Msg) {
			if len(msgs) > max {
				t.Errorf("a batch of %d messages, want at most %d", len(msgs), max)
			}
			for _, m := range msgs {
				md, err := m.Metadata()
				if err != nil {
					t.Error(err)
					continue
				}
				if seq := md.Sequence.Stream; seq <= last {
					t.Errorf("message %d came after message %d", seq, last)
				} else {
					last = seq
				}
				if err := m.DoubleAck(ctx); err != nil {
					t.Error(err)
				}
			}
			got.Add(int64(len(msgs)))
		})
	}()
	bustest.WaitFor(t, func() bool { return got.Load() >= n })
	if err := topo.Ingest.DeleteConsumer(ctx, bus.RouterConsumer); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Errorf("ConsumeBatches returned %v, want the consumer's deletion", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ConsumeBatches still waits for a deleted consumer")
	}
	if got.Load() != n {
		t.Errorf("%d messages handled, want %d", got.Load(), n)
	}
	info, err := topo.Ingest.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d messages left in the stream, want 0", info.State.Msgs)
	}
}

// With a linger, messages that come one after another are gathered into one
// batch, and a batch that cannot fill is handed on once the linger is over.
func TestConsumeBatchesLinger(t *testing.T) {
	b, topo := bustest.Open(t)
	ctx := t.Context()
	cons, err := topo.Router(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	publish := func() {
		t.Helper()
		if _, err := b.JS.Publish(ctx, "track", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	// consume runs ConsumeBatches until stop, which waits for it to return.
	consume := func(max int, linger time.Duration) (sizes <-chan int, stop func()) {
		got := make(chan int, 8)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = bus.ConsumeBatches(cctx, cons, max, linger, nil, func(msgs []jetstream.Msg) {
				for _, m := range msgs {
					if err := m.DoubleAck(ctx); err != nil {
						t.Error(err)
					}
				}
				got <- len(msgs)
			})
		}()
		return got, func() { cancel(); <-done }
	}
	next := func(sizes <-chan int) int {
		t.Helper()
		select {
		case n := <-sizes:
			return n
		case <-time.After(30 * time.Second):
			t.Fatal("no batch")
			return 0
		}
	}

	// A linger far longer than the test: the batch is handed on only once full.
	sizes, stop := consume(3, time.Hour)
	publish()
	time.Sleep(100 * time.Millisecond) // without a linger, the first message would go alone
	publish()
	publish()
	if n := next(sizes); n != 3 {
		t.Errorf("a batch of %d messages, want the 3 that came within the linger", n)
	}

	stop()

	// A short linger: the one message goes once it is over.
	sizes, stop = consume(100, 20*time.Millisecond)
	defer stop()
	publish()
	if n := next(sizes); n != 1 {
		t.Errorf("a batch of %d messages, want 1", n)
	}
}

// A consumer deleted between two pull requests is noticed too: the next
// request finds no one to answer it rather than the deletion.
func TestConsumeBatchesDeletedBetweenPulls(t *testing.T) {
	_, topo := bustest.Open(t)
	ctx := t.Context()
	cons, err := topo.Router(ctx, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Ingest.DeleteConsumer(ctx, bus.RouterConsumer); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- bus.ConsumeBatches(ctx, cons, 64, 0, nil, func([]jetstream.Msg) {})
	}()
	select {
	case err := <-done:
		if !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Errorf("ConsumeBatches returned %v, want the consumer's deletion", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ConsumeBatches still waits for a deleted consumer")
	}
}
