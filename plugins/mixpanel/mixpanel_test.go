package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
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

const pkg = "trackd.dev/trackd/plugins/mixpanel"

// request is what the fake Mixpanel saw of one request.
type request struct {
	path   string
	query  map[string]string
	header http.Header
	items  []json.RawMessage // the JSON array of the body, decompressed
}

// answer is how the fake Mixpanel responds to a request.
type answer struct {
	status int
	header map[string]string
	body   string
}

// fakeMixpanel plays Mixpanel's /import and /engage. By default it accepts
// everything, as Mixpanel does: /import with a strict 200, /engage with
// verbose=1's {"status":1}.
type fakeMixpanel struct {
	t      *testing.T
	mu     sync.Mutex
	reqs   []request
	onPost func(r request) answer // nil: accept
}

func newFake(t *testing.T, onPost func(request) answer) (*fakeMixpanel, *httptest.Server) {
	f := &fakeMixpanel{t: t, onPost: onPost}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeMixpanel) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			f.t.Errorf("%s: Content-Encoding gzip but %v", r.URL.Path, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, _ := io.ReadAll(body)
	req := request{path: r.URL.Path, query: map[string]string{}, header: r.Header.Clone()}
	for k := range r.URL.Query() {
		req.query[k] = r.URL.Query().Get(k)
	}
	if err := json.Unmarshal(raw, &req.items); err != nil {
		f.t.Errorf("%s: body is not a JSON array: %v: %s", r.URL.Path, err, raw)
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()

	a := answer{status: http.StatusOK}
	if f.onPost != nil {
		a = f.onPost(req)
	}
	if a.status == 0 {
		a.status = http.StatusOK
	}
	if a.body == "" && a.status == http.StatusOK {
		a.body = `{"code":200,"num_records_imported":` + fmt.Sprint(len(req.items)) + `,"status":"OK"}`
		if req.path == "/engage" {
			a.body = `{"status":1,"error":null}`
		}
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(a.status)
	io.WriteString(w, a.body)
}

// requests returns the requests to path, in order.
func (f *fakeMixpanel) requests(path string) []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []request
	for _, r := range f.reqs {
		if r.path == path {
			out = append(out, r)
		}
	}
	return out
}

// event builds a normalized event the way the daemon does.
func event(t *testing.T, messageID, userID, anonymousID, timestamp, props string) sdk.Event {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, timestamp)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{
		"type":         "track",
		"version":      2,
		"messageId":    messageID,
		"event":        "Order Completed",
		"timestamp":    timestamp,
		"receivedAt":   "2020-01-24T06:29:03.000Z",
		"properties":   json.RawMessage(props),
		"context":      map[string]any{"library": map[string]any{"name": "analytics-go"}},
		"integrations": map[string]any{},
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

// simple is an event of user u with properties props.
func simple(t *testing.T, n int, props string) sdk.Event {
	return event(t, fmt.Sprintf("m-%04d", n), fmt.Sprintf("user-%d", n), "", "2020-01-24T06:29:02.403Z", props)
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
	s := map[string]any{
		"token":                    "tok",
		"service_account_username": "sa.user",
		"service_account_secret":   "sa-secret",
		"project_id":               "12345",
		"endpoint":                 endpoint,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == nil {
			delete(s, extra[i].(string))
			continue
		}
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

func TestImportAndTrackCharges(t *testing.T) {
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	e := event(t, "a6a0ad5a-bd26-4f19-8f75-38484e580fc7", "userId01", "anon-1",
		"2020-01-24T11:59:02.403+05:30", `{"currency":"USD","revenue":18.9}`)
	if r := deliver(t, c, []sdk.Event{e})[0]; r.Status != sdk.StatusOK {
		t.Fatalf("result %v (%q), want ok", r.Status, r.Reason)
	}

	imports := f.requests("/import")
	if len(imports) != 1 || len(imports[0].items) != 1 {
		t.Fatalf("%d /import requests, want 1 with 1 event", len(imports))
	}
	imp := imports[0]
	wantImport := `{"event":"Order Completed","properties":{"$insert_id":"a6a0ad5a-bd26-4f19-8f75-38484e580fc7",` +
		`"currency":"USD","distinct_id":"userId01","revenue":18.9,"time":1579847342403,"token":"tok"}}`
	if got := canonical(t, imp.items[0]); got != wantImport {
		t.Errorf("/import event\n got %s\nwant %s", got, wantImport)
	}
	if imp.query["strict"] != "1" || imp.query["project_id"] != "12345" {
		t.Errorf("/import query %v, want strict=1 and project_id=12345", imp.query)
	}
	if u, p, ok := (&http.Request{Header: imp.header}).BasicAuth(); !ok || u != "sa.user" || p != "sa-secret" {
		t.Errorf("/import basic auth %q:%q, want the service account", u, p)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip", "User-Agent": "trackd-mixpanel"} {
		if imp.header.Get(k) != v {
			t.Errorf("/import %s = %q, want %q", k, imp.header.Get(k), v)
		}
	}

	engages := f.requests("/engage")
	if len(engages) != 1 || len(engages[0].items) != 1 {
		t.Fatalf("%d /engage requests, want 1 with 1 update", len(engages))
	}
	eng := engages[0]
	wantEngage := `{"$append":{"$transactions":{"$amount":18.9,"$time":"2020-01-24T06:29:02.403Z"}},"$distinct_id":"userId01","$token":"tok"}`
	if got := canonical(t, eng.items[0]); got != wantEngage {
		t.Errorf("/engage update\n got %s\nwant %s", got, wantEngage)
	}
	if eng.query["verbose"] != "1" || eng.header.Get("Content-Encoding") != "" || eng.header.Get("Content-Type") != "application/json" {
		t.Errorf("/engage query %v, Content-Encoding %q, Content-Type %q; want verbose=1, no gzip, JSON",
			eng.query, eng.header.Get("Content-Encoding"), eng.header.Get("Content-Type"))
	}
}

func TestRevenue(t *testing.T) {
	tests := []struct {
		name       string
		props      string
		anonymous  bool   // the event has only an anonymousId
		settings   []any  // changes to the settings
		wantProps  string // the translated properties other than token, distinct_id, time and $insert_id
		wantAmount string // the /engage $amount; "" for no /engage call
	}{
		{name: "no revenue", props: `{"plan":"pro"}`, wantProps: `{"plan":"pro"}`},
		{name: "zero revenue", props: `{"revenue":0}`, wantProps: `{"currency":"USD","revenue":0}`},
		{name: "currency without revenue", props: `{"currency":"eur"}`, wantProps: `{"currency":"EUR"}`},
		{name: "numeric string", props: `{"revenue":"19.99","currency":"eur"}`,
			wantProps: `{"currency":"EUR","revenue":19.99}`, wantAmount: "19.99"},
		{name: "negative revenue is a refund", props: `{"revenue":-5}`,
			wantProps: `{"currency":"USD","revenue":-5}`, wantAmount: "-5"},
		{name: "anonymous user", props: `{"revenue":3}`, anonymous: true,
			wantProps: `{"currency":"USD","revenue":3}`, wantAmount: "3"},
		{name: "conversion", props: `{"revenue":18.9,"currency":"eur","price":"10","value":null,"tax":1,"sku":"A1"}`,
			settings:  []any{"convert_to", "USD", "rates", map[string]any{"EUR": 1.08}},
			wantProps: `{"currency":"USD","price":10.8,"revenue":20.412,"sku":"A1","tax":1.08,"value":null}`, wantAmount: "20.412"},
		{name: "conversion into the same currency", props: `{"revenue":5,"currency":"usd"}`,
			settings:  []any{"convert_to", "USD", "rates", map[string]any{"EUR": 1.08}},
			wantProps: `{"currency":"USD","revenue":5}`, wantAmount: "5"},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(srv.URL, tt.settings...))
			e := event(t, "m-1", "user-1", "", "2020-01-24T06:29:02.403Z", tt.props)
			distinct := "user-1"
			if tt.anonymous {
				e = event(t, "m-1", "", "anon-1", "2020-01-24T06:29:02.403Z", tt.props)
				distinct = "anon-1"
			}
			if r := deliver(t, c, []sdk.Event{e})[0]; r.Status != sdk.StatusOK {
				t.Fatalf("result %v (%q), want ok", r.Status, r.Reason)
			}
			imports := f.requests("/import")
			if len(imports) != 1 {
				t.Fatalf("%d /import requests, want 1", len(imports))
			}
			var rec struct{ Properties map[string]json.RawMessage }
			if err := json.Unmarshal(imports[0].items[0], &rec); err != nil {
				t.Fatal(err)
			}
			if d := string(rec.Properties["distinct_id"]); d != `"`+distinct+`"` {
				t.Errorf("distinct_id %s, want %q", d, distinct)
			}
			for _, k := range []string{"token", "distinct_id", "time", "$insert_id"} {
				delete(rec.Properties, k)
			}
			got, _ := json.Marshal(rec.Properties)
			if canonical(t, got) != canonical(t, []byte(tt.wantProps)) {
				t.Errorf("properties %s, want %s", canonical(t, got), canonical(t, []byte(tt.wantProps)))
			}

			engages := f.requests("/engage")
			if tt.wantAmount == "" {
				if len(engages) != 0 {
					t.Errorf("%d /engage requests, want none", len(engages))
				}
				return
			}
			if len(engages) != 1 {
				t.Fatalf("%d /engage requests, want 1", len(engages))
			}
			want := `{"$append":{"$transactions":{"$amount":` + tt.wantAmount + `,"$time":"2020-01-24T06:29:02.403Z"}},"$distinct_id":"` + distinct + `","$token":"tok"}`
			if got := canonical(t, engages[0].items[0]); got != want {
				t.Errorf("/engage update\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestMalformedEventsAreDropped(t *testing.T) {
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg),
		config(srv.URL, "convert_to", "USD", "rates", map[string]any{"EUR": 1.08}))
	batch := []sdk.Event{
		simple(t, 0, `{"revenue":"abc"}`),
		simple(t, 1, `{"revenue":5,"currency":"US$"}`),
		simple(t, 2, `{"revenue":5,"currency":"GBP"}`),
		simple(t, 3, `{"revenue":5,"price":true}`),
		simple(t, 4, `{"revenue":5}`),
	}
	want := []string{`properties.revenue is "abc"`, `properties.currency "US$"`, "currency GBP has no rate", "properties.price is true", ""}
	results := deliver(t, c, batch)
	for i, r := range results {
		if want[i] == "" {
			if r.Status != sdk.StatusOK {
				t.Errorf("event %d: %v (%q), want ok", i, r.Status, r.Reason)
			}
			continue
		}
		if r.Status != sdk.StatusDrop || !strings.Contains(r.Reason, want[i]) {
			t.Errorf("event %d: %v (%q), want a drop naming %q", i, r.Status, r.Reason, want[i])
		}
	}
	if imports := f.requests("/import"); len(imports) != 1 || len(imports[0].items) != 1 {
		t.Errorf("/import requests %v, want one with the one good event", imports)
	}
}

func TestBatchesAreSplit(t *testing.T) {
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	batch := make([]sdk.Event, 2500)
	for i := range batch {
		batch[i] = simple(t, i, `{"n":`+fmt.Sprint(i)+`}`)
	}
	for i, r := range deliver(t, c, batch) {
		if r.Status != sdk.StatusOK {
			t.Fatalf("event %d: %v (%q), want ok", i, r.Status, r.Reason)
		}
	}
	imports := f.requests("/import")
	if len(imports) != 2 || len(imports[0].items) != 2000 || len(imports[1].items) != 500 {
		var sizes []int
		for _, r := range imports {
			sizes = append(sizes, len(r.items))
		}
		t.Fatalf("/import request sizes %v, want [2000 500]", sizes)
	}
	// In order: the first of the second request is event 2000.
	if !strings.Contains(string(imports[1].items[0]), `"m-2000"`) {
		t.Errorf("second request starts with %s, want event 2000", imports[1].items[0])
	}
	if n := len(f.requests("/engage")); n != 0 {
		t.Errorf("%d /engage requests for events without revenue", n)
	}
}

func TestResults(t *testing.T) {
	type want struct {
		status     sdk.Status
		retryAfter time.Duration
		reason     string // substring
	}
	ok := want{status: sdk.StatusOK}
	tests := []struct {
		name    string
		import_ func(r request) answer
		engage  func(r request) answer
		want    []want // for events 0 (revenue 10), 1 and 2
		imports int    // /import requests expected
	}{
		{name: "429 Retry-After", import_: func(request) answer {
			return answer{status: 429, header: map[string]string{"Retry-After": "7"}, body: `{"error":"Project exceeded rate limits."}`}
		}, want: []want{{sdk.StatusRetry, 7 * time.Second, "429"}, {sdk.StatusRetry, 7 * time.Second, "rate limits"}, {sdk.StatusRetry, 7 * time.Second, "429"}}, imports: 1},
		{name: "500", import_: func(request) answer { return answer{status: 500} },
			want: []want{{sdk.StatusRetry, 0, "500"}, {sdk.StatusRetry, 0, "500"}, {sdk.StatusRetry, 0, "500"}}, imports: 1},
		{name: "400 failed records", import_: func(request) answer {
			return answer{status: 400, body: `{"code":400,"error":"some data points in the request failed validation","status":"Bad Request","num_records_imported":2,` +
				`"failed_records":[{"index":1,"insert_id":"m-0001","field":"properties.time","message":"'properties.time' is invalid: must be specified as seconds since epoch"}]}`}
		}, want: []want{ok, {sdk.StatusDrop, 0, "Mixpanel rejected the event: 'properties.time' is invalid: must be specified as seconds since epoch"}, ok}, imports: 1},
		{name: "400 without records", import_: func(request) answer {
			return answer{status: 400, body: `{"error":"project_id is not valid","status":"Bad Request"}`}
		}, want: []want{{sdk.StatusDrop, 0, "project_id is not valid"}, {sdk.StatusDrop, 0, "400"}, {sdk.StatusDrop, 0, "400"}}, imports: 1},
		{name: "401", import_: func(request) answer { return answer{status: 401, body: `{"error":"Invalid credentials"}`} },
			want: []want{{sdk.StatusDrop, 0, "Invalid credentials"}, {sdk.StatusDrop, 0, "401"}, {sdk.StatusDrop, 0, "401"}}, imports: 1},
		{name: "413 halves", import_: func(r request) answer {
			if len(r.items) > 1 {
				return answer{status: 413, body: `{"error":"request exceeds max limit of 2097152 bytes"}`}
			}
			return answer{}
		}, want: []want{ok, ok, ok}, imports: 5},
		{name: "engage fails after import", engage: func(request) answer { return answer{status: 503, header: map[string]string{"Retry-After": "3"}} },
			want: []want{{sdk.StatusRetry, 3 * time.Second, "imported but its revenue was not recorded"}, ok, ok}, imports: 1},
		{name: "engage rejects", engage: func(request) answer { return answer{body: `{"status":0,"error":"$distinct_id is invalid"}`} },
			want: []want{{sdk.StatusDrop, 0, "$distinct_id is invalid"}, ok, ok}, imports: 1},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := newFake(t, func(r request) answer {
				if r.path == "/engage" && tt.engage != nil {
					return tt.engage(r)
				}
				if r.path == "/import" && tt.import_ != nil {
					return tt.import_(r)
				}
				return answer{}
			})
			c := destinationtest.Start(t, bin, config(srv.URL))
			batch := []sdk.Event{simple(t, 0, `{"revenue":10}`), simple(t, 1, `{}`), simple(t, 2, `{}`)}
			for i, r := range deliver(t, c, batch) {
				w := tt.want[i]
				if r.Status != w.status || r.RetryAfter != w.retryAfter || !strings.Contains(r.Reason, w.reason) {
					t.Errorf("event %d: %v after %v (%q), want %v after %v with %q", i, r.Status, r.RetryAfter, r.Reason, w.status, w.retryAfter, w.reason)
				}
			}
			if n := len(f.requests("/import")); n != tt.imports {
				t.Errorf("%d /import requests, want %d", n, tt.imports)
			}
			engageWanted := tt.want[0].status == sdk.StatusOK || tt.engage != nil
			if n := len(f.requests("/engage")); (n == 1) != engageWanted {
				t.Errorf("%d /engage requests, want 1: %v", n, engageWanted)
			}
		})
	}
}

func TestInsertID(t *testing.T) {
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return hex.EncodeToString(sum[:])[:36]
	}
	long := strings.Repeat("a", 37)
	tests := []struct{ messageID, want string }{
		{"a6a0ad5a-bd26-4f19-8f75-38484e580fc7", "a6a0ad5a-bd26-4f19-8f75-38484e580fc7"},
		{"order-1001", "order-1001"},
		{strings.Repeat("a", 36), strings.Repeat("a", 36)},
		{long, hash(long)},
		{"web_1001", hash("web_1001")},
		{"null", hash("null")},
		{"évènement", hash("évènement")},
	}
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	batch := make([]sdk.Event, len(tests))
	for i, tt := range tests {
		batch[i] = event(t, tt.messageID, "u-1", "", "2020-01-24T06:29:02.403Z", `{}`)
	}
	deliver(t, c, batch)
	deliver(t, c, batch) // a retry sends the same ids
	imports := f.requests("/import")
	if len(imports) != 2 {
		t.Fatalf("%d /import requests, want 2", len(imports))
	}
	for _, imp := range imports {
		for i, item := range imp.items {
			var rec struct {
				Properties struct {
					InsertID string `json:"$insert_id"`
				}
			}
			_ = json.Unmarshal(item, &rec)
			if rec.Properties.InsertID != tests[i].want {
				t.Errorf("messageId %q: $insert_id %q, want %q", tests[i].messageID, rec.Properties.InsertID, tests[i].want)
			}
		}
	}
}

func TestAPISecretAndNoGzip(t *testing.T) {
	f, srv := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL+"/",
		"service_account_username", nil, "service_account_secret", nil, "project_id", nil,
		"api_secret", "s3cret", "gzip", false))
	deliver(t, c, []sdk.Event{simple(t, 0, `{}`)})
	imports := f.requests("/import")
	if len(imports) != 1 {
		t.Fatalf("%d /import requests, want 1 (a trailing / on endpoint must not matter)", len(imports))
	}
	imp := imports[0]
	if u, p, ok := (&http.Request{Header: imp.header}).BasicAuth(); !ok || u != "s3cret" || p != "" {
		t.Errorf("basic auth %q:%q, want the API secret as user name", u, p)
	}
	if _, ok := imp.query["project_id"]; ok || imp.query["strict"] != "1" {
		t.Errorf("query %v, want strict=1 and no project_id", imp.query)
	}
	if ce := imp.header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q with gzip = false", ce)
	}
}

