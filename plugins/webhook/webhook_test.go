package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/webhook"

// names are the events the receiver knows how to answer.
var names = []string{"ok", "unavailable", "limited", "bad", "broken"}

// newReceiver starts a webhook receiver that answers according to the
// event's "event" field, so one batch can exercise every answer.
func newReceiver(t *testing.T) *destinationtest.Server {
	return destinationtest.NewServer(t, func(r destinationtest.Request) destinationtest.Answer {
		switch nameOf(r) {
		case "ok":
			return destinationtest.Answer{}
		case "unavailable":
			return destinationtest.Answer{Status: http.StatusServiceUnavailable, Header: map[string]string{"Retry-After": "7"}}
		case "limited":
			return destinationtest.Answer{Status: http.StatusTooManyRequests}
		case "bad":
			return destinationtest.Answer{Status: http.StatusBadRequest, Body: "bad thing"}
		}
		return destinationtest.Answer{Status: http.StatusInternalServerError}
	})
}

// nameOf is the name of the event r carries, one of names or "".
func nameOf(r destinationtest.Request) string {
	for _, n := range names {
		if strings.Contains(string(r.Body), `"event":"`+n+`"`) {
			return n
		}
	}
	return ""
}

// last returns the last request the receiver got for the event name.
func last(rc *destinationtest.Server, name string) destinationtest.Request {
	var got destinationtest.Request
	for _, r := range rc.Requests() {
		if nameOf(r) == name {
			got = r
		}
	}
	return got
}

func event(t *testing.T, name string) sdk.Event {
	// The properties keep the producer's spacing, which the plugin must
	// not touch.
	return destinationtest.Event(t, destinationtest.Track{
		Name:       name,
		MessageID:  "m-" + name,
		UserID:     "u-1",
		Properties: `{"revenue":19.99, "currency":"EUR"}`,
	})
}

func TestDeliver(t *testing.T) {
	rc := newReceiver(t)
	const secret = "s3cret"
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
		"url":     rc.URL + "/hook",
		"secret":  secret,
		"headers": map[string]any{"Authorization": "Bearer tok"},
	})

	batch := make([]sdk.Event, len(names))
	for i, n := range names {
		batch[i] = event(t, n)
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{
		sdk.OK(),
		sdk.Retry(7*time.Second, "503"),
		sdk.Retry(0, "429"),
		sdk.Drop("400 Bad Request: bad thing"),
		sdk.Retry(0, "500"),
	})

	for _, e := range batch {
		got := last(rc, e.Name)
		if string(got.Body) != string(e.JSON) {
			t.Errorf("%s: body %q, want the event unchanged: %q", e.Name, got.Body, e.JSON)
		}
		if got.Method != "POST" {
			t.Errorf("%s: method %s, want POST", e.Name, got.Method)
		}
		for k, v := range map[string]string{
			"Content-Type":  "application/json",
			"User-Agent":    "trackd-webhook",
			"Authorization": "Bearer tok",
		} {
			if got.Header.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", e.Name, k, got.Header.Get(k), v)
			}
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(got.Body)
		if sig, want := got.Header.Get("X-Signature"), "sha256="+hex.EncodeToString(mac.Sum(nil)); sig != want {
			t.Errorf("%s: X-Signature %q, want %q", e.Name, sig, want)
		}
	}
}

