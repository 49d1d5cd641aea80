package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/amplitude"

// request is a request to the fake Amplitude, its body decoded as the real
// API decodes it: JSON for /2/httpapi (body), a form whose fields hold JSON
// for /identify, /groupidentify and /usermap (form).
type request struct {
	destinationtest.Request
	body struct {
		APIKey  string            `json:"api_key"`
		Events  []json.RawMessage `json:"events"`
		Options json.RawMessage   `json:"options"`
	}
	form struct {
		APIKey  string
		Options json.RawMessage
		// Identify is /identify's identification, Groups /groupidentify's,
		// Mappings /usermap's mapping.
		Identify []identifyItem
		Groups   []groupItem
		Mappings []mappingItem
		Items    []json.RawMessage // the same items, as sent
	}
}

// The items of the form APIs, with the fields Amplitude documents for them.
type (
	identifyItem struct {
		UserID         string                                `json:"user_id"`
		DeviceID       string                                `json:"device_id"`
		UserProperties map[string]map[string]json.RawMessage `json:"user_properties"`
		Groups         map[string]string                     `json:"groups"`
	}
	groupItem struct {
		GroupType       string                                `json:"group_type"`
		GroupValue      string                                `json:"group_value"`
		GroupProperties map[string]map[string]json.RawMessage `json:"group_properties"`
	}
	mappingItem struct {
		UserID       string `json:"user_id"`
		GlobalUserID string `json:"global_user_id"`
	}
	// apiEvent is an event of /2/httpapi, with the fields the plugin may send.
	apiEvent struct {
		EventType       string                     `json:"event_type"`
		UserID          string                     `json:"user_id"`
		DeviceID        string                     `json:"device_id"`
		Time            int64                      `json:"time"`
		InsertID        string                     `json:"insert_id"`
		EventProperties map[string]json.RawMessage `json:"event_properties"`
		Price           *float64                   `json:"price"`
		Quantity        *int64                     `json:"quantity"`
		Revenue         *float64                   `json:"revenue"`
		RevenueType     string                     `json:"revenueType"`
		ProductID       string                     `json:"productId"`
	}
)

// strict decodes js into v, refusing a field v does not have and anything
// after the value.
func strict(js []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(js))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}

// decode reads a request as Amplitude would; an error is what it would
// refuse it for.
func decode(r destinationtest.Request) (request, error) {
	req := request{Request: r}
	if r.Method != http.MethodPost || len(r.Query) > 0 {
		return req, fmt.Errorf("%s %s?%s, want a POST with no query", r.Method, r.Path, r.Query.Encode())
	}
	if r.Path == "/2/httpapi" {
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			return req, fmt.Errorf("Content-Type %q, want application/json", ct)
		}
		if err := strict(r.Body, &req.body); err != nil {
			return req, fmt.Errorf("body: %v", err)
		}
		for i, e := range req.body.Events {
			var ev apiEvent
			if err := strict(e, &ev); err != nil {
				return req, fmt.Errorf("events[%d]: %v", i, err)
			}
			if ev.EventType == "" || ev.UserID == "" && ev.DeviceID == "" {
				return req, fmt.Errorf("events[%d] has no event_type, or neither user_id nor device_id: %s", i, e)
			}
		}
		return req, nil
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		return req, fmt.Errorf("Content-Type %q, want application/x-www-form-urlencoded", ct)
	}
	form, err := url.ParseQuery(string(r.Body))
	if err != nil {
		return req, fmt.Errorf("form: %v", err)
	}
	fields := map[string]any{"/identify": &req.form.Identify, "/groupidentify": &req.form.Groups, "/usermap": &req.form.Mappings}
	field := map[string]string{"/identify": "identification", "/groupidentify": "identification", "/usermap": "mapping"}[r.Path]
	if field == "" {
		return req, fmt.Errorf("no API at %s", r.Path)
	}
	for k, v := range form {
		if k != "api_key" && k != field && !(k == "options" && r.Path == "/identify") {
			return req, fmt.Errorf("form field %q is not one %s takes", k, r.Path)
		}
		if len(v) != 1 {
			return req, fmt.Errorf("form field %q is given %d times", k, len(v))
		}
	}
	req.form.APIKey = form.Get("api_key")
	if o := form.Get("options"); o != "" {
		req.form.Options = json.RawMessage(o)
	}
	if err := strict([]byte(form.Get(field)), fields[r.Path]); err != nil {
		return req, fmt.Errorf("form field %s is not a JSON array of %s items: %v", field, r.Path, err)
	}
	_ = json.Unmarshal([]byte(form.Get(field)), &req.form.Items) // strict took it
	if len(req.form.Items) == 0 {
		return req, fmt.Errorf("form field %s is an empty array", field)
	}
	for _, it := range req.form.Identify {
		if it.UserID == "" && it.DeviceID == "" {
			return req, errors.New("an identification has neither user_id nor device_id")
		}
		for op := range it.UserProperties {
			if op != "$set" {
				return req, fmt.Errorf("user_properties has %q, want only $set", op)
			}
		}
	}
	for _, g := range req.form.Groups {
		if g.GroupType == "" || g.GroupValue == "" {
			return req, fmt.Errorf("a group identification lacks group_type or group_value: %+v", g)
		}
		for op := range g.GroupProperties {
			if op != "$set" {
				return req, fmt.Errorf("group_properties has %q, want only $set", op)
			}
		}
	}
	for _, m := range req.form.Mappings {
		if m.UserID == "" || m.GlobalUserID == "" {
			return req, fmt.Errorf("a mapping lacks user_id or global_user_id: %+v", m)
		}
	}
	return req, nil
}

