package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/eventtest"
	"trackd.dev/trackd/sdk/destinationtest"
)

// Invariant 11: a stream at its limit refuses producers instead of dropping
// anything accepted. With the router's consumer paused, the tracking API fills
// TRACK up to ingest.max_bytes, then answers 503 with Retry-After and a NATS
// publish fails; the stream stays within its bound; once the router resumes,
// every call answered 200 is delivered.
func TestFullIngestStreamPushesBack(t *testing.T) {
	const maxBytes = 2 << 20
	h := newHook(t)
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(
		"[destinations.hook]\nplugin = %q\n[destinations.hook.settings]\nurl = %q\n",
		destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), h.URL))
	d.header = strings.Replace(d.header, `max_bytes = "512MiB"`, fmt.Sprintf("max_bytes = %d", maxBytes), 1)
	d.serveHTTP(t)
	d.start(t, "/readyz")
	api := d.apiURL
	_, js := connectJS(t, d.natsURL)
	if _, err := js.PauseConsumer(t.Context(), "TRACK", bus.RouterConsumer, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	var accepted []string
	var refused *http.Response
	var refusal string
	for b := 0; b < 100 && refused == nil; b++ {
		var body bytes.Buffer
		var ids []string
		body.WriteString(`{"batch":[`)
		for i := range 100 {
			id := fmt.Sprintf("bp-%d-%d", b, i)
			ids = append(ids, id)
			if i > 0 {
				body.WriteByte(',')
			}
			body.Write(eventtest.OrderCompleted(b*100+i, id))
		}
		body.WriteString(`]}`)
		req, err := http.NewRequest(http.MethodPost, api+"/v1/batch", &body)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth(testWriteKey, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			accepted = append(accepted, ids...)
		case http.StatusServiceUnavailable:
			refused, refusal = resp, string(msg)
		default:
			t.Fatalf("batch %d answered %s: %s", b, resp.Status, msg)
		}
	}
	if refused == nil {
		t.Fatalf("%d calls accepted with the router paused and ingest.max_bytes = %d; none refused", len(accepted), maxBytes)
	}
	if refused.Header.Get("Retry-After") == "" || !strings.Contains(refusal, "ingest.max_bytes") {
		t.Errorf("the refusal has Retry-After %q and says %s; want a Retry-After and ingest.max_bytes named", refused.Header.Get("Retry-After"), refusal)
	}
	if len(accepted) == 0 {
		t.Fatal("no call was accepted before the stream was full")
	}
	if _, err := js.Publish(t.Context(), "track", eventtest.OrderCompleted(0, "bp-nats")); err == nil {
		t.Error("a NATS publish to the full stream succeeded")
	}
	s, err := js.Stream(t.Context(), "TRACK")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().State.Bytes; got > maxBytes {
		t.Errorf("TRACK holds %d bytes, over ingest.max_bytes %d", got, maxBytes)
	}
	if got := d.metric(t, `trackd_stream_max_bytes{stream="TRACK"}`); got != maxBytes {
		t.Errorf("trackd_stream_max_bytes = %v, want %d", got, maxBytes)
	}
	if got := d.metric(t, `trackd_stream_bytes{stream="TRACK"}`); got == 0 || got > maxBytes {
		t.Errorf("trackd_stream_bytes = %v, want the full stream's size, at most %d", got, maxBytes)
	}

	if _, err := js.ResumeConsumer(t.Context(), "TRACK", bus.RouterConsumer); err != nil {
		t.Fatal(err)
	}
	// Thousands of calls of 1 KB, each a webhook request of its own, under
	// the race detector on a slow machine.
	waitForLong(t, "every accepted call delivered", func() bool {
		for _, id := range accepted {
			if h.event(id) == nil {
				return false
			}
		}
		return true
	})
	t.Logf("%d calls accepted before the stream was full; the refusal: %s", len(accepted), refusal)
	var answer struct {
		Success bool `json:"success"`
	}
	if err := json.Unmarshal([]byte(refusal), &answer); err != nil || answer.Success {
		t.Errorf("the refusal's body %s is not {\"success\": false, ...}", refusal)
	}
}
