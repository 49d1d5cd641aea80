package main

import (
	"bytes"
	"encoding/json"
	"fmt"
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

const pkg = "trackd.dev/trackd/plugins/amplitude"

// request is what the fake Amplitude saw of one request.
type request struct {
	path   string
	header http.Header
	size   int // bytes of the body
	body   struct {
		APIKey  string            `json:"api_key"`
		Events  []json.RawMessage `json:"events"`
		Options json.RawMessage   `json:"options"`
	}
}

type answer struct {
	status int
	header map[string]string
	body   string
}

// fakeAmplitude plays /2/httpapi; by default it ingests everything.
type fakeAmplitude struct {
	t      *testing.T
	mu     sync.Mutex
	reqs   []request
	answer func(r request) answer // nil: accept
}

func newFake(t *testing.T, answer func(request) answer) (*fakeAmplitude, *httptest.Server) {
	f := &fakeAmplitude{t: t, answer: answer}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeAmplitude) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	req := request{path: r.URL.Path, header: r.Header.Clone(), size: len(raw)}
	if err := json.Unmarshal(raw, &req.body); err != nil {
		f.t.Errorf("body is not a JSON object: %v: %.200s", err, raw)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()

	a := answer{status: http.StatusOK}
	if f.answer != nil {
		a = f.answer(req)
	}
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.body == "" && a.status == http.StatusOK {
		a.body = fmt.Sprintf(`{"code":200,"events_ingested":%d,"payload_size_bytes":%d,"server_upload_time":1579847342403}`, len(req.body.Events), len(raw))
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

func (f *fakeAmplitude) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.reqs...)
}

// event builds a normalized event the way the daemon does.
func trackEvent(t *testing.T, messageID, userID, anonymousID, props string) sdk.Event {
	t.Helper()
	const timestamp = "2020-01-24T11:59:02.403+05:30"
	ts, err := time.Parse(time.RFC3339Nano, timestamp)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{
		"type":       "track",
		"version":    2,
		"messageId":  messageID,
		"event":      "Order Completed",
		"timestamp":  timestamp,
		"receivedAt": "2020-01-24T06:29:03.000Z",
		"properties": json.RawMessage(props),
		"context":    map[string]any{"ip": "203.0.113.7"},
	}
	if userID != "" {
		m["userId"] = userID
	}
	if anonymousID != "" {
		m["anonymousId"] = anonymousID
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return sdk.Event{JSON: b, MessageID: messageID, Name: "Order Completed", UserID: userID, AnonymousID: anonymousID, Timestamp: ts}
}

func simple(t *testing.T, n int, props string) sdk.Event {
	return trackEvent(t, fmt.Sprintf("m-%04d", n), fmt.Sprintf("user-%04d", n), "", props)
}

// canonical re-encodes JSON with sorted keys and numbers as written.
func canonical(t *testing.T, b []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	out, _ := json.Marshal(v)
	return string(out)
}

func config(endpoint string, extra ...any) map[string]any {
	s := map[string]any{"api_key": "key-1", "endpoint": endpoint}
	for i := 0; i+1 < len(extra); i += 2 {
		s[extra[i].(string)] = extra[i+1]
	}
	return s
}

func deliver(t *testing.T, c *sdk.Client, batch []sdk.Event) []sdk.Result {
	t.Helper()
	results, err := c.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if len(results) != len(batch) {
		t.Fatalf("%d results for %d events", len(results), len(batch))
	}
	return results
}

func TestEventMapping(t *testing.T) {
	tests := []struct {
		name     string
		props    string
		settings []any
		want     string // the event's fields besides event_type, user_id, device_id, time and insert_id
	}{
		{name: "no revenue", props: `{"plan":"pro","price":25,"quantity":2}`,
			want: `{"event_properties":{"plan":"pro","price":25,"quantity":2}}`},
		{name: "revenue only", props: `{"revenue":48,"revenue_type":"Purchased","quantity":2}`,
			want: `{"event_properties":{"currency":"USD"},"price":48,"quantity":1,"revenue":48,"revenueType":"Purchased"}`},
		{name: "price and quantity", props: `{"price":25,"quantity":2,"revenue":48}`,
			want: `{"event_properties":{"currency":"USD"},"price":25,"quantity":2,"revenue":48,"revenueType":"Purchased"}`},
		{name: "price without quantity", props: `{"price":"25","revenue":"25","currency":"eur"}`,
			want: `{"event_properties":{"currency":"EUR"},"price":25,"quantity":1,"revenue":25,"revenueType":"Purchased"}`},
		{name: "revenue type and product", props: `{"revenue":9.99,"revenueType":"Refund","revenue_type":"x","product_id":"sku-1","name":"Mug"}`,
			want: `{"event_properties":{"currency":"USD","name":"Mug"},"price":9.99,"quantity":1,"revenue":9.99,"revenueType":"Refund","productId":"sku-1"}`},
		{name: "numeric product id", props: `{"revenue":0,"product_id":507}`,
			want: `{"event_properties":{"currency":"USD"},"price":0,"quantity":1,"revenue":0,"revenueType":"Purchased","productId":"507"}`},
		{name: "null revenue", props: `{"revenue":null,"price":3}`,
			want: `{"event_properties":{"price":3,"revenue":null}}`},
		{name: "conversion", props: `{"price":25,"quantity":2,"revenue":48,"currency":"EUR","value":10,"coupon":"X"}`,
			settings: []any{"convert_to", "USD", "rates", map[string]any{"EUR": 1.08}},
			want:     `{"event_properties":{"coupon":"X","currency":"USD","value":10.8},"price":27,"quantity":2,"revenue":51.84,"revenueType":"Purchased"}`},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(srv.URL, tt.settings...))
			e := trackEvent(t, "a6a0ad5a-bd26-4f19-8f75-38484e580fc7", "userId01", "anon-12345", tt.props)
			if r := deliver(t, c, []sdk.Event{e})[0]; r.Status != sdk.StatusOK {
				t.Fatalf("result %v (%q), want ok", r.Status, r.Reason)
			}
			reqs := f.requests()
			if len(reqs) != 1 || len(reqs[0].body.Events) != 1 {
				t.Fatalf("%d requests, want 1 with 1 event", len(reqs))
			}
			req := reqs[0]
			if req.path != "/2/httpapi" || req.body.APIKey != "key-1" || req.body.Options != nil {
				t.Errorf("request to %s with api_key %q and options %s, want /2/httpapi, key-1 and no options", req.path, req.body.APIKey, req.body.Options)
			}
			if ct := req.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var got map[string]json.RawMessage
			if err := json.Unmarshal(req.body.Events[0], &got); err != nil {
				t.Fatal(err)
			}
			common := map[string]string{
				"event_type": `"Order Completed"`,
				"user_id":    `"userId01"`,
				"device_id":  `"anon-12345"`,
				"time":       `1579847342403`,
				"insert_id":  `"a6a0ad5a-bd26-4f19-8f75-38484e580fc7"`,
			}
			for k, v := range common {
				if string(got[k]) != v {
					t.Errorf("%s = %s, want %s", k, got[k], v)
				}
				delete(got, k)
			}
			rest, _ := json.Marshal(got)
			if canonical(t, rest) != canonical(t, []byte(tt.want)) {
				t.Errorf("event\n got %s\nwant %s", canonical(t, rest), canonical(t, []byte(tt.want)))
			}
		})
	}
}

