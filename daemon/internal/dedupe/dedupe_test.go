package dedupe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/metrics"
)

func TestClaimAll(t *testing.T) {
	c := openClaimer(t, func(*config.Dedupe) {})
	ctx := t.Context()

	steps := []struct {
		name   string
		claims []Claim
		want   []bool
	}{
		{"first sighting", []Claim{{"a", 1}}, []bool{true}},
		{"redelivery of the same ingest message is not a repeat", []Claim{{"a", 1}}, []bool{true}},
		{"another message with the same id is a repeat", []Claim{{"a", 2}}, []bool{false}},
		{"a repeat inside one batch", []Claim{{"b", 3}, {"c", 4}, {"b", 5}}, []bool{true, true, false}},
		{"ids with characters keys do not allow", []Claim{{"order #7 / ü", 6}, {"order #7 / ü", 7}}, []bool{true, false}},
		{"empty batch", nil, []bool{}},
	}
	for _, s := range steps {
		got, err := c.ClaimAll(ctx, s.claims)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
}

// With a short window, a messageId is accepted again once its claim expires.
func TestWindowExpires(t *testing.T) {
	c := openClaimer(t, func(d *config.Dedupe) { d.Window = 5 * time.Second })
	ctx := t.Context()

	first, err := c.ClaimAll(ctx, []Claim{{"x", 1}})
	if err != nil || !first[0] {
		t.Fatalf("first claim = %v, %v", first, err)
	}
	again, err := c.ClaimAll(ctx, []Claim{{"x", 2}})
	if err != nil || again[0] {
		t.Fatalf("repeat inside the window = %v, %v; want a repeat", again, err)
	}
	// Expiry runs on the server's schedule; poll rather than assume when.
	deadline := time.Now().Add(30 * time.Second)
	for seq := uint64(3); ; seq++ {
		got, err := c.ClaimAll(ctx, []Claim{{"x", seq}})
		if err != nil {
			t.Fatal(err)
		}
		if got[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the messageId was never accepted again after the window")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestKey(t *testing.T) {
	key := func(id string) string { return keyOf(sha256.Sum256([]byte(id))) }
	k := key("order #7 / ü")
	if len(k) != 22 {
		t.Errorf("Key length %d, want 22", len(k))
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			t.Fatalf("Key %q has %q, which KV keys do not allow", k, r)
		}
	}
	if key("a") == key("b") {
		t.Error("different ids share a key")
	}
}

// With shards, each messageId lives in the bucket its hash picks, the claims of
// one batch spread over all of them, and repeats are still caught.
func TestShards(t *testing.T) {
	c := openClaimer(t, func(d *config.Dedupe) { d.Shards = 3 })
	if len(c.buckets) != 3 || c.buckets[2].kv.Bucket() != "TRACK_DEDUPE_2" {
		t.Fatalf("buckets %v, want TRACK_DEDUPE_0 … _2", c.buckets)
	}
	ctx := t.Context()
	var claims []Claim
	for i := range 300 {
		claims = append(claims, Claim{fmt.Sprintf("id-%d", i), uint64(i + 1)})
	}
	first, err := c.ClaimAll(ctx, claims)
	if err != nil || slices.Contains(first, false) {
		t.Fatalf("first sightings = %v, %v", first, err)
	}
	for _, b := range c.buckets {
		kv := b.kv
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 100 each on average; any bucket left empty or taking all would be a bad spread.
		if n := st.Values(); n < 50 || n > 150 {
			t.Errorf("bucket %s holds %d of 300 claims", kv.Bucket(), n)
		}
	}
	for i := range claims {
		claims[i].Seq += 1000
	}
	again, err := c.ClaimAll(ctx, claims)
	if err != nil || slices.Contains(again, true) {
		t.Fatalf("repeats = %v, %v; want every one a repeat", again, err)
	}
	own, err := c.ClaimAll(ctx, []Claim{{"id-7", 8}})
	if err != nil || !own[0] {
		t.Errorf("a redelivery across shards = %v, %v; want it not a repeat", own, err)
	}
}

// A bucket with max_keys drops its oldest claims when full: no claim is ever
// refused, it holds max_keys at most, and the dropped ids can be claimed again.
func TestMaxKeys(t *testing.T) {
	c := openClaimer(t, func(d *config.Dedupe) { d.MaxKeys = 10 })
	ctx := t.Context()
	for i := range 30 {
		got, err := c.ClaimAll(ctx, []Claim{{fmt.Sprintf("id-%d", i), uint64(i + 1)}})
		if err != nil || !got[0] {
			t.Fatalf("claim %d = %v, %v; want a first sighting", i, got, err)
		}
	}
	st, err := c.buckets[0].kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Values() != 10 {
		t.Errorf("the bucket holds %d claims, want max_keys = 10", st.Values())
	}
	got, err := c.ClaimAll(ctx, []Claim{{"id-29", 100}, {"id-0", 101}})
	if err != nil || got[0] || !got[1] {
		t.Errorf("claims = %v, %v; want the newest a repeat and the dropped oldest a first sighting", got, err)
	}
}

// Watch reports each bucket's keys and effective window, and counts what a
// full bucket drops.
func TestWatch(t *testing.T) {
	c := openClaimer(t, func(d *config.Dedupe) { d.MaxKeys = 5 })
	m := metrics.New()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	go c.Watch(ctx, 20*time.Millisecond, m, log)

	// One pipelined batch, most likely between two looks.
	claim := func(from, to int) {
		var claims []Claim
		for i := from; i < to; i++ {
			claims = append(claims, Claim{fmt.Sprintf("id-%d", i), uint64(i + 1)})
		}
		if _, err := c.ClaimAll(ctx, claims); err != nil {
			t.Fatal(err)
		}
	}
	// Each wait covers every gauge, counter and line of one look, since a
	// look sets them one after another.
	window := func() float64 { return gauge(m.DedupeWindow.WithLabelValues("TRACK_DEDUPE")) }
	claim(0, 3)
	bustest.WaitFor(t, func() bool { return gauge(m.DedupeKeys.WithLabelValues("TRACK_DEDUPE")) == 3 && window() > 0 })
	if w := window(); w > 3600 {
		t.Errorf("effective window %v s, want the age of the oldest claim", w)
	}
	// The bucket fills, and drops 12 of the 17.
	claim(3, 17)
	evicted := func() float64 { return counter(m.DedupeEvicted.WithLabelValues("TRACK_DEDUPE")) }
	bustest.WaitFor(t, func() bool { return evicted() >= 12 && strings.Contains(logs.String(), "dedupe bucket is full") })
	if n := evicted(); n != 12 {
		t.Errorf("counted %v claims dropped, want 12", n)
	}
	if n := strings.Count(logs.String(), "dedupe bucket is full"); n != 1 {
		t.Errorf("logged the full bucket %d times, want once:\n%s", n, logs.String())
	}
}

func gauge(g prometheus.Gauge) float64 {
	var m dto.Metric
	_ = g.Write(&m)
	return m.GetGauge().GetValue()
}

func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

// syncBuffer is a log the watcher writes while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// openClaimer starts a server and opens the buckets of the default [dedupe]
// as set changes it.
func openClaimer(t testing.TB, set func(*config.Dedupe)) *Claimer {
	t.Helper()
	b, _ := bustest.Open(t)
	cfg := config.Defaults().Dedupe
	set(&cfg)
	c, err := Open(t.Context(), b.JS, cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
