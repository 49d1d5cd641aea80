package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/eventtest"
)

// The job of BenchmarkHTTPDestinations (issue 25): what users judge trackd
// on. benchJobCalls ~1 KB track calls are POSTed to /v1/batch in batches of
// benchJobBatch by benchJobClients clients, and delivered to the file
// destination and to two webhook destinations at local receivers; the time is
// until every call has reached all three.
const (
	benchJobCalls    = 60_000
	benchJobBatch    = 100
	benchJobClients  = 8
	benchJobInFlight = 16 // requests in flight per receiver when the job is done straight
)

// BenchmarkHTTPDestinations runs the job through trackd, and in the same run
// the same work done straight: each call written as a line to a file and
// POSTed on its own to each receiver, benchJobInFlight requests in flight per
// receiver over kept-alive connections, no router, no durability. It prints
// both rates, their ratio, and the CPU per 1,000 calls of the daemon (its
// embedded NATS server included) and of its plugins. With TRACKD_BENCH_PROFILE
// set, the daemon's CPU profile of the job's first seconds is job.drain.cpu there.
func BenchmarkHTTPDestinations(b *testing.B) {
	for range b.N {
		straight := benchStraight(b)
		t := benchJob(b, false)
		batched := benchJob(b, true)
		b.ReportMetric(t.rate, "calls/s")
		b.ReportMetric(straight, "straight-calls/s")
		b.ReportMetric(t.rate/straight, "ratio")
		b.ReportMetric(batched.rate/straight, "batch-ratio")
		fmt.Printf("bench: http job (%d calls in /v1/batch of %d from %d clients → file + 2 webhooks): trackd %.0f calls/s, straight %.0f calls/s, ratio %.2f; cpu per 1000 calls: daemon %.3f s, plugins %.3f s\n",
			benchJobCalls, benchJobBatch, benchJobClients, t.rate, straight, t.rate/straight, t.daemonCPU, t.pluginCPU)
		fmt.Printf("bench: http job, webhooks with batch = true (a JSON array per request): trackd %.0f calls/s, ratio %.2f; cpu per 1000 calls: daemon %.3f s, plugins %.3f s\n",
			batched.rate, batched.rate/straight, batched.daemonCPU, batched.pluginCPU)
	}
}

// benchJobCall is call i of the job.
func benchJobCall(i int) []byte { return eventtest.OrderCompleted(i, "job-"+strconv.Itoa(i)) }

// receiver is a local HTTP server playing a webhook's endpoint: it counts the
// distinct calls it was sent, by the index in their messageId.
type receiver struct {
	url  string
	seen []atomic.Bool
	got  atomic.Int64
	srv  *http.Server
}

func newReceiver(b *testing.B) *receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/hook", seen: make([]atomic.Bool, benchJobCalls)}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve)}
	go func() { _ = r.srv.Serve(ln) }()
	b.Cleanup(func() { _ = r.srv.Close() })
	return r
}

var jobIDPrefix = []byte(`"messageId":"job-`)

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	// One call, or with the webhook's batch setting an array of them.
	for rest := body; ; {
		i := bytes.Index(rest, jobIDPrefix)
		if i < 0 {
			return
		}
		rest = rest[i+len(jobIDPrefix):]
		n, err := strconv.Atoi(string(rest[:max(bytes.IndexByte(rest, '"'), 0)]))
		if err != nil || n < 0 || n >= len(r.seen) {
			http.Error(w, "bad job messageId", http.StatusBadRequest)
			return
		}
		if !r.seen[n].Swap(true) {
			r.got.Add(1)
		}
	}
}

