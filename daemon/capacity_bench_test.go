package main

// The capacity benchmark behind the README's capacity model: what the dedupe
// bucket costs a nats-server per key, and how long a server holding it takes
// to come back. It runs only with -bench, once per bucket size.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/eventtest"
)

const (
	// Claims go out in batches of capacityBatch with capacityInFlight batches
	// unanswered, as the router overlaps one batch's claims with the next.
	// Together they stay under the 4,000 async publishes nats.go allows in
	// flight by default, which is what the daemon's connection has: a full
	// window would stall Start.
	capacityBatch    = 1024
	capacityInFlight = 3
	mib              = 1 << 20
)

// BenchmarkDedupeCapacity fills the dedupe bucket of a nats-server process
// with 1M and then (on a fresh server) 5M claims through the real Claimer,
// and reports the claim rate, the server's memory per key, how long it takes
// to answer again with every key after kill -9 and after a clean stop, and
// the store's size on disk. Memory is measured twice: the process's RSS, which
// is what a machine must have, and the Go heap after a forced GC (through the
// server's profiling port), which is what the keys themselves hold. The
// embedded server is the same code, so its numbers are the same.
func BenchmarkDedupeCapacity(b *testing.B) {
	bin := benchBuild(b, "github.com/nats-io/nats-server/v2")
	for _, n := range []int{1_000_000, 5_000_000} {
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			for range b.N {
				benchDedupeCapacity(b, bin, n)
			}
		})
	}
}

// capacityMem is the server's memory at one point, in bytes.
type capacityMem struct{ rss, heap float64 }

func (m capacityMem) perKey(empty capacityMem, n int) capacityMem {
	return capacityMem{rss: (m.rss - empty.rss) / float64(n), heap: (m.heap - empty.heap) / float64(n)}
}

