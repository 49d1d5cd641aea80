package router

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/route"
)

// The dedupe trap: a router that claimed a messageId and died before acking
// leaves a claim behind. The redelivered message must find its own claim and
// still be delivered, while another message with that id is a repeat.
func TestRedeliveryAfterClaimIsDelivered(t *testing.T) {
	b, topo := bustest.Open(t)
	ctx := t.Context()
	dest, err := topo.Destination(ctx, "d1", 100)
	if err != nil {
		t.Fatal(err)
	}
	claimer, err := dedupe.Open(ctx, b.JS, config.Defaults().Dedupe, 1)
	if err != nil {
		t.Fatal(err)
	}

	publish := func(body string) uint64 {
		t.Helper()
		ack, err := b.JS.Publish(ctx, "track", []byte(body))
		if err != nil {
			t.Fatal(err)
		}
		return ack.Sequence
	}
	orphan := publish(`{"event":"Order Completed","userId":"u1","messageId":"claimed-then-crashed"}`)
	publish(`{"event":"Order Completed","userId":"u1","messageId":"seen-before"}`)
	// The state a crash leaves: a claim by the orphan's own sequence, and a
	// claim of "seen-before" by an earlier, different message.
	if _, err := claimer.ClaimAll(ctx, []dedupe.Claim{{MessageID: "claimed-then-crashed", Seq: orphan}, {MessageID: "seen-before", Seq: 999}}); err != nil {
		t.Fatal(err)
	}

	cons, err := topo.Router(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := New(b.JS, cons, claimer, deliver.NewHandOff(b.JS, nil, m, log),
		WithMetrics(m), WithLogger(log), WithBatch(10, 0))
	r.SetRoutes(route.NewTable([]route.Destination{{ID: "d1", Name: "D1"}}))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	msg, err := dest.Next(jetstream.FetchMaxWait(30 * time.Second))
	if err != nil {
		t.Fatalf("the orphaned event was not routed: %v", err)
	}
	if got := msg.Headers().Get(deliver.HeaderDestinations); got != "d1" {
		t.Errorf("%s = %q, want d1", deliver.HeaderDestinations, got)
	}
	var ev struct {
		MessageID string `json:"messageId"`
	}
	if err := json.Unmarshal(msg.Data(), &ev); err != nil || ev.MessageID != "claimed-then-crashed" {
		t.Fatalf("routed %s (%v), want the orphaned event", msg.Data(), err)
	}
	_ = msg.Ack()

	// Both ingest messages are done (the work queue is empty), and the repeat was counted, not routed.
	bustest.WaitFor(t, func() bool {
		info, err := topo.Ingest.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	if _, err := dest.Next(jetstream.FetchMaxWait(500 * time.Millisecond)); err == nil {
		t.Error("the repeat was routed too")
	}
}