func TestDrops(t *testing.T) {
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg),
		config(srv.URL, "convert_to", "USD", "rates", map[string]any{"EUR": 1.08}))
	batch := []sdk.Event{
		simple(t, 0, `{"revenue":"abc"}`),
		simple(t, 1, `{"revenue":5,"currency":"dollars"}`),
		simple(t, 2, `{"revenue":5,"currency":"GBP"}`),
		simple(t, 3, `{"revenue":5,"price":2.5,"quantity":2.5}`),
		simple(t, 4, `{"revenue":5,"product_id":{"id":1}}`),
		trackEvent(t, "m-5", "u1", "", `{}`),
		trackEvent(t, "m-6", "user-0006", "abc", `{}`),
		simple(t, 7, `{"revenue":5}`),
	}
	want := []string{
		`properties.revenue is "abc"`,
		`properties.currency "dollars"`,
		"currency GBP has no rate",
		"properties.quantity is 2.5",
		"properties.product_id",
		`userId "u1" is shorter than 5 characters`,
		`anonymousId "abc" is shorter than 5 characters`,
		"",
	}
	for i, r := range deliver(t, c, batch) {
		if want[i] == "" {
			if r.Status != sdk.StatusOK {
				t.Errorf("event %d: %v (%q), want ok", i, r.Status, r.Reason)
			}
			continue
		}
		if r.Status != sdk.StatusDrop || !strings.Contains(r.Reason, want[i]) {
			t.Errorf("event %d: %v (%q), want a drop with %q", i, r.Status, r.Reason, want[i])
		}
	}
	if reqs := f.requests(); len(reqs) != 1 || len(reqs[0].body.Events) != 1 {
		t.Errorf("%d requests, want 1 with the one good event", len(reqs))
	}
}