type answer = destinationtest.Answer

// fake plays Amplitude's APIs; by default it takes everything. A request it
// cannot decode fails the test and is answered 400, as Amplitude would.
type fake struct{ *destinationtest.Server }

func newFake(t *testing.T, answerWith func(request) answer) fake {
	return fake{destinationtest.NewServer(t, func(r destinationtest.Request) answer {
		req, err := decode(r)
		if err != nil {
			t.Errorf("%s: %v: %.300s", r.Path, err, r.Body)
			return answer{Status: http.StatusBadRequest, Body: "invalid request"}
		}
		var a answer
		if answerWith != nil {
			a = answerWith(req)
		}
		if a.Body == "" && (a.Status == 0 || a.Status == http.StatusOK) {
			if r.Path == "/2/httpapi" {
				a.Body = fmt.Sprintf(`{"code":200,"events_ingested":%d,"payload_size_bytes":%d,"server_upload_time":1579847342403}`, len(req.body.Events), len(r.Body))
			} else {
				a.Body = "success"
			}
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

// at returns the requests to path.
func (f fake) at(path string) []request {
	var out []request
	for _, r := range f.requests() {
		if r.Path == path {
			out = append(out, r)
		}
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
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(destinationtest.HangUpURL(t)))
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

// call builds a normalized call of any type that happened at at.
func call(t *testing.T, c destinationtest.Call) sdk.Event {
	t.Helper()
	c.Timestamp = at
	return destinationtest.Event(t, c)
}

// withCategory adds a page or screen call's top-level category, which
// destinationtest.Call has no field for.
func withCategory(t *testing.T, e sdk.Event, category string) sdk.Event {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(e.JSON, &m); err != nil {
		t.Fatal(err)
	}
	m["category"], _ = json.Marshal(category)
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	e.JSON = js
	return e
}

// canonical lists items as CanonicalJSON, for comparison with wanted JSON
// written by hand.
func canonical(t *testing.T, items []json.RawMessage) []string {
	t.Helper()
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = destinationtest.CanonicalJSON(t, it)
	}
	return out
}

func canonicalAll(t *testing.T, want ...string) []string {
	t.Helper()
	out := make([]string, len(want))
	for i, w := range want {
		out[i] = destinationtest.CanonicalJSON(t, []byte(w))
	}
	return out
}

func TestTypes(t *testing.T) {
	c := destinationtest.Launch(t, destinationtest.Build(t, pkg))
	types, err := c.Configure(t.Context(), config("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(types, sdk.AllTypes()) {
		t.Errorf("types %v, want all of %v", types, sdk.AllTypes())
	}
}

func TestEveryType(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	batch := []sdk.Event{
		call(t, destinationtest.Call{Type: "track", Name: "Signed Up", MessageID: "m-track", UserID: "user-0001", Properties: `{"plan":"pro"}`}),
		call(t, destinationtest.Call{Type: "identify", MessageID: "m-identify", UserID: "user-0001", AnonymousID: "anon-0001",
			Traits: `{"email":"ada@example.com","address":{"city":"London"},"tags":["a","b"]}`}),
		withCategory(t, call(t, destinationtest.Call{Type: "page", Name: "Pricing", MessageID: "m-page", AnonymousID: "anon-0001",
			Properties: `{"url":"https://example.com/pricing?a=1&b=2"}`}), "Docs"),
		call(t, destinationtest.Call{Type: "screen", Name: "Home", MessageID: "m-screen", UserID: "user-0001"}),
		call(t, destinationtest.Call{Type: "group", MessageID: "m-group", UserID: "user-0001", GroupID: "org-42",
			Traits: `{"name":"Initech","employees":150}`}),
		call(t, destinationtest.Call{Type: "alias", MessageID: "m-alias", UserID: "user-0001", PreviousID: "anon-0001"}),
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{sdk.OK(), sdk.OK(), sdk.OK(), sdk.OK(), sdk.OK(), sdk.OK()})

	events := f.at("/2/httpapi")
	if len(events) != 1 {
		t.Fatalf("%d requests to /2/httpapi, want 1", len(events))
	}
	wantEvents := canonicalAll(t,
		`{"event_type":"Signed Up","user_id":"user-0001","time":1579847342403,"insert_id":"m-track","event_properties":{"plan":"pro"}}`,
		`{"event_type":"Viewed Pricing Page","device_id":"anon-0001","time":1579847342403,"insert_id":"m-page",`+
			`"event_properties":{"url":"https://example.com/pricing?a=1&b=2","name":"Pricing","category":"Docs"}}`,
		`{"event_type":"Viewed Home Screen","user_id":"user-0001","time":1579847342403,"insert_id":"m-screen","event_properties":{"name":"Home"}}`,
	)
	if got := canonical(t, events[0].body.Events); !slices.Equal(got, wantEvents) {
		t.Errorf("/2/httpapi events\n got %s\nwant %s", got, wantEvents)
	}

	for _, tt := range []struct {
		path string
		want []string
	}{
		{"/identify", canonicalAll(t,
			`{"user_id":"user-0001","device_id":"anon-0001","user_properties":{"$set":{"email":"ada@example.com","address":{"city":"London"},"tags":["a","b"]}}}`,
			`{"user_id":"user-0001","groups":{"group":"org-42"}}`)},
		{"/groupidentify", canonicalAll(t,
			`{"group_type":"group","group_value":"org-42","group_properties":{"$set":{"name":"Initech","employees":150}}}`)},
		{"/usermap", canonicalAll(t, `{"user_id":"anon-0001","global_user_id":"user-0001"}`)},
	} {
		reqs := f.at(tt.path)
		if len(reqs) != 1 {
			t.Errorf("%d requests to %s, want 1", len(reqs), tt.path)
			continue
		}
		if reqs[0].form.APIKey != "key-1" || reqs[0].form.Options != nil {
			t.Errorf("%s: api_key %q and options %s, want key-1 and none", tt.path, reqs[0].form.APIKey, reqs[0].form.Options)
		}
		if got := canonical(t, reqs[0].form.Items); !slices.Equal(got, tt.want) {
			t.Errorf("%s items\n got %s\nwant %s", tt.path, got, tt.want)
		}
	}
}

func TestPageAndScreenTitles(t *testing.T) {
	tests := []struct {
		typ, name, category, props string
		wantType                   string
		wantProps                  string
	}{
		{"page", "Pricing", "", `{"url":"https://example.com/p"}`, "Viewed Pricing Page", `{"url":"https://example.com/p","name":"Pricing"}`},
		{"page", "", "", `{"url":"https://example.com/p"}`, "Loaded a Page", `{"url":"https://example.com/p"}`},
		{"page", "", "Docs", `{}`, "Loaded a Page", `{"category":"Docs"}`},
		{"page", "Pricing", "Docs", `{"name":"old","category":"old"}`, "Viewed Pricing Page", `{"name":"Pricing","category":"Docs"}`},
		{"screen", "Settings", "", `{"tab":2}`, "Viewed Settings Screen", `{"tab":2,"name":"Settings"}`},
		{"screen", "", "", `{}`, "Loaded a Screen", `{}`},
		{"page", "Checkout", "", `{"revenue":5}`, "Viewed Checkout Page", `{"name":"Checkout","currency":"USD"}`},
	}
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	var batch []sdk.Event
	for i, tt := range tests {
		e := call(t, destinationtest.Call{Type: tt.typ, Name: tt.name, MessageID: fmt.Sprintf("m-%d", i), AnonymousID: "anon-0001", Properties: tt.props})
		if tt.category != "" {
			e = withCategory(t, e, tt.category)
		}
		batch = append(batch, e)
	}
	for i, r := range destinationtest.Deliver(t, c, batch) {
		if r.Status != sdk.StatusOK {
			t.Fatalf("call %d: %v (%q)", i, r.Status, r.Reason)
		}
	}
	reqs := f.requests()
	if len(reqs) != 1 || reqs[0].Path != "/2/httpapi" || len(reqs[0].body.Events) != len(tests) {
		t.Fatalf("%d requests, want 1 to /2/httpapi with %d events", len(reqs), len(tests))
	}
	for i, tt := range tests {
		var ev apiEvent
		if err := json.Unmarshal(reqs[0].body.Events[i], &ev); err != nil {
			t.Fatal(err)
		}
		props, _ := json.Marshal(ev.EventProperties)
		if ev.EventType != tt.wantType || destinationtest.CanonicalJSON(t, props) != destinationtest.CanonicalJSON(t, []byte(tt.wantProps)) ||
			ev.DeviceID != "anon-0001" || ev.InsertID != fmt.Sprintf("m-%d", i) || ev.Time != 1579847342403 {
			t.Errorf("%s %q (category %q): got %s, want event_type %q and event_properties %s", tt.typ, tt.name, tt.category, reqs[0].body.Events[i], tt.wantType, tt.wantProps)
		}
	}
}

func TestGroupType(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL, "group_type", "company"))
	e := call(t, destinationtest.Call{Type: "group", UserID: "user-0001", AnonymousID: "anon-0001", GroupID: "org-42"})
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, []sdk.Event{e}), []sdk.Result{sdk.OK()})

	groups, users := f.at("/groupidentify"), f.at("/identify")
	if len(groups) != 1 || len(users) != 1 || len(f.requests()) != 2 {
		t.Fatalf("%d requests to /groupidentify and %d to /identify of %d, want one each", len(groups), len(users), len(f.requests()))
	}
	// A group without traits sets no properties.
	if got, want := canonical(t, groups[0].form.Items), canonicalAll(t, `{"group_type":"company","group_value":"org-42"}`); !slices.Equal(got, want) {
		t.Errorf("/groupidentify items %s, want %s", got, want)
	}
	if got, want := canonical(t, users[0].form.Items), canonicalAll(t, `{"user_id":"user-0001","device_id":"anon-0001","groups":{"company":"org-42"}}`); !slices.Equal(got, want) {
		t.Errorf("/identify items %s, want %s", got, want)
	}
}

func TestIdentifyOptions(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL, "min_id_length", int64(2)))
	batch := []sdk.Event{
		call(t, destinationtest.Call{Type: "identify", UserID: "u1"}),
		call(t, destinationtest.Call{Type: "identify", UserID: "7", Traits: `{"plan":"pro"}`}),
		call(t, destinationtest.Call{Type: "alias", UserID: "u2", PreviousID: "p"}),
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{sdk.OK(), sdk.Drop(`userId "7" is shorter than 2`), sdk.OK()})
	reqs := f.at("/identify")
	if len(reqs) != 1 || destinationtest.CanonicalJSON(t, reqs[0].form.Options) != `{"min_id_length":2}` {
		t.Fatalf("requests %+v, want one to /identify with options min_id_length 2", reqs)
	}
	if got, want := canonical(t, reqs[0].form.Items), canonicalAll(t, `{"user_id":"u1"}`); !slices.Equal(got, want) {
		t.Errorf("/identify items %s, want %s (no user_properties without traits)", got, want)
	}
	if m := f.at("/usermap"); len(m) != 1 || m[0].form.Options != nil {
		t.Errorf("/usermap requests %+v, want one without options", m)
	}
}