// benchStraight does the job's work straight and returns its rate.
func benchStraight(b *testing.B) float64 {
	calls := make([][]byte, benchJobCalls)
	for i := range calls {
		calls[i] = benchJobCall(i)
	}
	receivers := []*receiver{newReceiver(b), newReceiver(b)}
	f, err := os.Create(filepath.Join(b.TempDir(), "events.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchJobInFlight}, Timeout: time.Minute}

	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		w := bufio.NewWriter(f)
		for _, c := range calls {
			_, _ = w.Write(c)
			_ = w.WriteByte('\n')
		}
		if err := w.Flush(); err != nil {
			b.Error(err)
		}
		if err := f.Sync(); err != nil {
			b.Error(err)
		}
	})
	for _, r := range receivers {
		next := atomic.Int64{}
		for range benchJobInFlight {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(calls); i = int(next.Add(1) - 1) {
					resp, err := client.Post(r.url, "application/json", bytes.NewReader(calls[i]))
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	for _, r := range receivers {
		if n := r.got.Load(); n != benchJobCalls {
			b.Fatalf("straight: a receiver got %d calls, want %d", n, benchJobCalls)
		}
	}
	return benchJobCalls / elapsed.Seconds()
}

type jobRun struct {
	rate                 float64
	daemonCPU, pluginCPU float64 // seconds per 1,000 calls
}

// benchJob does the job through trackd with the embedded server; with batch
// the webhooks send JSON arrays.
func benchJob(b *testing.B, batch bool) jobRun {
	dir := b.TempDir()
	receivers := []*receiver{newReceiver(b), newReceiver(b)}
	hook := benchBuild(b, "trackd.dev/trackd/plugins/webhook")
	api := freePort(b)
	d := newBenchDaemon(b, dir, "", fmt.Sprintf(`
[http]
listen = %[1]q
[http.write_keys]
web = "bench-key"
[destinations.file]
plugin = %[2]q
[destinations.file.settings]
path = %[3]q
[destinations.hook1]
plugin = %[4]q
[destinations.hook1.settings]
url = %[5]q
batch = %[7]t
[destinations.hook2]
plugin = %[4]q
[destinations.hook2.settings]
url = %[6]q
batch = %[7]t
`, api, benchBuild(b, "trackd.dev/trackd/plugins/file"), filepath.Join(dir, "events.jsonl"),
		hook, receivers[0].url, receivers[1].url, batch))
	bodies := make([][]byte, 0, benchJobCalls/benchJobBatch)
	for i := 0; i < benchJobCalls; i += benchJobBatch {
		var body bytes.Buffer
		body.WriteString(`{"batch":[`)
		for j := i; j < i+benchJobBatch; j++ {
			if j > i {
				body.WriteByte(',')
			}
			body.Write(benchJobCall(j))
		}
		body.WriteString(`]}`)
		bodies = append(bodies, body.Bytes())
	}
	d.start(b)
	defer d.stop(b)
	pid := d.cmd.Process.Pid
	cpu0, plugins0 := bustest.ProcessCPUSeconds(b, pid), bustest.ChildrenCPUSeconds(b, pid)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchJobClients}, Timeout: time.Minute}
	profiled := d.profileDrain(b, fmt.Sprintf("job-batch-%t", batch))
	defer profiled()
	start := time.Now()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range benchJobClients {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(bodies); i = int(next.Add(1) - 1) {
				req, err := http.NewRequest(http.MethodPost, "http://"+api+"/v1/batch", bytes.NewReader(bodies[i]))
				if err != nil {
					b.Error(err)
					return
				}
				req.SetBasicAuth("bench-key", "")
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("/v1/batch answered %s", resp.Status)
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(benchWaitLimit)
	for receivers[0].got.Load() < benchJobCalls || receivers[1].got.Load() < benchJobCalls ||
		d.metric(b, `trackd_events_delivered_total{destination="file"}`) < benchJobCalls {
		if time.Now().After(deadline) {
			b.Fatalf("after %s the receivers have %d and %d calls, the file %v, of %d", benchWaitLimit,
				receivers[0].got.Load(), receivers[1].got.Load(), d.metric(b, `trackd_events_delivered_total{destination="file"}`), benchJobCalls)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := bustest.ProcessCPUSeconds(b, pid) - cpu0
	plugins := bustest.ChildrenCPUSeconds(b, pid) - plugins0
	queued := map[string]float64{}
	for _, id := range []string{"file", "hook1", "hook2"} {
		queued[id] = d.metric(b, `trackd_events_queued_total{destination="`+id+`"}`)
	}
	b.Logf("calls through TRACK_ROUTED rather than the direct path: %v; calls per plugin call (hook1) %.0f",
		queued, benchJobCalls/d.metric(b, `trackd_batch_duration_seconds_count{destination="hook1"}`))
	return jobRun{
		rate:      benchJobCalls / elapsed.Seconds(),
		daemonCPU: cpu / benchJobCalls * 1000,
		pluginCPU: plugins / benchJobCalls * 1000,
	}
}
