package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/webhook"

// request is what the receiver saw of one request.
type request struct {
	method string
	header http.Header
	body   []byte
}

// receiver is a webhook receiver that answers according to the event's
// "event" field, so one batch can exercise every answer.
type receiver struct {
	mu       sync.Mutex
	requests map[string]request // by event name
}

func newReceiver(t *testing.T) (*receiver, *httptest.Server) {
	rc := &receiver{requests: make(map[string]request)}
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)
	return rc, srv
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var name string
	for _, n := range []string{"ok", "unavailable", "limited", "bad", "broken"} {
		if strings.Contains(string(body), `"event":"`+n+`"`) {
			name = n
		}
	}
	rc.mu.Lock()
	rc.requests[name] = request{method: r.Method, header: r.Header.Clone(), body: body}
	rc.mu.Unlock()

	switch name {
	case "ok":
		w.WriteHeader(http.StatusOK)
	case "unavailable":
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
	case "limited":
		w.WriteHeader(http.StatusTooManyRequests)
	case "bad":
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "bad thing")
	default:
		w.WriteHeader(http.StatusInternalServerError)
	}
}

func (rc *receiver) get(name string) request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.requests[name]
}

func event(name string) sdk.Event {
	// Spacing and key order the plugin must not touch.
	return sdk.Event{
		JSON:      []byte(`{"event":"` + name + `", "messageId":"m-` + name + `","properties":{"revenue":19.99, "currency":"EUR"},"type":"track"}`),
		MessageID: "m-" + name,
		Name:      name,
	}
}

func TestDeliver(t *testing.T) {
	rc, srv := newReceiver(t)
	const secret = "s3cret"
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
		"url":     srv.URL + "/hook",
		"secret":  secret,
		"headers": map[string]any{"Authorization": "Bearer tok"},
	})

	names := []string{"ok", "unavailable", "limited", "bad", "broken"}
	batch := make([]sdk.Event, len(names))
	for i, n := range names {
		batch[i] = event(n)
	}
	results, err := c.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}

	want := []struct {
		status     sdk.Status
		retryAfter time.Duration
		reason     []string
	}{
		{status: sdk.StatusOK},
		{status: sdk.StatusRetry, retryAfter: 7 * time.Second, reason: []string{"503"}},
		{status: sdk.StatusRetry, reason: []string{"429"}},
		{status: sdk.StatusDrop, reason: []string{"400", "bad thing"}},
		{status: sdk.StatusRetry, reason: []string{"500"}},
	}
	for i, r := range results {
		w := want[i]
		if r.Status != w.status || r.RetryAfter != w.retryAfter {
			t.Errorf("%s: %v after %v (%q), want %v after %v", names[i], r.Status, r.RetryAfter, r.Reason, w.status, w.retryAfter)
		}
		for _, s := range w.reason {
			if !strings.Contains(r.Reason, s) {
				t.Errorf("%s: reason %q does not contain %q", names[i], r.Reason, s)
			}
		}
	}

	for _, e := range batch {
		got := rc.get(e.Name)
		if string(got.body) != string(e.JSON) {
			t.Errorf("%s: body %q, want the event unchanged: %q", e.Name, got.body, e.JSON)
		}
		if got.method != "POST" {
			t.Errorf("%s: method %s, want POST", e.Name, got.method)
		}
		for k, v := range map[string]string{
			"Content-Type":  "application/json",
			"User-Agent":    "trackd-webhook",
			"Authorization": "Bearer tok",
		} {
			if got.header.Get(k) != v {
				t.Errorf("%s: %s = %q, want %q", e.Name, k, got.header.Get(k), v)
			}
		}
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(got.body)
		if sig, want := got.header.Get("X-Signature"), "sha256="+hex.EncodeToString(mac.Sum(nil)); sig != want {
			t.Errorf("%s: X-Signature %q, want %q", e.Name, sig, want)
		}
	}
}

func TestMethodAndNoSignature(t *testing.T) {
	rc, srv := newReceiver(t)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"url": srv.URL, "method": "put"})
	if _, err := c.Deliver(t.Context(), []sdk.Event{event("ok")}); err != nil {
		t.Fatal(err)
	}
	got := rc.get("ok")
	if got.method != "PUT" {
		t.Errorf("method %s, want PUT", got.method)
	}
	if sig := got.header.Get("X-Signature"); sig != "" {
		t.Errorf("X-Signature %q without a secret, want none", sig)
	}
}

func TestUnreachableRetries(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"url": srv.URL})
	results, err := c.Deliver(t.Context(), []sdk.Event{event("ok")})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Status != sdk.StatusRetry {
		t.Errorf("unreachable receiver: %v (%q), want retry", results[0].Status, results[0].Reason)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	const limit, events = 3, 7
	var (
		mu       sync.Mutex
		inFlight int
		most     int
		full     = make(chan struct{}) // closed once limit requests are in flight together
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		if inFlight == limit && most == limit {
			close(full)
		}
		mu.Unlock()
		// Hold each request until the limit is reached at least once, so
		// a plugin that sends one at a time fails instead of passing.
		select {
		case <-full:
		case <-time.After(5 * time.Second):
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	defer srv.Close()

	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"url": srv.URL, "concurrency": int64(limit)})
	batch := make([]sdk.Event, events)
	for i := range batch {
		batch[i] = event("ok")
	}
	results, err := c.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Status != sdk.StatusOK {
			t.Errorf("event %d: %v (%q), want ok", i, r.Status, r.Reason)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if most != limit {
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
		{"bad method", map[string]any{"url": "http://example.com", "method": "GET IT"}, "method"},
		{"bad header name", map[string]any{"url": "http://example.com", "headers": map[string]any{"X Team": "a"}}, `headers: "X Team"`},
		{"unknown setting", map[string]any{"url": "http://example.com", "secrett": "x"}, `unknown setting "secrett"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := destinationtest.Configure(t, destinationtest.Launch(t, bin), tt.settings)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Configure error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestSampleConfig(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	out, err := exec.Command(bin, "--sample-config").Output()
	if err != nil {
		t.Fatal(err)
	}
	sample, _ := os.ReadFile("sample.toml")
	if string(out) != string(sample) {
		t.Errorf("--sample-config printed\n%s\nwant sample.toml:\n%s", out, sample)
	}
	readme, _ := os.ReadFile("README.md")
	if !strings.Contains(string(readme), "```toml\n"+string(sample)+"```") {
		t.Error("README.md does not include sample.toml verbatim in a toml code block")
	}

	var settings map[string]any
	if _, err := toml.DecodeFile("sample.toml", &settings); err != nil {
		t.Fatal(err)
	}
	// Configure makes no network calls, so example.com is never contacted.
	if err := destinationtest.Configure(t, destinationtest.Launch(t, bin), settings); err != nil {
		t.Errorf("Configure with sample.toml: %v", err)
	}
}
