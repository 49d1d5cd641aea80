package deliver

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/eventtest"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

// benchEvent is a normalized Order Completed event of about 1 KB.
func benchEvent(b *testing.B, i int) []byte {
	body := eventtest.OrderCompleted(i, eventtest.MessageID(i))
	ev, err := normalize.Normalize(body, time.Now(), normalize.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return ev.JSON
}

// noopPlugin builds the no-op plugin without the race detector: the
// benchmarks measure what ships.
func noopPlugin(b *testing.B) string {
	out := filepath.Join(b.TempDir(), "noopplugin")
	if msg, err := exec.Command("go", "build", "-o", out, "trackd.dev/trackd/daemon/internal/testplugins/noop").CombinedOutput(); err != nil {
		b.Fatalf("build the no-op plugin: %v\n%s", err, msg)
	}
	return out
}

// BenchmarkPluginDeliver is one Deliver round trip to a plugin process over
// go-plugin's gRPC, at several batch sizes; ns/op is per event.
func BenchmarkPluginDeliver(b *testing.B) {
	c := destinationtest.Start(b, noopPlugin(b), nil)
	for _, size := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			batch := make([]sdk.Event, size)
			for i := range batch {
				body := benchEvent(b, i)
				ev, _, err := normalize.Summarize(body)
				if err != nil {
					b.Fatal(err)
				}
				batch[i] = ev
			}
			b.SetBytes(int64(size * len(batch[0].JSON)))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if _, err := c.Deliver(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
				n += size
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
		})
	}
}

// BenchmarkPluginCPU is the no-op plugin's own CPU per event, started as the
// daemon starts it (pluginhost, with its environment), for batches of 100 (the
// default batch_size) and 512 (a router batch), one call at a time. It
// reports plugin-cpu-µs/event, and host-cpu-µs/event for this process's side
// of the calls; ns/op is per call.
func BenchmarkPluginCPU(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	host := pluginhost.New(pluginhost.Spec{ID: "noop", Path: noopPlugin(b), Dir: b.TempDir()}, log, nil)
	defer host.Close()
	if err := host.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{100, 512} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			batch := make([]sdk.Event, size)
			for i := range batch {
				ev, _, err := normalize.Summarize(benchEvent(b, i))
				if err != nil {
					b.Fatal(err)
				}
				batch[i] = ev
			}
			cpu0, self0 := bustest.ChildrenCPUSeconds(b, os.Getpid()), bustest.CPUTime()
			for b.Loop() {
				if _, err := host.Deliver(b.Context(), batch); err != nil {
					b.Fatal(err)
				}
			}
			cpu, self := bustest.ChildrenCPUSeconds(b, os.Getpid())-cpu0, bustest.CPUTime()-self0
			b.ReportMetric(cpu*1e6/float64(b.N*size), "plugin-cpu-µs/event")
			b.ReportMetric(float64(self.Microseconds())/float64(b.N*size), "host-cpu-µs/event")
		})
	}
}

// BenchmarkDeliverer is one destination's whole stage in this process: b.N
// events waiting in the routed stream of an embedded server are read,
// handed to the no-op plugin in batches and acked. ns/op is per event.
func BenchmarkDeliverer(b *testing.B) {
	bs, topo := bustest.Open(b)
	ctx := b.Context()
	cons, err := topo.Destination(ctx, "noop", 1000)
	if err != nil {
		b.Fatal(err)
	}
	bodies := make([][]byte, 64)
	for i := range bodies {
		bodies[i] = benchEvent(b, i)
	}
	for i := range b.N {
		m := &nats.Msg{Subject: bus.RoutedSubject, Data: bodies[i%len(bodies)], Header: nats.Header{HeaderDestinations: {"noop"}}}
		if _, err := bs.JS.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-bs.JS.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("pre-load not acknowledged")
	}
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	host := pluginhost.New(pluginhost.Spec{ID: "noop", Path: noopPlugin(b), Dir: b.TempDir()}, log, nil)
	defer host.Close()
	if err := host.Start(ctx); err != nil {
		b.Fatal(err)
	}
	d := New("noop", bs.JS, cons, host, WithBatchSize(100), WithMaxInFlight(4), WithDirectTimeout(2*time.Second),
		WithMetrics(m), WithLogger(log), WithRetry(config.Retry{Initial: time.Second, Max: time.Second, MaxAttempts: 3, MaxAge: time.Hour}))
	b.ReportAllocs()
	cpu0 := bustest.CPUTime()
	b.ResetTimer()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(runCtx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		info, err := topo.Routed.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the deliverer did not finish within 5 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64((bustest.CPUTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/event")
	cancel()
	<-done
}
