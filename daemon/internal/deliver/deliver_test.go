package deliver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

func TestBackoff(t *testing.T) {
	r := config.Retry{Initial: time.Second, Max: 10 * time.Second}
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
	last     map[string]time.Time // when each messageId was last tried
}

func (e *endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var ev struct {
		MessageID string `json:"messageId"`
	}
	_ = json.NewDecoder(r.Body).Decode(&ev)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tries[ev.MessageID]++
	if e.last != nil {
		e.last[ev.MessageID] = time.Now()
	}
	switch id := ev.MessageID; {
	case id == "bad-1":
		http.Error(w, "unknown project", http.StatusBadRequest)
	case strings.HasPrefix(id, "down-"), id == "flaky-1" && e.tries[id] <= 2:
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
	b, topo := bustest.Open(t)
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
	d := hookDeliverer(t, b.JS, cons, srv.URL, 10, config.Retry{
		Initial: 20 * time.Millisecond, Max: 100 * time.Millisecond,
		MaxAttempts: 3, MaxAge: time.Hour,
	})

	for _, ev := range []struct{ id, dests string }{
		{"ok-1", "other,hook"}, {"bad-1", "hook"}, {"flaky-1", "hook"}, {"down-1", "hook"}, {"other-1", "other"},
	} {
		msg := nats.NewMsg(bus.RoutedSubject)
		msg.Header.Set(HeaderDestinations, ev.dests)
		msg.Data = []byte(`{"event":"Order Completed","messageId":"` + ev.id + `","userId":"u1","timestamp":"2026-01-02T03:04:05.000Z","receivedAt":"2026-01-02T03:04:05.000Z","type":"track","version":2}`)
		if _, err := b.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	letters := deadLetters(t, b.JS, "hook", 2)
	bad, down := letters["bad-1"], letters["down-1"]
	if bad == nil || down == nil {
		t.Fatalf("dead letters %v, want bad-1 and down-1", letters)
	}
	for _, h := range []nats.Header{bad, down} {
		if h.Get(dlq.HeaderDestination) != "hook" || h.Get(dlq.HeaderStage) != "deliver" {
			t.Errorf("dead letter headers %v", h)
		}
	}
	if got := bad.Get(dlq.HeaderError); !strings.Contains(got, "400") || !strings.Contains(got, "unknown project") {
		t.Errorf("drop reason %q does not give the status and body", got)
	}
	if got := bad.Get(dlq.HeaderAttempts); got != "1" {
		t.Errorf("dropped event attempts = %s, want 1", got)
	}
	if got := down.Get(dlq.HeaderError); !strings.Contains(got, "gave up after 3 attempts") || !strings.Contains(got, "503") {
		t.Errorf("exhausted reason %q", got)
	}
	if got := down.Get(dlq.HeaderAttempts); got != "3" {
		t.Errorf("exhausted event attempts = %s, want 3", got)
	}
	bustest.WaitFor(t, func() bool { return slices.Equal(ep.got(), []string{"flaky-1", "ok-1"}) })
	ep.mu.Lock()
	defer ep.mu.Unlock()
	if ep.tries["other-1"] != 0 {
		t.Error("an event routed only to another destination was delivered here")
	}
	if ep.tries["flaky-1"] != 3 || ep.tries["down-1"] != 3 {
		t.Errorf("tries = %v; want flaky-1 and down-1 tried 3 times", ep.tries)
	}
}

// testMaxInFlight is the destinations' max_in_flight, as by default.
const testMaxInFlight = 4

// hookDeliverer runs destination "hook": the webhook plugin posting to url.
func hookDeliverer(t *testing.T, js jetstream.JetStream, cons jetstream.Consumer, url string, batch int, retry config.Retry) *Deliverer {
	t.Helper()
	m := metrics.New()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	host := pluginhost.New(pluginhost.Spec{ID: "hook", Path: destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), Dir: t.TempDir(),
		// A long timeout: the tests' endpoints that hold requests decide when they end.
		Settings: map[string]any{"url": url, "timeout": "2m"}}, log, m.PluginRestarts.WithLabelValues("hook"))
	t.Cleanup(host.Close)
	return New("hook", js, cons, host, WithBatchSize(batch), WithMetrics(m), WithLogger(log), WithRetry(retry),
		WithMaxInFlight(testMaxInFlight), WithDirectTimeout(2*time.Second))
}

// deadLetters reads n dead letters of a destination, by messageId.
func deadLetters(t *testing.T, js jetstream.JetStream, dest string, n int) map[string]nats.Header {
	t.Helper()
	cons, err := js.OrderedConsumer(t.Context(), dlq.Stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{dlq.Subject(dest)}})
	if err != nil {
		t.Fatal(err)
	}
	letters := map[string]nats.Header{}
	for len(letters) < n {
		msg, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
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
	return letters
}

// TestDirectPath offers events straight to the plugin, as the router does
// while the destination keeps up: the accepted one is done, the dropped one
// is dead-lettered as attempt 1, and the retried one is not done and says when
// to try again. Handed to the destination's consumer with that time, as the
// router does, it is not tried before then, and the direct attempt counts
// towards max_attempts.
func TestDirectPath(t *testing.T) {
	b, topo := bustest.Open(t)
	ctx := t.Context()
	ep := &endpoint{tries: map[string]int{}, last: map[string]time.Time{}}
	srv := httptest.NewServer(ep)
	defer srv.Close()
	d := runHook(t, b, topo, srv.URL, 2, config.Retry{
		Initial: 300 * time.Millisecond, Max: time.Second,
		MaxAttempts: 2, MaxAge: time.Hour,
	})
	events := directEvents("ok-1", "bad-1", "down-1")
	out := d.Await(offerWhenDirect(t, d, events))
	if len(out) != 3 || !out[0].Done || !out[1].Done || out[2].Done || out[2].RetryAt.IsZero() {
		t.Fatalf("outcomes %+v; want ok-1 and bad-1 done, down-1 to retry at a time", out)
	}
	if got := ep.got(); !slices.Equal(got, []string{"ok-1"}) {
		t.Errorf("accepted %v, want ok-1", got)
	}

	handOff := func(ev sdk.Event, retryAt time.Time) {
		msg := nats.NewMsg(bus.RoutedSubjectFor("hook"))
		msg.Header.Set(HeaderDestinations, "hook")
		msg.Header.Set(HeaderRetryAt, retryAt.Format(time.RFC3339Nano))
		msg.Data = ev.JSON
		if _, err := b.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	handOff(events[2], out[2].RetryAt)
	// One whose retry time has passed by the time the consumer reads it: its
	// direct attempt counts all the same.
	handOff(directEvents("down-2")[0], time.Now().Add(-time.Minute))
	letters := deadLetters(t, b.JS, "hook", 3)
	if got := letters["bad-1"].Get(dlq.HeaderAttempts); got != "1" {
		t.Errorf("dropped event attempts = %q, want 1", got)
	}
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for id, directTries := range map[string]int{"down-1": 1, "down-2": 0} {
		if got := letters[id].Get(dlq.HeaderAttempts); got != "2" {
			t.Errorf("%s: exhausted event attempts = %q, want 2 (the direct one and one from the consumer)", id, got)
		}
		if want := directTries + 1; ep.tries[id] != want {
			t.Errorf("%s tried %d times here, want %d (dead letter: %s)", id, ep.tries[id], want, letters[id].Get(dlq.HeaderError))
		}
	}
	if ep.last["down-1"].Before(out[2].RetryAt) {
		t.Errorf("down-1 tried again at %v, before its retry time %v", ep.last["down-1"], out[2].RetryAt)
	}
}

// TestDirectPathSlowAnswer: a destination that does not answer within
// DirectTimeout leaves the direct path; an offer still waiting behind the slow
// calls (all MaxInFlight of them) is withdrawn untried, while the one the
// plugin has is waited for, so no event is both delivered and handed to the
// consumer.
func TestDirectPathSlowAnswer(t *testing.T) {
	b, topo := bustest.Open(t)
	release := make(chan struct{})
	var mu sync.Mutex
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			MessageID string `json:"messageId"`
		}
		_ = json.NewDecoder(r.Body).Decode(&ev)
		mu.Lock()
		seen[ev.MessageID] = true
		mu.Unlock()
		<-release
	}))
	defer srv.Close()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	// Batches of one: the slow offer takes every call the direct path may make.
	d := runHook(t, b, topo, srv.URL, 1, defaultRetry)
	var slowIDs []string
	for i := range testMaxInFlight {
		slowIDs = append(slowIDs, fmt.Sprintf("slow-%d", i+1))
	}
	slow := offerWhenDirect(t, d, directEvents(slowIDs...))
	behind := d.Offer(directEvents("behind-1"), make([]time.Time, 1))
	if behind == nil {
		t.Fatal("a second offer was refused with room in the queue")
	}
	if out := d.Await(behind); out != nil {
		t.Fatalf("the offer behind a slow call was answered %+v; want it withdrawn (nil)", out)
	}
	if d.Offer(directEvents("after-1"), make([]time.Time, 1)) != nil {
		t.Error("the destination took an offer after failing to answer in time")
	}
	close(release)
	released = true
	out := d.Await(slow)
	if len(out) != len(slowIDs) || slices.ContainsFunc(out, func(o Outcome) bool { return !o.Done }) {
		t.Fatalf("the slow calls' outcomes %+v; want all delivered", out)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, id := range slowIDs {
		if !seen[id] {
			t.Errorf("the destination did not see %s", id)
		}
	}
	if len(seen) != len(slowIDs) {
		t.Errorf("the destination saw %v; want the slow offer's events only", seen)
	}
}

