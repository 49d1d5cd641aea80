package publish_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/sdk/publish"
)

// startServer runs a nats-server with JetStream on a random local port.
func startServer(storeDir string) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: storeDir,
		NoSigs: true, NoLog: true,
	})
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("nats-server did not start")
	}
	return srv, nil
}

// setup starts a server with a TRACK stream bound to track and track.>, and
// connects to it.
func setup(t *testing.T) (*nats.Conn, jetstream.JetStream, jetstream.Stream) {
	t.Helper()
	srv, err := startServer(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "TRACK", Subjects: []string{"track", "track.>"}})
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, stream
}

// stored returns the body of the stream's message seq as a JSON object.
func stored(t *testing.T, stream jetstream.Stream, seq uint64) (map[string]any, []byte) {
	t.Helper()
	msg, err := stream.GetMsg(t.Context(), seq)
	if err != nil {
		t.Fatalf("message %d: %v", seq, err)
	}
	var ev map[string]any
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		t.Fatalf("message %d is not a JSON object: %v: %s", seq, err, msg.Data)
	}
	return ev, msg.Data
}

func parseTime(t *testing.T, ev map[string]any, key string) time.Time {
	t.Helper()
	s, _ := ev[key].(string)
	at, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatalf("%s = %q: %v", key, ev[key], err)
	}
	return at
}

