package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/amplitude"

// request is a request to the fake Amplitude, its body decoded.
type request struct {
	destinationtest.Request
	body struct {
		APIKey  string            `json:"api_key"`
		Events  []json.RawMessage `json:"events"`
		Options json.RawMessage   `json:"options"`
	}
}

func decode(r destinationtest.Request) (request, error) {
	req := request{Request: r}
	err := json.Unmarshal(r.Body, &req.body)
	return req, err
}

type answer = destinationtest.Answer

// fake plays /2/httpapi; by default it ingests everything.
type fake struct{ *destinationtest.Server }

func newFake(t *testing.T, answerWith func(request) answer) fake {
	return fake{destinationtest.NewServer(t, func(r destinationtest.Request) answer {
		req, err := decode(r)
		if err != nil {
			t.Errorf("body is not a JSON object: %v: %.200s", err, r.Body)
		}
		var a answer
		if answerWith != nil {
			a = answerWith(req)
		}
		if a.Body == "" && (a.Status == 0 || a.Status == http.StatusOK) {
			a.Body = fmt.Sprintf(`{"code":200,"events_ingested":%d,"payload_size_bytes":%d,"server_upload_time":1579847342403}`, len(req.body.Events), len(r.Body))
		}
		return a
	})}
}

// requests returns the requests received so far, in order.
func (f fake) requests() []request {
	var out []request
	for _, r := range f.Requests() {
		req, _ := decode(r) // newFake reported a body that does not decode
		out = append(out, req)
	}
	return out
}

// at is when the events happened, as a producer in India writes it.
var at = time.Date(2020, 1, 24, 11, 59, 2, 403_000_000, time.FixedZone("IST", 5*60*60+30*60))

func trackEvent(t *testing.T, messageID, userID, anonymousID, props string) sdk.Event {
	return destinationtest.Event(t, destinationtest.Track{
		Name:        "Order Completed",
		MessageID:   messageID,
		UserID:      userID,
		AnonymousID: anonymousID,
		Timestamp:   at,
		Properties:  props,
		Context:     `{"ip":"203.0.113.7"}`,
	})
}

func simple(t *testing.T, n int, props string) sdk.Event {
	return trackEvent(t, fmt.Sprintf("m-%04d", n), fmt.Sprintf("user-%04d", n), "", props)
}

func config(endpoint string, extra ...any) map[string]any {
	s := map[string]any{"api_key": "key-1", "endpoint": endpoint}
	for i := 0; i+1 < len(extra); i += 2 {
		s[extra[i].(string)] = extra[i+1]
	}
	return s
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
			f := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(f.URL, tt.settings...))
			e := trackEvent(t, "a6a0ad5a-bd26-4f19-8f75-38484e580fc7", "userId01", "anon-12345", tt.props)
			if r := destinationtest.Deliver(t, c, []sdk.Event{e})[0]; r.Status != sdk.StatusOK {
				t.Fatalf("result %v (%q), want ok", r.Status, r.Reason)
			}
			reqs := f.requests()
			if len(reqs) != 1 || len(reqs[0].body.Events) != 1 {
				t.Fatalf("%d requests, want 1 with 1 event", len(reqs))
			}
			req := reqs[0]
			if req.Path != "/2/httpapi" || req.body.APIKey != "key-1" || req.body.Options != nil {
				t.Errorf("request to %s with api_key %q and options %s, want /2/httpapi, key-1 and no options", req.Path, req.body.APIKey, req.body.Options)
			}
			if ct := req.Header.Get("Content-Type"); ct != "application/json" {
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
			if destinationtest.CanonicalJSON(t, rest) != destinationtest.CanonicalJSON(t, []byte(tt.want)) {
				t.Errorf("event\n got %s\nwant %s", destinationtest.CanonicalJSON(t, rest), destinationtest.CanonicalJSON(t, []byte(tt.want)))
			}
		})
	}
}

func TestDrops(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg),
		config(f.URL, "convert_to", "USD", "rates", map[string]any{"EUR": 1.08}))
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
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{
		sdk.Drop(`properties.revenue is "abc"`),
		sdk.Drop(`properties.currency "dollars"`),
		sdk.Drop("currency GBP has no rate"),
		sdk.Drop("properties.quantity is 2.5"),
		sdk.Drop("properties.product_id"),
		sdk.Drop(`userId "u1" is shorter than 5 characters`),
		sdk.Drop(`anonymousId "abc" is shorter than 5 characters`),
		sdk.OK(),
	})
	if reqs := f.requests(); len(reqs) != 1 || len(reqs[0].body.Events) != 1 {
		t.Errorf("%d requests, want 1 with the one good event", len(reqs))
	}
}

func TestMinIDLength(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL, "min_id_length", int64(2)))
	results := destinationtest.Deliver(t, c, []sdk.Event{trackEvent(t, "m-1", "u1", "", `{}`), trackEvent(t, "m-2", "7", "", `{}`)})
	if results[0].Status != sdk.StatusOK || results[1].Status != sdk.StatusDrop || !strings.Contains(results[1].Reason, "shorter than 2") {
		t.Errorf("results %+v, want ok and a drop for the 1-character id", results)
	}
	reqs := f.requests()
	if len(reqs) != 1 || destinationtest.CanonicalJSON(t, reqs[0].body.Options) != `{"min_id_length":2}` {
		t.Fatalf("requests %+v, want one with options.min_id_length 2", reqs)
	}
}

