package trackapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/eventtest"
	"trackd.dev/trackd/daemon/internal/metrics"
)

const (
	benchCalls     = 200_000
	benchBatch     = 100 // calls per /v1/batch request
	benchClients   = 8
	benchWaitLimit = 5 * time.Minute
)

// BenchmarkHTTPIngest measures HTTP → JetStream acknowledged: benchClients
// clients post /v1/batch requests of benchBatch ~1 KB calls over loopback TCP,
// each waiting for its answer, against the raw rate of asynchronous publishes
// of the same calls through the same connection, measured in the same run.
func BenchmarkHTTPIngest(b *testing.B) {
	for range b.N {
		raw := benchRawPublish(b)
		rate, cpu := benchHTTP(b)
		b.ReportMetric(rate, "calls/s")
		b.ReportMetric(raw, "raw-msg/s")
		b.ReportMetric(rate/raw, "ratio")
		fmt.Printf("bench: http /v1/batch of %d calls from %d clients %.0f calls/s, raw async publish %.0f msg/s, ratio %.2f, cpu %.3f s/1000calls\n",
			benchBatch, benchClients, rate, raw, rate/raw, cpu)
	}
}

// benchRawPublish publishes benchCalls events asynchronously with the API's
// window of acknowledgements, and returns the rate at which they were stored.
func benchRawPublish(b *testing.B) float64 {
	bs, _ := bustest.Open(b)
	js, err := jetstream.New(bs.Conn, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		b.Fatal(err)
	}
	events := make([][]byte, benchCalls)
	for i := range events {
		events[i] = eventtest.OrderCompleted(i, eventtest.MessageID(i))
	}
	start := time.Now()
	for _, e := range events {
		if _, err := js.PublishAsync("track.web", e, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(benchWaitLimit):
		b.Fatalf("publishes not acknowledged after %s", benchWaitLimit)
	}
	return benchCalls / time.Since(start).Seconds()
}

// benchHTTP serves the API and has the clients post every call; it returns
// the calls answered 200 per second and the CPU time per 1000 calls.
func benchHTTP(b *testing.B) (rate float64, cpuPer1000 float64) {
	bs, _ := bustest.Open(b)
	api, err := New(bs.Conn, NewSources("track", map[string]string{"web": webKey}, ""), metrics.New(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", api, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Shutdown(context.Background()) }()
	url := "http://" + l.Addr() + "/v1/batch"

	bodies := make([][]byte, benchCalls/benchBatch)
	for r := range bodies {
		var buf bytes.Buffer
		buf.WriteString(`{"batch":[`)
		for i := range benchBatch {
			if i > 0 {
				buf.WriteByte(',')
			}
			n := r*benchBatch + i
			buf.Write(eventtest.OrderCompleted(n, eventtest.MessageID(n)))
		}
		buf.WriteString(`],"sentAt":"2024-01-24T11:59:02.410Z"}`)
		bodies[r] = buf.Bytes()
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchClients}}
	next := make(chan []byte, len(bodies))
	for _, body := range bodies {
		next <- body
	}
	close(next)

	var wg sync.WaitGroup
	errs := make(chan error, benchClients)
	cpu0, start := bustest.CPUTime(), time.Now()
	for range benchClients {
		wg.Go(func() {
			for body := range next {
				if err := benchPost(client, url, body); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed, cpu := time.Since(start), bustest.CPUTime()-cpu0
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return benchCalls / elapsed.Seconds(), cpu.Seconds() / benchCalls * 1000
}

func benchPost(client *http.Client, url string, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(webKey, "")
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, answer)
	}
	return nil
}