func benchDedupeCapacity(b *testing.B, bin string, n int) {
	store := b.TempDir()
	srv := startCapacityServer(b, bin, store)

	// The bucket is made by the daemon's own dedupe.Open, on a connection
	// opened the daemon's way, so that what is measured is what trackd creates.
	cfg := config.Defaults()
	cfg.NATS.URL = srv.url
	bucket := cfg.Dedupe.Bucket // with one shard the bucket is named as configured
	bs, err := bus.Open(&cfg, bus.Watch{})
	if err != nil {
		b.Fatal(err)
	}
	// Should the benchmark fail first: the daemon's connection would
	// otherwise try to reconnect to the dead server for ever.
	b.Cleanup(bs.Conn.Close)
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	claimer, err := dedupe.Open(ctx, bs.JS, cfg.Dedupe, cfg.NATS.Replicas)
	if err != nil {
		b.Fatal(err)
	}
	empty := srv.mem(b)

	start := time.Now()
	capacityClaim(b, claimer, n)
	claimTook := time.Since(start)
	bs.Close()
	// The peak while writing, not only the heap the keys hold, is what the
	// machine must have: the Go runtime lets the heap grow to twice what is
	// live before it collects.
	peak := procPeakRSS(b, srv.cmd.Process.Pid) * mib
	written := srv.mem(b)
	indexAfterWrites := indexDB(store, bucket)

	// A crash first, while the claims are fresh: a live server has always
	// taken claims since it last wrote index.db, and above 1M keys it no
	// longer writes one until it stops. (Killed after a clean restart, it
	// would find the index.db of that stop still current.)
	srv.halt(b, syscall.SIGKILL)
	srv = startCapacityServer(b, bin, store)
	crashTook := waitBucket(b, srv, bucket, n)
	crash := srv.mem(b)
	crashLog := srv.bucketLog(bucket)

	stopTook := srv.halt(b, syscall.SIGTERM)
	indexAfterStop := indexDB(store, bucket)
	srv = startCapacityServer(b, bin, store)
	cleanTook := waitBucket(b, srv, bucket, n)
	clean := srv.mem(b)
	cleanLog := srv.bucketLog(bucket)

	// A crash of a server that has taken no claim since its start: the
	// index.db of the clean stop is still current, so this is no slower than
	// a clean restart. Only logged; the crash above is the one to plan for.
	srv.halt(b, syscall.SIGKILL)
	indexAfterIdleKill := indexDB(store, bucket)
	srv = startCapacityServer(b, bin, store)
	idleCrashTook := waitBucket(b, srv, bucket, n)
	idleCrashLog := srv.bucketLog(bucket)
	srv.halt(b, syscall.SIGTERM)
	disk := dirBytes(b, store)

	rate := float64(n) / claimTook.Seconds()
	perKey := clean.perKey(empty, n)
	peakPerKey := (peak - empty.rss) / float64(n)
	b.Logf("empty server: rss %.0f MiB, heap %.0f MiB", empty.rss/mib, empty.heap/mib)
	b.Logf("claims took %.1fs; after them: peak rss %.0f MiB (%.0f B/key), rss %.0f MiB, heap %.0f MiB after GC (%.0f / %.0f B/key); index.db %s",
		claimTook.Seconds(), peak/mib, peakPerKey, written.rss/mib, written.heap/mib,
		written.perKey(empty, n).rss, written.perKey(empty, n).heap, indexAfterWrites)
	b.Logf("after kill -9: answered with %d keys in %.2fs; rss %.0f MiB, heap %.0f MiB (%.0f / %.0f B/key); server said: %s",
		n, crashTook.Seconds(), crash.rss/mib, crash.heap/mib, crash.perKey(empty, n).rss, crash.perKey(empty, n).heap, crashLog)
	b.Logf("clean stop took %.2fs, index.db %s; restart answered in %.2fs; rss %.0f MiB, heap %.0f MiB (%.0f / %.0f B/key); server said: %s",
		stopTook.Seconds(), indexAfterStop, cleanTook.Seconds(), clean.rss/mib, clean.heap/mib, perKey.rss, perKey.heap, cleanLog)
	b.Logf("kill -9 after that restart, index.db %s: answered in %.2fs; server said: %s",
		indexAfterIdleKill, idleCrashTook.Seconds(), idleCrashLog)

	b.ReportMetric(rate, "claims/s")
	b.ReportMetric(perKey.heap, "heap-B/key")
	b.ReportMetric(perKey.rss, "rss-B/key")
	b.ReportMetric(peakPerKey, "peak-rss-B/key")
	b.ReportMetric(clean.rss/mib, "rss-MiB")
	b.ReportMetric(cleanTook.Seconds(), "clean-restart-s")
	b.ReportMetric(crashTook.Seconds(), "kill9-restart-s")
	b.ReportMetric(float64(disk)/mib, "disk-MiB")
	fmt.Printf("bench: dedupe capacity %d keys: claims %.0f/s, server %.0f B/key heap, %.0f B/key rss after restart (rss %.0f MiB), %.0f B/key peak rss while writing, restart %.1f s clean / %.1f s after kill -9, %.0f MiB on disk\n",
		n, rate, perKey.heap, perKey.rss, clean.rss/mib, peakPerKey, cleanTook.Seconds(), crashTook.Seconds(), float64(disk)/mib)
}

// capacityClaim claims n distinct messageIds, keeping capacityInFlight
// batches unanswered, and fails unless every one is a first sighting.
func capacityClaim(b *testing.B, claimer *dedupe.Claimer, n int) {
	var inFlight []*dedupe.Pending
	settle := func() {
		ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
		defer cancel()
		first, err := inFlight[0].Wait(ctx)
		if err != nil {
			b.Fatalf("claims not answered: %v", err)
		}
		for _, f := range first {
			if !f {
				b.Fatal("a distinct messageId was taken for a repeat")
			}
		}
		inFlight = inFlight[1:]
	}
	for i := 0; i < n; i += capacityBatch {
		claims := make([]dedupe.Claim, min(capacityBatch, n-i))
		for j := range claims {
			claims[j] = dedupe.Claim{MessageID: eventtest.MessageID(i + j), Seq: uint64(i + j + 1)}
		}
		if len(inFlight) == capacityInFlight {
			settle()
		}
		p, err := claimer.Start(claims)
		if err != nil {
			b.Fatal(err)
		}
		inFlight = append(inFlight, p)
	}
	for len(inFlight) > 0 {
		settle()
	}
}

// capacityServer is a nats-server process like startNATSServer's, on a given
// store so that it can be restarted on it, with its profiling port open for
// heap readings and its log kept.
type capacityServer struct {
	*natsServer
	profURL string
	logs    *lockedBuffer
	start   time.Time // when the process was started
}

