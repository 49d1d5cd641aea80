//go:build cluster

// The tests of a NATS cluster (SPEC §8, DESIGN invariant 7): a three-node
// JetStream cluster in this process, R3 streams and buckets, three dedupe
// shards and two daemons sharing the work. Under -race on two cores they take
// over a minute, more than make test has room for, so they run with the
// cluster build tag:
//
//	go test -race -tags cluster -run TestCluster ./daemon
package main

import (
	"context"
	"fmt"
	"iter"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus/clustertest"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/publish"
)

// clusterRig is a cluster, a webhook destination and two daemons on the same
// configuration, not yet started.
type clusterRig struct {
	cluster *clustertest.Cluster
	hook    *markedHook
	daemons [2]*daemon
	js      jetstream.JetStream // for the tests' own look at the streams
}

// newClusterRig configures the daemons with replicas = 3, shards = 3 and the
// further [dedupe] keys given.
func newClusterRig(t *testing.T, dedupe string) *clusterRig {
	t.Helper()
	// First, so that its cleanup runs last, after the daemons have stopped.
	c := clustertest.Start(t)
	r := &clusterRig{cluster: c, hook: newMarkedHook(t)}
	bin := destinationtest.Build(t, "trackd.dev/trackd/daemon")
	dests := fmt.Sprintf(`
[destinations.hook]
plugin = %q
[destinations.hook.settings]
url = %q
`, destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), r.hook.URL)
	for i := range r.daemons {
		d := newDaemon(t, bin, dests)
		d.natsURL = c.URLs()
		d.header = fmt.Sprintf(`
[nats]
url = %q
replicas = 3
[dedupe]
shards = 3
%s
[ingest]
max_bytes = "512MiB"
[dlq]
max_bytes = "64MiB"
[admin]
listen = %q
[log]
level = "debug"
`, d.natsURL, dedupe, strings.TrimPrefix(d.adminURL, "http://"))
		d.writeConfig(t, dests)
		r.daemons[i] = d
	}
	_, r.js = connectJS(t, c.URLs())
	return r
}

// markedHook is a counter that also records deliveries of events published
// as repeats (properties.repeat = true). At-least-once lets an original
// arrive twice after a crash; a repeat must never arrive at all.
type markedHook struct {
	*counter
	// Under counter.mu: the messageIds delivered as repeats, and how many
	// distinct originals arrived (counter.counts walks them all).
	repeats   []string
	originals int
}

func newMarkedHook(t *testing.T) *markedHook {
	h := &markedHook{counter: &counter{seen: map[string]int{}}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			MessageID  string `json:"messageId"`
			Properties struct {
				Repeat bool `json:"repeat"`
			} `json:"properties"`
		}
		if err := jsonDecode(r, &ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		if ev.Properties.Repeat {
			h.repeats = append(h.repeats, ev.MessageID)
			return
		}
		if h.seen[ev.MessageID]++; h.seen[ev.MessageID] == 1 {
			h.originals++
		}
	}))
	t.Cleanup(h.Close)
	return h
}

// repeated returns the messageIds delivered as repeats.
func (h *markedHook) repeated() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.repeats...)
}

// arrived returns how many distinct originals arrived.
func (h *markedHook) arrived() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.originals
}

// waitArrived waits until at least n distinct originals have arrived.
func (h *markedHook) waitArrived(t *testing.T, n int) {
	t.Helper()
	waitForLong(t, fmt.Sprintf("%d deliveries", n), func() bool { return h.arrived() >= n })
}

// delivered returns those of ids delivered at least once.
func (h *markedHook) delivered(ids []string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, id := range ids {
		if h.seen[id] > 0 {
			out = append(out, id)
		}
	}
	return out
}

// checkExactlyOnce fails the test unless each of ids arrived exactly once.
func (h *markedHook) checkExactlyOnce(t *testing.T, ids []string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	var wrong []string
	for _, id := range ids {
		if n := h.seen[id]; n != 1 {
			wrong = append(wrong, fmt.Sprintf("%s×%d", id, n))
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d events did not arrive exactly once, e.g. %v", len(wrong), len(ids), wrong[:min(5, len(wrong))])
	}
}

func (h *markedHook) checkNoRepeats(t *testing.T) {
	t.Helper()
	if got := h.repeated(); len(got) > 0 {
		t.Errorf("%d events published as repeats were delivered, e.g. %v", len(got), got[:min(5, len(got))])
	}
}

func eventIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%06d", prefix, i)
	}
	return ids
}