func TestTrackFillsFields(t *testing.T) {
	_, js, stream := setup(t)
	c := publish.New(js, publish.Options{})
	callerContext := map[string]any{"ip": "10.0.0.1"}
	before := time.Now().Truncate(time.Millisecond)
	id, err := c.Track(t.Context(), publish.Event{
		Event: "Order Completed", UserID: "u1",
		Properties:   map[string]any{"revenue": 18.9, "currency": "USD"},
		Context:      callerContext,
		Integrations: map[string]any{"All": false, "Mixpanel": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	if failed := c.Flush(t.Context()); len(failed) != 0 {
		t.Fatalf("Flush: %v", failed)
	}

	ev, _ := stored(t, stream, 1)
	if _, err := uuid.Parse(id); err != nil || ev["messageId"] != id {
		t.Errorf("messageId = %v, Track returned %q; want the same UUID", ev["messageId"], id)
	}
	if ev["type"] != "track" || ev["event"] != "Order Completed" || ev["userId"] != "u1" {
		t.Errorf("type, event or userId wrong: %v", ev)
	}
	if _, ok := ev["anonymousId"]; ok {
		t.Errorf("an empty anonymousId was sent: %v", ev)
	}
	if p := ev["properties"].(map[string]any); p["revenue"] != 18.9 || p["currency"] != "USD" {
		t.Errorf("properties = %v", p)
	}
	if i := ev["integrations"].(map[string]any); i["All"] != false || i["Mixpanel"] != true {
		t.Errorf("integrations = %v", i)
	}
	ctx := ev["context"].(map[string]any)
	lib, _ := ctx["library"].(map[string]any)
	if ctx["ip"] != "10.0.0.1" || lib["name"] != "trackd-go" || lib["version"] == "" {
		t.Errorf("context = %v, want ip kept and library trackd-go with a version", ctx)
	}
	if len(callerContext) != 1 {
		t.Errorf("Track changed the caller's Context map: %v", callerContext)
	}
	if _, ok := ev["timestamp"]; ok {
		t.Errorf("timestamp sent though Event.Timestamp was zero: %v", ev)
	}
	original, sent := parseTime(t, ev, "originalTimestamp"), parseTime(t, ev, "sentAt")
	if original.Before(before) || sent.Before(original) {
		t.Errorf("originalTimestamp %v, sentAt %v: want call time ≤ send time, both after %v", original, sent, before)
	}
}

func TestTrackKeepsTimestampAndMessageID(t *testing.T) {
	_, js, stream := setup(t)
	c := publish.New(js, publish.Options{Subject: "track.backfill", Library: "shop-importer"})
	happened := time.Date(2024, 3, 1, 12, 30, 0, 250e6, time.FixedZone("CET", 3600))
	id, err := c.Track(t.Context(), publish.Event{
		Event: "Signed Up", AnonymousID: "a1", MessageID: "import-42", Timestamp: happened,
		Context: map[string]any{"library": map[string]any{"name": "mine"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if failed := c.Close(t.Context()); len(failed) != 0 {
		t.Fatalf("Close: %v", failed)
	}
	ev, _ := stored(t, stream, 1)
	if id != "import-42" || ev["messageId"] != "import-42" {
		t.Errorf("messageId %v (returned %q), want import-42 kept", ev["messageId"], id)
	}
	if ev["timestamp"] != "2024-03-01T11:30:00.250Z" {
		t.Errorf("timestamp = %v, want 2024-03-01T11:30:00.250Z", ev["timestamp"])
	}
	if lib := ev["context"].(map[string]any)["library"].(map[string]any); lib["name"] != "mine" {
		t.Errorf("context.library = %v, want the caller's kept", lib)
	}
}

func TestTrackRefusesInvalidEvents(t *testing.T) {
	_, js, stream := setup(t)
	c := publish.New(js, publish.Options{})
	for _, tc := range []struct {
		name  string
		event publish.Event
		field string
	}{
		{"no event name", publish.Event{UserID: "u1"}, "Event"},
		{"no user", publish.Event{Event: "Signed Up"}, "UserID and AnonymousID"},
		{"long messageId", publish.Event{Event: "Signed Up", UserID: "u1", MessageID: strings.Repeat("x", 101)}, "MessageID"},
		{"integration a string", publish.Event{Event: "Signed Up", UserID: "u1", Integrations: map[string]any{"Mixpanel": "yes"}}, `Integrations["Mixpanel"]`},
		{"property not JSON", publish.Event{Event: "Signed Up", UserID: "u1", Properties: map[string]any{"f": func() {}}}, "Properties"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := c.Track(t.Context(), tc.event)
			if !errors.Is(err, publish.ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Errorf("Track = %q, %v; want ErrInvalid naming %s", id, err, tc.field)
			}
		})
	}
	if failed := c.Flush(t.Context()); len(failed) != 0 {
		t.Errorf("Flush: %v", failed)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Errorf("%d invalid events were sent", info.State.Msgs)
	}
}

func TestPublishRawSendsBytesUnchanged(t *testing.T) {
	_, js, stream := setup(t)
	c := publish.New(js, publish.Options{})
	body := []byte(`{ "event":"Signed Up",  "userId":42, "custom":[1,2] }`)
	want := string(body)
	if err := c.PublishRaw(t.Context(), "line 1", body); err != nil {
		t.Fatal(err)
	}
	copy(body, "XXXX")
	if failed := c.Flush(t.Context()); len(failed) != 0 {
		t.Fatalf("Flush: %v", failed)
	}
	if _, got := stored(t, stream, 1); string(got) != want {
		t.Errorf("stored %s, want %s", got, want)
	}
}

// A responder that holds its replies plays a JetStream whose acknowledgements are slow.
func TestTrackWaitsForAFreeSlot(t *testing.T) {
	nc, js, _ := setup(t)
	held := make(chan *nats.Msg, 10)
	sub, err := nc.ChanSubscribe("held", held)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	ack := func(m *nats.Msg) {
		t.Helper()
		if err := m.Respond([]byte(`{"stream":"HELD","seq":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	c := publish.New(js, publish.Options{Subject: "held", MaxInFlight: 2})
	ev := publish.Event{Event: "Signed Up", UserID: "u1"}
	for range 2 {
		if _, err := c.Track(t.Context(), ev); err != nil {
			t.Fatal(err)
		}
	}

	full, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if id, err := c.Track(full, ev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Track with the window full = %q, %v; want it to wait until ctx is done", id, err)
	}

	ack(<-held)
	third, err := c.Track(t.Context(), ev)
	if err != nil {
		t.Fatalf("Track after an acknowledgement freed a slot: %v", err)
	}
	ack(<-held)

	// The third is still held: a Flush that gives up reports it, once.
	// Before its marker is queued, Flush must wait for the slot the second
	// event frees once the collector has handled that event's acknowledgement,
	// which can take well over 100 ms under -race on a loaded machine; a
	// deadline hit that early would report the second event too. The deadline
	// is generous because the third event is acknowledged only after Flush
	// returns (and js has no acknowledgement timeout), so Flush always waits
	// for the whole of it and the outcome does not depend on its length.
	soon, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	failed := c.Flush(soon)
	if len(failed) != 1 || failed[0].MessageID != third || !errors.Is(failed[0].Err, context.DeadlineExceeded) {
		t.Fatalf("Flush that gave up = %v, want the third event (%s) failed with ctx's error", failed, third)
	}
	ack(<-held)
	if failed := c.Close(t.Context()); len(failed) != 0 {
		t.Errorf("Close reported again what Flush gave up on: %v", failed)
	}
	if len(held) != 0 {
		t.Errorf("%d more messages were published than Track accepted", len(held))
	}
}

func TestFlushReturnsFailures(t *testing.T) {
	_, js, _ := setup(t)
	c := publish.New(js, publish.Options{Subject: "nowhere"})
	id, err := c.Track(t.Context(), publish.Event{Event: "Signed Up", UserID: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.PublishRaw(t.Context(), "events.jsonl:2", []byte(`{"event":"Signed Up","userId":"u2"}`)); err != nil {
		t.Fatal(err)
	}
	failed := c.Flush(t.Context())
	var ids []string
	for _, f := range failed {
		ids = append(ids, f.MessageID)
		if !errors.Is(f.Err, jetstream.ErrNoStreamResponse) {
			t.Errorf("%s failed with %v, want %v", f.MessageID, f.Err, jetstream.ErrNoStreamResponse)
		}
	}
	if want := []string{id, "events.jsonl:2"}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Errorf("failed %v, want %v in publish order", ids, want)
	}
	if again := c.Flush(t.Context()); len(again) != 0 {
		t.Errorf("a second Flush returned the failures again: %v", again)
	}
}

func TestClosedClientRefusesEvents(t *testing.T) {
	_, js, _ := setup(t)
	c := publish.New(js, publish.Options{})
	if failed := c.Close(t.Context()); len(failed) != 0 {
		t.Fatalf("Close: %v", failed)
	}
	if _, err := c.Track(t.Context(), publish.Event{Event: "Signed Up", UserID: "u1"}); !errors.Is(err, publish.ErrClosed) {
		t.Errorf("Track after Close: %v, want ErrClosed", err)
	}
	if failed := c.Flush(t.Context()); len(failed) != 0 {
		t.Errorf("Flush after Close: %v", failed)
	}
}