// TestDirectPathCallsOverlap: an offer larger than batch_size goes to the
// plugin in several calls, and they are under way together, so a destination
// whose API answers slowly is not limited to one batch per answer.
func TestDirectPathCallsOverlap(t *testing.T) {
	b, topo := bustest.Open(t)
	url, most := rendezvous(t)
	d := runHook(t, b, topo, url, 1, defaultRetry)
	out := d.Await(offerWhenDirect(t, d, directEvents("a-1", "b-1")))
	if len(out) != 2 || !out[0].Done || !out[1].Done {
		t.Fatalf("outcomes %+v; want both delivered", out)
	}
	if got := most(); got < 2 {
		t.Errorf("at most %d plugin calls were under way at once; want the offer's 2 calls together", got)
	}
}

// TestDirectPathOffersJoin: offers that queue while every plugin call is
// under way go to the plugin together, in one call, when one is free.
func TestDirectPathOffersJoin(t *testing.T) {
	b, topo := bustest.Open(t)
	release := make(chan struct{})
	var held atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev struct {
			MessageID string `json:"messageId"`
		}
		_ = json.NewDecoder(r.Body).Decode(&ev)
		if strings.HasPrefix(ev.MessageID, "slow-") {
			held.Add(1)
			<-release
		}
	}))
	defer srv.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	// Each slow offer fills a call of three, so it joins no other.
	d := runHook(t, b, topo, srv.URL, 3, defaultRetry)
	var offers []*Offered
	for i := range testMaxInFlight {
		offers = append(offers, offerWhenDirect(t, d, directEvents(fmt.Sprintf("slow-%d-a", i), fmt.Sprintf("slow-%d-b", i), fmt.Sprintf("slow-%d-c", i))))
	}
	bustest.WaitFor(t, func() bool { return held.Load() == 3*testMaxInFlight })
	for i := range 3 {
		o := d.Offer(directEvents(fmt.Sprintf("join-%d", i+1)), make([]time.Time, 1))
		if o == nil {
			t.Fatal("an offer was refused with room in the queue")
		}
		offers = append(offers, o)
	}
	close(release)
	for i, o := range offers {
		if out := d.Await(o); len(out) != len(o.events) || slices.ContainsFunc(out, func(o Outcome) bool { return !o.Done }) {
			t.Fatalf("offer %d: outcomes %+v; want its events delivered", i, out)
		}
	}
	var m dto.Metric
	if err := d.metrics.BatchSeconds.WithLabelValues("hook").(prometheus.Histogram).Write(&m); err != nil {
		t.Fatal(err)
	}
	if got, want := m.GetHistogram().GetSampleCount(), uint64(testMaxInFlight+1); got != want {
		t.Errorf("%d plugin calls; want %d: one per slow offer, and one for the three offers that waited", got, want)
	}
}