func TestFormAPIsAreSplit(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	many := func(n int, mk func(i int) destinationtest.Call) []sdk.Event {
		batch := make([]sdk.Event, n)
		for i := range batch {
			c := mk(i)
			c.MessageID = fmt.Sprintf("m-%05d", i)
			batch[i] = call(t, c)
		}
		return batch
	}
	traits := func(n int) string {
		m := make(map[string]int, n)
		for i := range n {
			m[fmt.Sprintf("t%04d", i)] = i
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	big := strings.Repeat("é&x", 20_000) // 200 KB URL-encoded: %C3%A9%26x
	tests := []struct {
		name  string
		batch []sdk.Event
		want  map[string][]int // items in each request, by path
	}{
		{"identify by count", many(2500, func(i int) destinationtest.Call {
			return destinationtest.Call{Type: "identify", UserID: fmt.Sprintf("user-%05d", i)}
		}), map[string][]int{"/identify": {2000, 500}}},
		{"group by count", many(1100, func(i int) destinationtest.Call {
			return destinationtest.Call{Type: "group", UserID: fmt.Sprintf("user-%05d", i), GroupID: fmt.Sprintf("g-%d", i), Traits: `{"n":1}`}
		}), map[string][]int{"/groupidentify": {1024, 76}, "/identify": {1100}}},
		{"group by properties", many(5, func(i int) destinationtest.Call {
			return destinationtest.Call{Type: "group", UserID: "user-00001", GroupID: fmt.Sprintf("g-%d", i), Traits: traits([]int{600, 300, 124, 1, 2000}[i])}
		}), map[string][]int{"/groupidentify": {3, 1, 1}, "/identify": {5}}},
		{"alias by count", many(2100, func(i int) destinationtest.Call {
			return destinationtest.Call{Type: "alias", UserID: "user-00001", PreviousID: fmt.Sprintf("anon-%05d", i)}
		}), map[string][]int{"/usermap": {2000, 100}}},
		{"identify by size", many(5, func(i int) destinationtest.Call {
			return destinationtest.Call{Type: "identify", UserID: fmt.Sprintf("user-%05d", i), Traits: `{"bio":"` + big + `"}`}
		}), map[string][]int{"/identify": {4, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(f.URL))
			for i, r := range destinationtest.Deliver(t, c, tt.batch) {
				if r.Status != sdk.StatusOK {
					t.Fatalf("call %d: %v (%q)", i, r.Status, r.Reason)
				}
			}
			got := make(map[string][]int)
			for _, r := range f.requests() {
				got[r.Path] = append(got[r.Path], len(r.form.Items))
				if len(r.Body) > 1_000_000 {
					t.Errorf("a request to %s of %d bytes; Amplitude takes 1 MB", r.Path, len(r.Body))
				}
				n := 0
				for _, g := range r.form.Groups {
					n += len(g.GroupProperties["$set"])
				}
				if n > 1024 && len(r.form.Groups) > 1 {
					t.Errorf("a request to /groupidentify of %d groups with %d properties; Amplitude takes 1024", len(r.form.Groups), n)
				}
			}
			if !maps.EqualFunc(got, tt.want, slices.Equal) {
				t.Errorf("items per request %v, want %v", got, tt.want)
			}
		})
	}
}

func TestOneAPIFailing(t *testing.T) {
	batch := func(t *testing.T) []sdk.Event {
		return []sdk.Event{
			call(t, destinationtest.Call{Type: "track", Name: "Signed Up", UserID: "user-0001"}),
			call(t, destinationtest.Call{Type: "identify", UserID: "user-0001", Traits: `{"plan":"pro"}`}),
			call(t, destinationtest.Call{Type: "group", UserID: "user-0001", GroupID: "org-42"}),
			call(t, destinationtest.Call{Type: "alias", UserID: "user-0001", PreviousID: "anon-0001"}),
			call(t, destinationtest.Call{Type: "page", Name: "Home", UserID: "user-0001"}),
		}
	}
	failing := func(path string, a answer) func(request) answer {
		return func(r request) answer {
			if r.Path == path {
				return a
			}
			return answer{}
		}
	}
	ok := sdk.OK()
	tests := []struct {
		name   string
		answer func(request) answer
		want   []sdk.Result // track, identify, group, alias, page
	}{
		{"identify 500", failing("/identify", answer{Status: 500, Body: "internal error"}),
			[]sdk.Result{ok, sdk.Retry(0, "/identify: 500"), sdk.Retry(0, "internal error"), ok, ok}},
		{"identify 429", failing("/identify", answer{Status: 429, Body: "too many requests"}),
			[]sdk.Result{ok, sdk.Retry(15*time.Second, "429"), sdk.Retry(15*time.Second, "429"), ok, ok}},
		{"groupidentify 400", failing("/groupidentify", answer{Status: 400, Body: "invalid group"}),
			[]sdk.Result{ok, ok, sdk.Drop("/groupidentify: 400 Bad Request: invalid group"), ok, ok}},
		{"groupidentify 503 Retry-After", failing("/groupidentify", answer{Status: 503, Header: map[string]string{"Retry-After": "9"}}),
			[]sdk.Result{ok, ok, sdk.Retry(9*time.Second, "/groupidentify: 503"), ok, ok}},
		{"usermap 429", failing("/usermap", answer{Status: 429}),
			[]sdk.Result{ok, ok, ok, sdk.Retry(30*time.Second, "/usermap: 429"), ok}},
		{"httpapi 500", failing("/2/httpapi", answer{Status: 500}),
			[]sdk.Result{sdk.Retry(0, "/2/httpapi: 500"), ok, ok, ok, sdk.Retry(0, "500")}},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, tt.answer)
			c := destinationtest.Start(t, bin, config(f.URL))
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch(t)), tt.want)
			if n := len(f.requests()); n != 4 {
				t.Errorf("%d requests, want one to each of the four APIs", n)
			}
		})
	}
}