// startCapacityServer starts a nats-server on store and returns once it takes
// connections, which it does only once JetStream has recovered its streams.
func startCapacityServer(b *testing.B, bin, store string) *capacityServer {
	host, port, err := net.SplitHostPort(freePort(b))
	if err != nil {
		b.Fatal(err)
	}
	_, prof, err := net.SplitHostPort(freePort(b))
	if err != nil {
		b.Fatal(err)
	}
	s := &capacityServer{
		natsServer: &natsServer{
			url:    "nats://" + net.JoinHostPort(host, port),
			cmd:    exec.Command(bin, "--jetstream", "--store_dir", store, "--addr", host, "--port", port, "--profile", prof),
			exited: make(chan struct{}),
		},
		profURL: "http://" + net.JoinHostPort(host, prof),
		logs:    &lockedBuffer{},
	}
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.start = time.Now()
	if err := s.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	// Whatever happens, the process does not outlive the benchmark; its
	// store is thrown away, so it need not stop cleanly.
	b.Cleanup(func() { _ = s.cmd.Process.Kill(); <-s.exited })
	deadline := time.Now().Add(benchWaitLimit)
	for {
		nc, err := nats.Connect(s.url)
		if err == nil {
			nc.Close()
			return s
		}
		select {
		case <-s.exited:
			b.Fatalf("nats-server exited before it answered:\n%s", s.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("nats-server did not answer within %s: %v", benchWaitLimit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// halt sends sig and waits for the process to exit, returning how long that
// took.
func (s *capacityServer) halt(b *testing.B, sig syscall.Signal) time.Duration {
	start := time.Now()
	_ = s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(benchWaitLimit):
		b.Fatalf("nats-server did not exit within %s of %v", benchWaitLimit, sig)
	}
	return time.Since(start)
}

// mem reads the server's RSS, then its heap after a GC: the heap profile
// endpoint collects first when asked to with gc=1, and its text form ends
// with the runtime's MemStats.
func (s *capacityServer) mem(b *testing.B) capacityMem {
	rss := procStatusKB(b, s.cmd.Process.Pid, "VmRSS") * 1024
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Get(s.profURL + "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			heap, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return capacityMem{rss: rss, heap: heap}
		}
	}
	b.Fatalf("no HeapAlloc in the server's heap profile (%v)", sc.Err())
	return capacityMem{}
}

// bucketLog is what the server logged about the bucket's stream, such as
// how it recovered it.
func (s *capacityServer) bucketLog(bucket string) string {
	var lines []string
	for l := range strings.Lines(s.logs.String()) {
		if strings.Contains(l, "KV_"+bucket) {
			// From the level on: the pid, date and time go.
			if _, rest, ok := strings.Cut(l, "] "); ok {
				if i := strings.IndexByte(rest, '['); i >= 0 {
					l = rest[i:]
				}
			}
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
	}
	if len(lines) == 0 {
		return "nothing"
	}
	return strings.Join(lines, "; ")
}

// waitBucket waits until the bucket answers and returns how long that took
// from the server's start, failing unless it holds n keys. The server takes
// connections only once it has recovered its streams, so its first answer is
// the final count.
func waitBucket(b *testing.B, s *capacityServer, bucket string, n int) time.Duration {
	nc, js := benchConnect(b, s.url)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(b.Context(), benchWaitLimit)
	defer cancel()
	for {
		kv, err := js.KeyValue(ctx, bucket)
		var st jetstream.KeyValueStatus
		if err == nil {
			st, err = kv.Status(ctx)
		}
		if err == nil {
			if st.Values() != uint64(n) {
				b.Fatalf("bucket %s holds %d keys after the restart, want %d", bucket, st.Values(), n)
			}
			return time.Since(s.start)
		}
		if ctx.Err() != nil {
			b.Fatalf("bucket %s did not answer within %s of the restart: %v", bucket, benchWaitLimit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// indexDB describes the bucket stream's index.db: the state the server
// reloads instead of scanning every message block.
func indexDB(store, bucket string) string {
	matches, _ := filepath.Glob(filepath.Join(store, "jetstream", "*", "streams", "KV_"+bucket, "msgs", "index.db"))
	if len(matches) == 0 {
		return "absent"
	}
	fi, err := os.Stat(matches[0])
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%.1f MiB, written %s ago", float64(fi.Size())/mib, time.Since(fi.ModTime()).Round(time.Millisecond))
}

// dirBytes is the size of the files under dir.
func dirBytes(b *testing.B, dir string) int64 {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return total
}

// procStatusKB is a "kB" field of /proc/<pid>/status, such as VmRSS, the
// resident set now (procPeakRSS reads VmHWM, its peak).
func procStatusKB(b *testing.B, pid int, field string) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for l := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