func TestUnreachableRetries(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	if r := deliver(t, c, []sdk.Event{simple(t, 0, `{}`)})[0]; r.Status != sdk.StatusRetry {
		t.Errorf("unreachable Mixpanel: %v (%q), want retry", r.Status, r.Reason)
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
		{"missing token", config(ep, "token", nil), "token is empty"},
		{"no credentials", config(ep, "service_account_username", nil, "service_account_secret", nil, "project_id", nil), "no credentials"},
		{"both credentials", config(ep, "api_secret", "x"), "api_secret and service_account_username"},
		{"partial service account", config(ep, "project_id", nil), "project_id is empty"},
		{"partial service account secret", config(ep, "service_account_secret", ""), "service_account_secret is empty"},
		{"bad endpoint", config("api.mixpanel.com"), `endpoint "api.mixpanel.com"`},
		{"bad timeout", config(ep, "timeout", "soon"), `setting "timeout"`},
		{"zero timeout", config(ep, "timeout", "0s"), "timeout"},
		{"numeric project id", config(ep, "project_id", int64(12345)), `setting "project_id"`},
		{"bad convert_to", config(ep, "convert_to", "dollars"), `convert_to "dollars"`},
		{"bad rate", config(ep, "convert_to", "USD", "rates", map[string]any{"EUR": -1.0}), "rates.EUR"},
		{"rates without convert_to", config(ep, "rates", map[string]any{"EUR": 1.08}), "convert_to is empty"},
		{"unknown setting", config(ep, "tokn", "x"), `unknown setting "tokn"`},
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

	var s map[string]any
	if _, err := toml.Decode(string(sample), &s); err != nil {
		t.Fatal(err)
	}
	// Configure makes no network calls, so api.mixpanel.com is never contacted.
	if err := destinationtest.Configure(t, destinationtest.Launch(t, bin), s); err != nil {
		t.Errorf("Configure with sample.toml: %v", err)
	}
	// The commented-out settings are valid too.
	uncommented := strings.NewReplacer("# api_secret", "api_secret", "# convert_to", "convert_to", "# [rates]", "[rates]", "# EUR", "EUR", "# GBP", "GBP").Replace(string(sample))
	s = nil
	if _, err := toml.Decode(uncommented, &s); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"service_account_username", "service_account_secret", "project_id"} {
		delete(s, k)
	}
	if err := destinationtest.Configure(t, destinationtest.Launch(t, bin), s); err != nil {
		t.Errorf("Configure with the commented-out settings of sample.toml: %v", err)
	}
}