func TestFormRefusalIsNarrowedDown(t *testing.T) {
	batch := func(t *testing.T) []sdk.Event {
		out := make([]sdk.Event, 8)
		for i := range out {
			out[i] = call(t, destinationtest.Call{Type: "identify", UserID: fmt.Sprintf("user-%04d", i), Traits: `{"plan":"pro"}`})
		}
		return out
	}
	bin := destinationtest.Build(t, pkg)
	t.Run("one call at fault", func(t *testing.T) {
		f := newFake(t, func(r request) answer {
			for _, it := range r.form.Identify {
				if it.UserID == "user-0005" {
					return answer{Status: 400, Body: "invalid user_properties"}
				}
			}
			return answer{}
		})
		c := destinationtest.Start(t, bin, config(f.URL))
		want := slices.Repeat([]sdk.Result{sdk.OK()}, 8)
		want[5] = sdk.Drop("/identify: 400 Bad Request: invalid user_properties")
		destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch(t)), want)
		// 8 refused; 0-3 ok, 4-7 refused; 4-5 refused, 6-7 ok; 4 ok, 5 refused.
		if n := len(f.requests()); n != 7 {
			t.Errorf("%d requests, want 7", n)
		}
	})
	t.Run("the request at fault", func(t *testing.T) {
		f := newFake(t, func(request) answer { return answer{Status: 400, Body: "invalid_api_key"} })
		c := destinationtest.Start(t, bin, config(f.URL))
		destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch(t)), slices.Repeat([]sdk.Result{sdk.Drop("invalid_api_key")}, 8))
		if n := len(f.requests()); n != 3 {
			t.Errorf("%d requests, want 3: the batch and its two halves", n)
		}
	})
}

func TestCallDrops(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	batch := []sdk.Event{
		call(t, destinationtest.Call{Type: "identify", UserID: "u1"}),
		call(t, destinationtest.Call{Type: "group", AnonymousID: "abc", GroupID: "org-42"}),
		call(t, destinationtest.Call{Type: "screen", UserID: "user-0001", AnonymousID: "a"}),
		call(t, destinationtest.Call{Type: "page", UserID: "user-0001", Properties: `{"revenue":"lots"}`}),
		call(t, destinationtest.Call{Type: "identify", AnonymousID: "anon-0001"}),
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{
		sdk.Drop(`userId "u1" is shorter than 5`),
		sdk.Drop(`anonymousId "abc" is shorter than 5`),
		sdk.Drop(`anonymousId "a" is shorter than 5`),
		sdk.Drop("properties.revenue"),
		sdk.OK(),
	})
	if reqs := f.requests(); len(reqs) != 1 || reqs[0].Path != "/identify" {
		t.Errorf("requests %+v, want one to /identify with the good call", reqs)
	}
}
