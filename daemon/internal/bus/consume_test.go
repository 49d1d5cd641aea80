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

// Every message comes once, in batches of at most max, and ConsumeBatches
// returns the consumer's error once it is deleted rather than waiting for
// messages that cannot come.
func TestConsumeBatches(t *testing.T) {
	b, topo := bustest.Open(t, time.Hour)
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
	done := make(chan error, 1)
	go func() {
		done <- bus.ConsumeBatches(ctx, cons, max, nil, func(msgs []jetstream.Msg) {
			if len(msgs) > max {
				t.Errorf("a batch of %d messages, want at most %d", len(msgs), max)
			}
			for _, m := range msgs {
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
