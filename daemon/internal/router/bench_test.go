package router

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/eventtest"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/route"
)

// BenchmarkRouter is the whole router stage in this process: b.N events
// waiting in the ingest stream of an embedded server are normalized,
// claimed, routed to three destinations and handed on. With no deliverers,
// every destination is off the direct path: the worst case, one store in the
// routed stream per destination and event. ns/op is per event.
func BenchmarkRouter(b *testing.B) {
	bs, topo := bustest.Open(b)
	ctx := b.Context()
	for _, id := range []string{"d1", "d2", "d3"} {
		if _, err := topo.Destination(ctx, id, 1000); err != nil {
			b.Fatal(err)
		}
	}
	for i := range b.N {
		if _, err := bs.JS.PublishAsync("track", eventtest.Mix(i, eventtest.MessageID(i))); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-bs.JS.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("pre-load not acknowledged")
	}
	const batch = 512
	cons, err := topo.Router(ctx, 4*batch)
	if err != nil {
		b.Fatal(err)
	}
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	claimer, err := dedupe.Open(ctx, bs.JS, config.Defaults().Dedupe, 1)
	if err != nil {
		b.Fatal(err)
	}
	r := New(bs.JS, cons, claimer, deliver.NewHandOff(bs.JS, nil, m, log),
		WithMetrics(m), WithLogger(log), WithBatch(batch, 0))
	r.SetRoutes(route.NewTable([]route.Destination{{ID: "d1", Name: "D1"}, {ID: "d2", Name: "D2"}, {ID: "d3", Name: "D3"}}))
	b.ReportAllocs()
	cpu0 := bustest.CPUTime()
	b.ResetTimer()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(runCtx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for ingestLeft(b, topo.Ingest) > 0 {
		if time.Now().After(deadline) {
			b.Fatal("the router did not finish within 5 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64((bustest.CPUTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
	cancel()
	<-done
}

func ingestLeft(b *testing.B, s jetstream.Stream) uint64 {
	info, err := s.Info(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}