// markedBody is an event with the messageId, marked as a repeat or not.
func markedBody(id string, repeat bool) []byte {
	return fmt.Appendf(nil, `{"event":"Order Completed","userId":"user-%s","messageId":%q,"properties":{"repeat":%t,"revenue":9.99}}`, id, id, repeat)
}

// publishAcked publishes one event per id and returns those JetStream
// acknowledged; the others may or may not have been stored. js needs an
// acknowledgement timeout, so that an ack lost with a server is a failure.
// It does not touch t, so that it may run on its own goroutine.
func publishAcked(ctx context.Context, js jetstream.JetStream, ids iter.Seq[string], repeat bool) []string {
	client := publish.New(js, publish.Options{})
	var sent []string
	failed := map[string]bool{}
	for id := range ids {
		sent = append(sent, id)
		if err := client.PublishRaw(ctx, id, markedBody(id, repeat)); err != nil {
			failed[id] = true
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for _, f := range client.Close(cctx) {
		failed[f.MessageID] = true
	}
	acked := make([]string, 0, len(sent))
	for _, id := range sent {
		if !failed[id] {
			acked = append(acked, id)
		}
	}
	return acked
}

// publishMarked publishes one event per id, failing the test unless all are acknowledged.
func (r *clusterRig) publishMarked(t *testing.T, ids []string, repeat bool) {
	t.Helper()
	if acked := publishAcked(t.Context(), r.js, slices.Values(ids), repeat); len(acked) != len(ids) {
		t.Fatalf("only %d of %d publishes were acknowledged", len(acked), len(ids))
	}
}

// waitDrained waits until every ingest message is acked (the ingest stream
// is a work queue) and the destination's queue is empty: every event is then
// delivered or dropped, so what the hook has is final.
func (r *clusterRig) waitDrained(t *testing.T) {
	t.Helper()
	var last string
	drained := false
	defer func() {
		if !drained {
			t.Logf("last look at the streams: %s", last)
		}
	}()
	waitForLong(t, "the ingest stream and the destination's queue to drain", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		ingest, err := r.js.Stream(ctx, "TRACK")
		if err != nil {
			last = err.Error()
			return false
		}
		queue, err := r.js.Consumer(ctx, "TRACK_ROUTED", "dest_hook")
		if err != nil {
			last = err.Error()
			return false
		}
		ci := queue.CachedInfo()
		last = fmt.Sprintf("TRACK holds %d, dest_hook has %d pending and %d unacked",
			ingest.CachedInfo().State.Msgs, ci.NumPending, ci.NumAckPending)
		drained = ingest.CachedInfo().State.Msgs == 0 && ci.NumPending == 0 && ci.NumAckPending == 0
		return drained
	})
}

const (
	received     = "trackd_events_received_total"
	deduplicated = "trackd_events_deduplicated_total"
	delivered    = `trackd_events_delivered_total{destination="hook"}`
)

// (a) Two daemons share one stream of events: each delivers part, none is
// lost, and with no fault none is delivered twice.
func TestClusterShareWork(t *testing.T) {
	r := newClusterRig(t, "")
	for _, d := range r.daemons {
		d.start(t, "/readyz")
	}
	ids := publishEvents(t, r.cluster.URLs(), "share", 5000)
	waitDelivered(t, r.hook.counter, len(ids))
	if missing := r.hook.missing(ids); len(missing) > 0 {
		t.Fatalf("%d events never arrived, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	r.waitDrained(t)
	r.hook.checkExactlyOnce(t, ids)
	var sum float64
	for i, d := range r.daemons {
		got, del := d.metric(t, received), d.metric(t, delivered)
		t.Logf("daemon %d received %v events and delivered %v", i, got, del)
		// Both daemons pull from the shared consumer all along, and the
		// server hands waiting pulls messages in turn.
		if got == 0 || del == 0 {
			t.Errorf("daemon %d received %v and delivered %v events; it took no part", i, got, del)
		}
		sum += del
	}
	if sum != float64(len(ids)) {
		t.Errorf("the daemons delivered %v events between them, want %d", sum, len(ids))
	}
}

// (b) A messageId published twice, the original handled by one daemon and
// the repeat by the other, is delivered once: the dedupe state is the
// cluster's, not a daemon's. Each daemon in turn runs alone, so that which one
// handled which is certain; then both run and the repeats go where they may.
func TestClusterRepeatAcrossDaemons(t *testing.T) {
	r := newClusterRig(t, "")
	a, b := r.daemons[0], r.daemons[1]
	const n = 300
	// The repeat of an original goes out once the original has arrived, so the
	// original's claim certainly came first.
	originalsThenRepeats := func(ids []string, first, second *daemon) {
		t.Helper()
		r.publishMarked(t, ids, false)
		waitFor(t, "the originals", func() bool { return len(r.hook.delivered(ids)) == len(ids) })
		if second != first {
			second.start(t, "/readyz")
			if code := first.stop(t); code != 0 {
				t.Errorf("SIGTERM: exit code %d, want 0", code)
			}
		}
		r.publishMarked(t, ids, true)
		r.waitDrained(t)
	}

	a.start(t, "/readyz")
	viaA := eventIDs("a-then-b", n)
	originalsThenRepeats(viaA, a, b)
	if got := b.metric(t, deduplicated); got != n {
		t.Errorf("daemon b dropped %v repeats of daemon a's originals, want %d", got, n)
	}
	viaB := eventIDs("b-then-a", n)
	originalsThenRepeats(viaB, b, a)
	if got := a.metric(t, deduplicated); got != n {
		t.Errorf("daemon a dropped %v repeats of daemon b's originals, want %d", got, n)
	}

	b.start(t, "/readyz")
	both := eventIDs("both", n)
	originalsThenRepeats(both, a, a)
	if got := a.metric(t, deduplicated) + b.metric(t, deduplicated); got != 2*n {
		t.Errorf("the daemons dropped %v repeats between them, want %d", got, 2*n)
	}
	t.Logf("with both running, daemon a dropped %v repeats and daemon b %v", a.metric(t, deduplicated)-n, b.metric(t, deduplicated))

	r.hook.checkNoRepeats(t)
	for _, ids := range [][]string{viaA, viaB, both} {
		r.hook.checkExactlyOnce(t, ids)
	}
}

// (c) Invariant 7 under load: the NATS server leading the ingest stream, to
// which one daemon is connected, is shut down; then the other daemon is
// killed with SIGKILL. Every event the publisher got an ack for is delivered,
// no event published as a repeat is, and the surviving daemon, which had to
// reconnect, goes on delivering alone.
func TestClusterServerLossAndKillNine(t *testing.T) {
	r := newClusterRig(t, "")
	victim, survivor := r.daemons[0], r.daemons[1]
	// The daemons start one after the other, so that the connection that
	// appears with the survivor is its own.
	victim.start(t, "/readyz")
	before := r.cluster.Clients("trackd")
	survivor.start(t, "/readyz")
	survivorOn := -1
	for i, n := range r.cluster.Clients("trackd") {
		if n > before[i] {
			survivorOn = i
		}
	}
	if survivorOn < 0 {
		t.Fatal("no NATS server has the survivor's connection")
	}
	nc, _ := connectJS(t, r.cluster.URLs())
	// An ack lost with the server shut down becomes a failure, not a wait forever.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}

	// The load goes on through both faults: events are published as long as
	// the test wants, keeping a backlog of about this many not yet delivered.
	const backlog = 3000
	loadID := func(i int) string { return fmt.Sprintf("load-%06d", i) }
	stopLoad, loadDone := make(chan struct{}), make(chan struct{})
	var acked []string
	go func() {
		defer close(loadDone)
		acked = publishAcked(t.Context(), js, func(yield func(string) bool) {
			for i := 0; ; i++ {
				for i-r.hook.arrived() >= backlog {
					select {
					case <-stopLoad:
						return
					case <-time.After(10 * time.Millisecond):
					}
				}
				select {
				case <-stopLoad:
					return
				default:
				}
				if !yield(loadID(i)) {
					return
				}
			}
		}, false)
	}()

	// Meanwhile, a repeat of each original once it has arrived.
	stopRepeats, repeatsDone := make(chan struct{}), make(chan struct{})
	var repeats int
	go func() {
		defer close(repeatsDone)
		for next := 0; ; {
			select {
			case <-stopRepeats:
				return
			case <-time.After(100 * time.Millisecond):
			}
			var ids []string
			for len(ids) < 200 && len(r.hook.delivered([]string{loadID(next)})) == 1 {
				ids = append(ids, loadID(next))
				next++
			}
			repeats += len(publishAcked(t.Context(), js, slices.Values(ids), true))
		}
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			close(stopLoad)
			close(stopRepeats)
			<-loadDone
			<-repeatsDone
		}
	}
	defer stop()

	r.hook.waitArrived(t, 2000)
	// The server lost is the survivor's too, so that it must reconnect.
	r.cluster.MoveStreamLeader("TRACK", survivorOn)
	lost := r.cluster.ShutdownStreamLeader("TRACK")
	atLoss := r.hook.arrived()
	t.Logf("shut down NATS server %d, the leader of TRACK and the survivor's server, after %d deliveries", lost, atLoss)
	// The daemons reconnect to the other servers by themselves.
	r.hook.waitArrived(t, atLoss+2000)
	victim.kill9(t)
	atKill := r.hook.arrived()
	t.Logf("killed daemon 0 after %d deliveries", atKill)
	// The survivor alone, after both faults.
	r.hook.waitArrived(t, atKill+2000)
	stop()

	t.Logf("%d events acknowledged to the publisher, %d repeats", len(acked), repeats)
	waitForLong(t, "every acknowledged event", func() bool { return len(r.hook.missing(acked)) == 0 })
	r.waitDrained(t)
	r.hook.checkNoRepeats(t)
	unique, dups := r.hook.counts()
	t.Logf("%d events delivered, %d duplicate deliveries of originals; the survivor dropped %v repeats",
		unique, dups, survivor.metric(t, deduplicated))
	if repeats == 0 {
		t.Error("no repeat was published; the test proves nothing about them")
	}
	resp, err := http.Get(survivor.adminURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("the survivor's /readyz = %d, want 200", resp.StatusCode)
	}
}

// (d) dedupe.max_keys caps what each bucket holds: 3,000 unique events over
// three buckets of at most 1,000 are all delivered (a full bucket drops its
// oldest claims, it never refuses a new one), and no bucket holds more.
func TestClusterDedupeCap(t *testing.T) {
	const maxKeys, n = 1000, 3000
	r := newClusterRig(t, fmt.Sprintf("max_keys = %d", maxKeys))
	for _, d := range r.daemons {
		d.start(t, "/readyz")
	}
	ids := publishEvents(t, r.cluster.URLs(), "cap", n)
	waitDelivered(t, r.hook.counter, n)
	if missing := r.hook.missing(ids); len(missing) > 0 {
		t.Fatalf("%d events never arrived, e.g. %v", len(missing), missing[:min(5, len(missing))])
	}
	r.waitDrained(t)

	var held uint64
	for i := range 3 {
		bucket := fmt.Sprintf("TRACK_DEDUPE_%d", i)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		s, err := r.js.Stream(ctx, "KV_"+bucket)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		keys := s.CachedInfo().State.Msgs
		held += keys
		if keys > maxKeys {
			t.Errorf("bucket %s holds %d keys, over max_keys = %d", bucket, keys, maxKeys)
		}
		// Each daemon reads the bucket's state every 5 s.
		gauge := fmt.Sprintf("trackd_dedupe_keys{bucket=%q}", bucket)
		for k, d := range r.daemons {
			waitFor(t, fmt.Sprintf("daemon %d's %s to show %d", k, gauge, keys), func() bool {
				return d.metric(t, gauge) == float64(keys)
			})
		}
		evicted := fmt.Sprintf("trackd_dedupe_evicted_total{bucket=%q}", bucket)
		t.Logf("bucket %s holds %d keys; %s = %v and %v", bucket, keys, evicted, r.daemons[0].metric(t, evicted), r.daemons[1].metric(t, evicted))
	}
	// The ids are fixed, and so is how their hashes spread over the shards:
	// some shard gets more than a third of them, so some claims were dropped.
	if held >= n {
		t.Errorf("the buckets hold %d keys for %d events: max_keys dropped nothing", held, n)
	}
	if full := "dedupe bucket is full"; !strings.Contains(r.daemons[0].logs.String()+r.daemons[1].logs.String(), full) {
		t.Errorf("neither daemon logged %q", full)
	}
}