func TestMinIDLength(t *testing.T) {
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL, "min_id_length", int64(2)))
	results := deliver(t, c, []sdk.Event{trackEvent(t, "m-1", "u1", "", `{}`), trackEvent(t, "m-2", "7", "", `{}`)})
	if results[0].Status != sdk.StatusOK || results[1].Status != sdk.StatusDrop || !strings.Contains(results[1].Reason, "shorter than 2") {
		t.Errorf("results %+v, want ok and a drop for the 1-character id", results)
	}
	reqs := f.requests()
	if len(reqs) != 1 || canonical(t, reqs[0].body.Options) != `{"min_id_length":2}` {
		t.Fatalf("requests %+v, want one with options.min_id_length 2", reqs)
	}
}

func TestBatchesAreSplit(t *testing.T) {
	t.Run("by count", func(t *testing.T) {
		f, srv := newFake(t, nil)
		c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
		batch := make([]sdk.Event, 2500)
		for i := range batch {
			batch[i] = simple(t, i, `{}`)
		}
		for i, r := range deliver(t, c, batch) {
			if r.Status != sdk.StatusOK {
				t.Fatalf("event %d: %v (%q)", i, r.Status, r.Reason)
			}
		}
		reqs := f.requests()
		if len(reqs) != 2 || len(reqs[0].body.Events) != 2000 || len(reqs[1].body.Events) != 500 {
			t.Fatalf("%d requests, want 2 of 2000 and 500 events", len(reqs))
		}
		if !strings.Contains(string(reqs[1].body.Events[0]), `"m-2000"`) {
			t.Errorf("second request starts with %s, want event 2000", reqs[1].body.Events[0])
		}
	})
	t.Run("by size", func(t *testing.T) {
		f, srv := newFake(t, nil)
		c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
		big := strings.Repeat("x", 200_000)
		batch := make([]sdk.Event, 12)
		for i := range batch {
			batch[i] = simple(t, i, `{"blob":"`+big+`"}`)
		}
		deliver(t, c, batch)
		total := 0
		for _, r := range f.requests() {
			if r.size > 1_000_000 {
				t.Errorf("a request of %d bytes; Amplitude takes less than 1 MB", r.size)
			}
			total += len(r.body.Events)
		}
		if n := len(f.requests()); n != 3 || total != 12 {
			t.Errorf("%d requests with %d events, want 3 requests (4 events of 200 KB each) with 12", n, total)
		}
	})
}