func TestBatchesAreSplit(t *testing.T) {
	t.Run("by count", func(t *testing.T) {
		f := newFake(t, nil)
		c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
		batch := make([]sdk.Event, 2500)
		for i := range batch {
			batch[i] = simple(t, i, `{}`)
		}
		for i, r := range destinationtest.Deliver(t, c, batch) {
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
		f := newFake(t, nil)
		c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
		big := strings.Repeat("x", 200_000)
		batch := make([]sdk.Event, 12)
		for i := range batch {
			batch[i] = simple(t, i, `{"blob":"`+big+`"}`)
		}
		destinationtest.Deliver(t, c, batch)
		total := 0
		for _, r := range f.requests() {
			if len(r.Body) > 1_000_000 {
				t.Errorf("a request of %d bytes; Amplitude takes less than 1 MB", len(r.Body))
			}
			total += len(r.body.Events)
		}
		if n := len(f.requests()); n != 3 || total != 12 {
			t.Errorf("%d requests with %d events, want 3 requests (4 events of 200 KB each) with 12", n, total)
		}
	})
}

func TestResults(t *testing.T) {
	ok := sdk.OK()
	tests := []struct {
		name     string
		answer   func(request) answer
		want     []sdk.Result // events 0, 1, 2
		requests int
	}{
		{name: "429 Retry-After", answer: func(request) answer {
			return answer{Status: 429, Header: map[string]string{"Retry-After": "7"}, Body: `{"code":429,"error":"Too many requests for some devices and users","throttled_events":[1]}`}
		}, want: []sdk.Result{sdk.Retry(7*time.Second, "429"), sdk.Retry(7*time.Second, "Too many requests"), sdk.Retry(7*time.Second, "429")}, requests: 1},
		{name: "429 without Retry-After", answer: func(request) answer { return answer{Status: 429} },
			want: []sdk.Result{sdk.Retry(30*time.Second, "429"), sdk.Retry(30*time.Second, "429"), sdk.Retry(30*time.Second, "429")}, requests: 1},
		{name: "500", answer: func(request) answer { return answer{Status: 500, Body: "oops"} },
			want: []sdk.Result{sdk.Retry(0, "oops"), sdk.Retry(0, "500"), sdk.Retry(0, "500")}, requests: 1},
		{name: "400 naming events", answer: func(request) answer {
			return answer{Status: 400, Body: `{"code":400,"error":"Request missing required field","events_with_invalid_fields":{"time":[2]},` +
				`"events_with_missing_fields":{"event_type":[0]},"events_with_invalid_id_lengths":{"user_id":[2]}}`}
		}, want: []sdk.Result{
			sdk.Drop("Amplitude rejected the event: Request missing required field: missing event_type"),
			sdk.Retry(0, "sent again without them"),
			sdk.Drop("invalid time, user_id too short"),
		}, requests: 1},
		{name: "400 silenced", answer: func(request) answer {
			return answer{Status: 400, Body: `{"code":400,"error":"Invalid events","silenced_events":[1]}`}
		}, want: []sdk.Result{sdk.Retry(0, ""), sdk.Drop("silenced"), sdk.Retry(0, "")}, requests: 1},
		{name: "400 about the request", answer: func(request) answer {
			return answer{Status: 400, Body: `{"code":400,"error":"Invalid API key: key-1","missing_field":null}`}
		}, want: []sdk.Result{sdk.Drop("Invalid API key"), sdk.Drop("400"), sdk.Drop("400")}, requests: 1},
		{name: "413 halves", answer: func(r request) answer {
			if len(r.body.Events) > 1 {
				return answer{Status: 413, Body: `{"code":413,"error":"Payload too large"}`}
			}
			return answer{}
		}, want: []sdk.Result{ok, ok, ok}, requests: 5},
		{name: "413 for one event", answer: func(r request) answer {
			return answer{Status: 413, Body: `{"code":413,"error":"Payload too large"}`}
		}, want: []sdk.Result{sdk.Drop("413"), sdk.Drop("Payload too large"), sdk.Drop("413")}, requests: 5},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.answer)
			c := destinationtest.Start(t, bin, config(f.URL))
			batch := []sdk.Event{simple(t, 0, `{"revenue":10}`), simple(t, 1, `{}`), simple(t, 2, `{}`)}
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), tt.want)
			if n := len(f.requests()); n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
		})
	}
}

func TestUnreachableRetries(t *testing.T) {
	srv := destinationtest.NewServer(t, nil)
	srv.Close() // nothing listens at its address now
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	if r := destinationtest.Deliver(t, c, []sdk.Event{simple(t, 0, `{}`)})[0]; r.Status != sdk.StatusRetry {
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
			destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
		})
	}
}

func TestSampleConfig(t *testing.T) {
	// Configure makes no network calls, so api2.amplitude.com is never contacted.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg),
		strings.NewReplacer("# min_id_length", "min_id_length", "# convert_to", "convert_to", "# rates", "rates").Replace)
}