// TestConsumerCallsOverlap: batches from a destination's consumer (retries,
// backlogs) go to the plugin together too.
func TestConsumerCallsOverlap(t *testing.T) {
	b, topo := bustest.Open(t)
	url, most := rendezvous(t)
	d := runHook(t, b, topo, url, 1, defaultRetry)
	var last uint64
	for _, ev := range directEvents("a-1", "b-1") {
		msg := nats.NewMsg(bus.RoutedSubjectFor("hook"))
		msg.Header.Set(HeaderDestinations, "hook")
		msg.Data = ev.JSON
		ack, err := b.JS.PublishMsg(t.Context(), msg)
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	// Not d.caughtUp: the server counts a stored message as pending for a
	// consumer a moment after it acknowledges the publish, so the consumer
	// can look caught up before it has seen either message.
	bustest.WaitFor(t, func() bool {
		info, err := d.consumer.Info(t.Context())
		return err == nil && info.AckFloor.Stream >= last
	})
	if got := most(); got < 2 {
		t.Errorf("at most %d plugin calls were under way at once; want the consumer's 2 batches together", got)
	}
}

// rendezvous is an endpoint that holds each request until a second one
// arrives (or a minute has passed: longer than the tests wait), and most
// reports how many requests it has held at once.
func rendezvous(t *testing.T) (url string, most func() int) {
	var (
		mu       sync.Mutex
		inFlight int
		peak     int
		together = make(chan struct{})
	)
	closeTogether := sync.OnceFunc(func() { close(together) })
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		peak = max(peak, inFlight)
		if inFlight == 2 {
			closeTogether()
		}
		mu.Unlock()
		select {
		case <-together:
		case <-time.After(time.Minute):
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func() int {
		mu.Lock()
		defer mu.Unlock()
		return peak
	}
}

// defaultRetry is a retry policy for tests that do not look at retries.
var defaultRetry = config.Retry{
	Initial: time.Second, Max: time.Second,
	MaxAttempts: 3, MaxAge: time.Hour,
}

// runHook runs destination "hook" (the webhook plugin posting to url) until
// the test ends.
func runHook(t *testing.T, b *bus.Bus, topo *bus.Topology, url string, batch int, retry config.Retry) *Deliverer {
	t.Helper()
	cons, err := topo.Destination(t.Context(), "hook", 100)
	if err != nil {
		t.Fatal(err)
	}
	d := hookDeliverer(t, b.JS, cons, url, batch, retry)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

// directEvents are normalized events with the given messageIds.
func directEvents(ids ...string) []sdk.Event {
	var events []sdk.Event
	for _, id := range ids {
		events = append(events, sdk.Event{
			JSON: []byte(`{"event":"Order Completed","messageId":"` + id + `","userId":"u1","timestamp":"2026-01-02T03:04:05.000Z",` +
				`"receivedAt":"2026-01-02T03:04:05.000Z","type":"track","version":2}`),
			MessageID: id, Name: "Order Completed", UserID: "u1",
		})
	}
	return events
}

// offerWhenDirect offers events as soon as the destination is on the direct path.
func offerWhenDirect(t *testing.T, d *Deliverer, events []sdk.Event) *Offered {
	t.Helper()
	var o *Offered
	bustest.WaitFor(t, func() bool {
		o = d.Offer(events, make([]time.Time, len(events)))
		return o != nil
	})
	return o
}