// With batch, the calls go as JSON arrays within batch_bytes, each unchanged,
// the signature covers the whole body, and a request's answer is each of its
// calls' result.
func TestBatch(t *testing.T) {
	var calls []sdk.Event
	for i := range 10 {
		calls = append(calls, destinationtest.Event(t, destinationtest.Call{Type: sdk.AllTypes()[i%6], Name: "n", MessageID: fmt.Sprintf("m%d", i), UserID: "u", GroupID: "g", PreviousID: "p"}))
	}
	calls = append(calls, event(t, "bad"))
	size := len(calls[0].JSON) + 1
	rc := destinationtest.NewServer(t, func(r destinationtest.Request) destinationtest.Answer {
		if strings.Contains(string(r.Body), `"event":"bad"`) {
			return destinationtest.Answer{Status: http.StatusBadRequest, Body: "no"}
		}
		return destinationtest.Answer{}
	})
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
		"url": rc.URL, "batch": true, "batch_bytes": int64(4*size + 2), "secret": "s", "concurrency": int64(1),
	})
	results := destinationtest.Deliver(t, c, calls)
	want := slices.Repeat([]sdk.Result{sdk.OK()}, 8)
	want = append(want, slices.Repeat([]sdk.Result{sdk.Drop("400 Bad Request: no")}, 3)...)
	destinationtest.CheckResults(t, results, want)

	var got []json.RawMessage
	for _, r := range rc.Requests() {
		var array []json.RawMessage
		if err := json.Unmarshal(r.Body, &array); err != nil {
			t.Fatalf("a request's body is not a JSON array: %v\n%s", err, r.Body)
		}
		if len(r.Body) > 4*size+2 {
			t.Errorf("a request of %d bytes, over batch_bytes", len(r.Body))
		}
		mac := hmac.New(sha256.New, []byte("s"))
		mac.Write(r.Body)
		if sig := r.Header.Get("X-Signature"); sig != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("X-Signature %q does not sign the array", sig)
		}
		got = append(got, array...)
	}
	if len(rc.Requests()) != 3 || len(got) != len(calls) {
		t.Fatalf("%d requests carrying %d calls, want 3 carrying %d", len(rc.Requests()), len(got), len(calls))
	}
	for i, e := range calls {
		if string(got[i]) != string(e.JSON) {
			t.Errorf("call %d sent as %s, want it unchanged: %s", i, got[i], e.JSON)
		}
	}
}

func TestMethodAndNoSignature(t *testing.T) {
	rc := newReceiver(t)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"url": rc.URL, "method": "put"})
	destinationtest.Deliver(t, c, []sdk.Event{event(t, "ok")})
	got := last(rc, "ok")
	if got.Method != "PUT" {
		t.Errorf("method %s, want PUT", got.Method)
	}
	if sig := got.Header.Get("X-Signature"); sig != "" {
		t.Errorf("X-Signature %q without a secret, want none", sig)
	}
}

func TestUnreachableRetries(t *testing.T) {
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"url": destinationtest.HangUpURL(t)})
	results := destinationtest.Deliver(t, c, []sdk.Event{event(t, "ok")})
	if results[0].Status != sdk.StatusRetry {
		t.Errorf("unreachable receiver: %v (%q), want retry", results[0].Status, results[0].Reason)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	const limit, events = 3, 7
	inFlight := destinationtest.NewInFlight(limit)
	srv := destinationtest.NewServer(t, inFlight.Answer)

	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
		"url": srv.URL, "concurrency": int64(limit),
		// Above the time InFlight may hold a request, so that the plugin
		// does not give up on one while the others are still on their way.
		"timeout": (2 * destinationtest.InFlightWait).String(),
	})
	batch := make([]sdk.Event, events)
	for i := range batch {
		batch[i] = event(t, "ok")
	}
	for i, r := range destinationtest.Deliver(t, c, batch) {
		if r.Status != sdk.StatusOK {
			t.Errorf("event %d: %v (%q), want ok", i, r.Status, r.Reason)
		}
	}
	if most := inFlight.Most(); most != limit {
		t.Errorf("at most %d requests were in flight together, want %d", most, limit)
	}
}

func TestConfigureErrors(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"missing url", nil, "url is empty"},
		{"not http", map[string]any{"url": "ftp://example.com/x"}, `url "ftp://example.com/x" is not an http`},
		{"no host", map[string]any{"url": "https:///x"}, "url"},
		{"not a url", map[string]any{"url": "example.com/hook"}, `url "example.com/hook"`},
		{"bad timeout", map[string]any{"url": "http://example.com", "timeout": "soon"}, `setting "timeout"`},
		{"zero timeout", map[string]any{"url": "http://example.com", "timeout": "0s"}, "timeout"},
		{"bad concurrency", map[string]any{"url": "http://example.com", "concurrency": int64(0)}, "concurrency"},
		{"bad batch_bytes", map[string]any{"url": "http://example.com", "batch": true, "batch_bytes": int64(0)}, "batch_bytes is 0"},
		{"bad method", map[string]any{"url": "http://example.com", "method": "GET IT"}, "method"},
		{"bad header name", map[string]any{"url": "http://example.com", "headers": map[string]any{"X Team": "a"}}, `headers: "X Team"`},
		{"unknown setting", map[string]any{"url": "http://example.com", "secrett": "x"}, `unknown setting "secrett"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
		})
	}
}

func TestSampleConfig(t *testing.T) {
	// Configure makes no network calls, so example.com is never contacted.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg))
}