func TestResults(t *testing.T) {
	type want struct {
		status     sdk.Status
		retryAfter time.Duration
		reason     string
	}
	ok := want{status: sdk.StatusOK}
	tests := []struct {
		name     string
		answer   func(request) answer
		want     []want // events 0, 1, 2
		requests int
	}{
		{name: "429 Retry-After", answer: func(request) answer {
			return answer{status: 429, header: map[string]string{"Retry-After": "7"}, body: `{"code":429,"error":"Too many requests for some devices and users","throttled_events":[1]}`}
		}, want: []want{{sdk.StatusRetry, 7 * time.Second, "429"}, {sdk.StatusRetry, 7 * time.Second, "Too many requests"}, {sdk.StatusRetry, 7 * time.Second, "429"}}, requests: 1},
		{name: "429 without Retry-After", answer: func(request) answer { return answer{status: 429} },
			want: []want{{sdk.StatusRetry, 30 * time.Second, "429"}, {sdk.StatusRetry, 30 * time.Second, "429"}, {sdk.StatusRetry, 30 * time.Second, "429"}}, requests: 1},
		{name: "500", answer: func(request) answer { return answer{status: 500, body: "oops"} },
			want: []want{{sdk.StatusRetry, 0, "oops"}, {sdk.StatusRetry, 0, "500"}, {sdk.StatusRetry, 0, "500"}}, requests: 1},
		{name: "400 naming events", answer: func(request) answer {
			return answer{status: 400, body: `{"code":400,"error":"Request missing required field","events_with_invalid_fields":{"time":[2]},` +
				`"events_with_missing_fields":{"event_type":[0]},"events_with_invalid_id_lengths":{"user_id":[2]}}`}
		}, want: []want{
			{sdk.StatusDrop, 0, "Amplitude rejected the event: Request missing required field: missing event_type"},
			{sdk.StatusRetry, 0, "sent again without them"},
			{sdk.StatusDrop, 0, "invalid time, user_id too short"},
		}, requests: 1},
		{name: "400 silenced", answer: func(request) answer {
			return answer{status: 400, body: `{"code":400,"error":"Invalid events","silenced_events":[1]}`}
		}, want: []want{{sdk.StatusRetry, 0, ""}, {sdk.StatusDrop, 0, "silenced"}, {sdk.StatusRetry, 0, ""}}, requests: 1},
		{name: "400 about the request", answer: func(request) answer {
			return answer{status: 400, body: `{"code":400,"error":"Invalid API key: key-1","missing_field":null}`}
		}, want: []want{{sdk.StatusDrop, 0, "Invalid API key"}, {sdk.StatusDrop, 0, "400"}, {sdk.StatusDrop, 0, "400"}}, requests: 1},
		{name: "413 halves", answer: func(r request) answer {
			if len(r.body.Events) > 1 {
				return answer{status: 413, body: `{"code":413,"error":"Payload too large"}`}
			}
			return answer{}
		}, want: []want{ok, ok, ok}, requests: 5},
		{name: "413 for one event", answer: func(r request) answer {
			return answer{status: 413, body: `{"code":413,"error":"Payload too large"}`}
		}, want: []want{{sdk.StatusDrop, 0, "413"}, {sdk.StatusDrop, 0, "Payload too large"}, {sdk.StatusDrop, 0, "413"}}, requests: 5},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFake(t, tt.answer)
			c := destinationtest.Start(t, bin, config(srv.URL))
			batch := []sdk.Event{simple(t, 0, `{"revenue":10}`), simple(t, 1, `{}`), simple(t, 2, `{}`)}
			for i, r := range deliver(t, c, batch) {
				w := tt.want[i]
				if r.Status != w.status || r.RetryAfter != w.retryAfter || !strings.Contains(r.Reason, w.reason) {
					t.Errorf("event %d: %v after %v (%q), want %v after %v with %q", i, r.Status, r.RetryAfter, r.Reason, w.status, w.retryAfter, w.reason)
				}
			}
			if n := len(f.requests()); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
		})
	}
}

func TestUnreachableRetries(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	if r := deliver(t, c, []sdk.Event{simple(t, 0, `{}`)})[0]; r.Status != sdk.StatusRetry {
		t.Errorf("unreachable Amplitude: %v (%q), want retry", r.Status, r.Reason)
	}
}

func TestConfigureErrors(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	const ep = "http://127.0.0.1:1"
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"missing api_key", map[string]any{"endpoint": ep}, "api_key is empty"},
		{"bad endpoint", config("ftp://x"), `endpoint "ftp://x"`},
		{"bad timeout", config(ep, "timeout", "soon"), `setting "timeout"`},
		{"zero timeout", config(ep, "timeout", "0s"), "timeout"},
		{"negative min_id_length", config(ep, "min_id_length", int64(-1)), "min_id_length is -1"},
		{"string min_id_length", config(ep, "min_id_length", "5"), `setting "min_id_length"`},
		{"bad convert_to", config(ep, "convert_to", "€"), `convert_to "€"`},
		{"bad rate key", config(ep, "convert_to", "USD", "rates", map[string]any{"euro": 1.08}), `rates: "euro"`},
		{"unknown setting", config(ep, "apikey", "x"), `unknown setting "apikey"`},
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

	for _, text := range []string{
		string(sample),
		// The commented-out settings are valid too.
		strings.NewReplacer("# min_id_length", "min_id_length", "# convert_to", "convert_to", "# [rates]", "[rates]", "# EUR", "EUR", "# GBP", "GBP").Replace(string(sample)),
	} {
		var s map[string]any
		if _, err := toml.Decode(text, &s); err != nil {
			t.Fatal(err)
		}
		// Configure makes no network calls, so api2.amplitude.com is never contacted.
		if err := destinationtest.Configure(t, destinationtest.Launch(t, bin), s); err != nil {
			t.Errorf("Configure with %v: %v", s, err)
		}
	}
}
