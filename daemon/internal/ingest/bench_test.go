package ingest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/route"
)

// benchEvent is an Order Completed event of about 1 KB, as analytics.js sends it.
func benchEvent(i int) []byte {
	return fmt.Appendf(nil, `{"type":"track","event":"Order Completed","userId":"user_%06d","anonymousId":"507f191e810c19729de8%04x",`+
		`"messageId":"ajs-next-1706097542403-%08x-9b1d-4c55-8a7e-0b6f2d9c1e44","timestamp":"2024-01-24T11:59:02.403Z","sentAt":"2024-01-24T11:59:02.410Z","originalTimestamp":"2024-01-24T11:59:02.403Z",`+
		`"properties":{"checkout_id":"fksdjfsdjfisjf9sdfjsd9f","order_id":"50314b8e9bcf%012d","affiliation":"Google Store","total":%d.50,"subtotal":22.50,`+
		`"revenue":%d.00,"shipping":3,"tax":2,"discount":2.5,"coupon":"hasbros","currency":"usd","products":[`+
		`{"product_id":"507f1f77bcf86cd799439011","sku":"45790-32","name":"Monopoly: 3rd Edition","price":19,"quantity":1,"category":"Games"},`+
		`{"product_id":"505bd76785ebb509fc183733","sku":"46493-32","name":"Uno Card Game","price":3,"quantity":2,"category":"Games"}]},`+
		`"context":{"ip":"203.0.113.%d","locale":"en-US","library":{"name":"analytics.js","version":"next-1.64.0"},`+
		`"page":{"path":"/checkout/complete","url":"https://shop.example.com/checkout/complete"},`+
		`"userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"},`+
		`"integrations":{"All":true,"Mixpanel":false,"Amplitude":{"session_id":1706097500000}}}`,
		i%50000, i%65536, i, i, 20+i%80, 20+i%80, i%250)
}

// BenchmarkRouter is the whole router stage in this process: b.N events
// waiting in the ingest stream of an embedded server are normalized,
// claimed, routed to three destinations and handed on. ns/op is per event.
func BenchmarkRouter(b *testing.B) {
	bs, topo := bustest.Open(b, time.Hour)
	ctx := b.Context()
	for _, id := range []string{"d1", "d2", "d3"} {
		if _, err := topo.Destination(ctx, id, 1000); err != nil {
			b.Fatal(err)
		}
	}
	for i := range b.N {
		if _, err := bs.JS.PublishAsync("track", benchEvent(i)); err != nil {
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
	r := &Router{
		JS: bs.JS, Consumer: cons, Claimer: dedupe.New(bs.JS, topo.Dedupe), Metrics: metrics.New(),
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), BatchSize: batch,
	}
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
