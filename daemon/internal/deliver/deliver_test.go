package deliver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

func TestBackoff(t *testing.T) {
	r := config.Retry{Initial: config.Duration{Duration: time.Second}, Max: config.Duration{Duration: 10 * time.Second}}
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 800 * time.Millisecond, 1200 * time.Millisecond},
		{2, 1600 * time.Millisecond, 2400 * time.Millisecond},
		{3, 3200 * time.Millisecond, 4800 * time.Millisecond},
		{4, 6400 * time.Millisecond, 9600 * time.Millisecond},
		{5, 8 * time.Second, 10 * time.Second},
		{60, 8 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		for range 100 {
			if got := backoff(r, tt.attempt); got < tt.min || got > tt.max {
				t.Fatalf("backoff(attempt %d) = %v, want within [%v, %v]", tt.attempt, got, tt.min, tt.max)
			}
		}
	}
}

// endpoint answers by messageId: "bad-*" 400, "down-*" always 503, "flaky-*"
// 503 twice and then 200, anything else 200. It records what it accepted.
type endpoint struct {
	mu       sync.Mutex
	accepted []string
	tries    map[string]int
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		MessageID string `json:"messageId"`
	}
	_ = json.NewDecoder(r.Body).Decode(&ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tries[ev.MessageID]++
	switch id := ev.MessageID; {
	case id == "bad-1":
		http.Error(w, "unknown project", http.StatusBadRequest)
	case id == "down-1", id == "flaky-1" && e.tries[id] <= 2:
		http.Error(w, "busy", http.StatusServiceUnavailable)
	default:
		e.accepted = append(e.accepted, id)
	}
}

func (e *endpoint) got() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Sorted(slices.Values(e.accepted))
}

func TestRetriesAndDeadLetters(t *testing.T) {
	b, topo := bustest.Open(t, time.Hour)
	ctx := t.Context()
	ep := &endpoint{tries: map[string]int{}}
	srv := httptest.NewServer(ep)
	defer srv.Close()

	cons, err := topo.Destination(ctx, "hook", 100)
	if err != nil {
		t.Fatal(err)
	}
	// Another destination's consumer keeps "other-1" in the stream for it.
	if _, err := topo.Destination(ctx, "other", 100); err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bin := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	host, err := pluginhost.New("hook", bin, t.TempDir(), map[string]any{"url": srv.URL}, log, m.PluginRestarts.WithLabelValues("hook"))
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	d := &Deliverer{
		ID: "hook", JS: b.JS, Consumer: cons, Host: host, BatchSize: 10, Metrics: m, Log: log,
		Retry: config.Retry{
			Initial: config.Duration{Duration: 20 * time.Millisecond}, Max: config.Duration{Duration: 100 * time.Millisecond},
			MaxAttempts: 3, MaxAge: config.Duration{Duration: time.Hour},
		},
	}

	for _, ev := range []struct{ id, dests string }{
		{"ok-1", "other,hook"}, {"bad-1", "hook"}, {"flaky-1", "hook"}, {"down-1", "hook"}, {"other-1", "other"},
	} {
		msg := nats.NewMsg(bus.RoutedSubject)
		msg.Header.Set(bus.HeaderDestinations, ev.dests)
		msg.Data = []byte(`{"event":"Order Completed","messageId":"` + ev.id + `","userId":"u1","timestamp":"2026-01-02T03:04:05.000Z","receivedAt":"2026-01-02T03:04:05.000Z","type":"track","version":2}`)
		if _, err := b.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	dlq, err := b.JS.OrderedConsumer(ctx, bus.DLQStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.DLQPrefix + "hook"}})
	if err != nil {
		t.Fatal(err)
	}
	letters := map[string]nats.Header{}
	for len(letters) < 2 {
		msg, err := dlq.Next(jetstream.FetchMaxWait(30 * time.Second))
		if err != nil {
			t.Fatalf("dead letters so far %v: %v", letters, err)
		}
		var ev struct {
			MessageID string `json:"messageId"`
		}
		if err := json.Unmarshal(msg.Data(), &ev); err != nil {
			t.Fatalf("dead letter body %q: %v", msg.Data(), err)
		}
		letters[ev.MessageID] = msg.Headers()
	}
	bad, down := letters["bad-1"], letters["down-1"]
	if bad == nil || down == nil {
		t.Fatalf("dead letters %v, want bad-1 and down-1", letters)
	}
	for _, h := range []nats.Header{bad, down} {
		if h.Get(bus.HeaderDestination) != "hook" || h.Get(bus.HeaderStage) != "deliver" {
			t.Errorf("dead letter headers %v", h)
		}
	}
	if got := bad.Get(bus.HeaderError); !strings.Contains(got, "400") || !strings.Contains(got, "unknown project") {
		t.Errorf("drop reason %q does not give the status and body", got)
	}
	if got := bad.Get(bus.HeaderAttempts); got != "1" {
		t.Errorf("dropped event attempts = %s, want 1", got)
	}
	if got := down.Get(bus.HeaderError); !strings.Contains(got, "gave up after 3 attempts") || !strings.Contains(got, "503") {
		t.Errorf("exhausted reason %q", got)
	}
	if got := down.Get(bus.HeaderAttempts); got != "3" {
		t.Errorf("exhausted event attempts = %s, want 3", got)
	}
	waitFor(t, func() bool { return slices.Equal(ep.got(), []string{"flaky-1", "ok-1"}) })
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.tries["other-1"] != 0 {
		t.Error("an event routed only to another destination was delivered here")
	}
	if ep.tries["flaky-1"] != 3 || ep.tries["down-1"] != 3 {
		t.Errorf("tries = %v; want flaky-1 and down-1 tried 3 times", ep.tries)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
