package main

import (
	"crypto/sha256"
	"encoding/hex"
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

const pkg = "trackd.dev/trackd/plugins/mixpanel"

// request is a request to the fake Mixpanel, its body decoded.
type request struct {
	destinationtest.Request
	items []json.RawMessage // the JSON array of the body
}

func decode(r destinationtest.Request) (request, error) {
	req := request{Request: r}
	err := json.Unmarshal(r.Body, &req.items)
	return req, err
}

type answer = destinationtest.Answer

// fake plays Mixpanel's /import and /engage. By default it accepts
// everything, as Mixpanel does: /import with a strict 200, /engage with
// verbose=1's {"status":1}.
type fake struct{ *destinationtest.Server }

func newFake(t *testing.T, onPost func(request) answer) fake {
	return fake{destinationtest.NewServer(t, func(r destinationtest.Request) answer {
		req, err := decode(r)
		if err != nil {
			t.Errorf("%s: body is not a JSON array: %v: %s", r.Path, err, r.Body)
		}
		var a answer
		if onPost != nil {
			a = onPost(req)
		}
		if a.Body == "" && (a.Status == 0 || a.Status == http.StatusOK) {
			a.Body = `{"code":200,"num_records_imported":` + fmt.Sprint(len(req.items)) + `,"status":"OK"}`
			if req.Path == "/engage" {
				a.Body = `{"status":1,"error":null}`
			}
		}
		return a
	})}
}

// requests returns the requests to path, in order.
func (f fake) requests(path string) []request {
	var out []request
	for _, r := range f.Requests() {
		if r.Path == path {
			req, _ := decode(r) // newFake reported a body that does not decode
			out = append(out, req)
		}
	}
	return out
}

// event builds a normalized event the way the daemon does.
func event(t *testing.T, messageID, userID, anonymousID string, at time.Time, props string) sdk.Event {
	return destinationtest.Event(t, destinationtest.Track{
		Name:        "Order Completed",
		MessageID:   messageID,
		UserID:      userID,
		AnonymousID: anonymousID,
		Timestamp:   at,
		Properties:  props,
		Context:     `{"library":{"name":"analytics-go"}}`,
	})
}

// at is when the events of most tests happened.
var at = time.Date(2020, 1, 24, 6, 29, 2, 403_000_000, time.UTC)

// simple is an event of user n with properties props.
func simple(t *testing.T, n int, props string) sdk.Event {
	return event(t, fmt.Sprintf("m-%04d", n), fmt.Sprintf("user-%d", n), "", at, props)
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

func TestImportAndTrackCharges(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	// The same time as at, as a producer in India writes it.
	ist := at.In(time.FixedZone("IST", 5*60*60+30*60))
	e := event(t, "a6a0ad5a-bd26-4f19-8f75-38484e580fc7", "userId01", "anon-1", ist, `{"currency":"USD","revenue":18.9}`)
	if r := destinationtest.Deliver(t, c, []sdk.Event{e})[0]; r.Status != sdk.StatusOK {
		t.Fatalf("result %v (%q), want ok", r.Status, r.Reason)
	}

	imports := f.requests("/import")
	if len(imports) != 1 || len(imports[0].items) != 1 {
		t.Fatalf("%d /import requests, want 1 with 1 event", len(imports))
	}
	imp := imports[0]
	wantImport := `{"event":"Order Completed","properties":{"$insert_id":"a6a0ad5a-bd26-4f19-8f75-38484e580fc7",` +
		`"currency":"USD","distinct_id":"userId01","revenue":18.9,"time":1579847342403,"token":"tok"}}`
	if got := destinationtest.CanonicalJSON(t, imp.items[0]); got != wantImport {
		t.Errorf("/import event\n got %s\nwant %s", got, wantImport)
	}
	if imp.Query.Get("strict") != "1" || imp.Query.Get("project_id") != "12345" {
		t.Errorf("/import query %v, want strict=1 and project_id=12345", imp.Query)
	}
	if u, p, ok := (&http.Request{Header: imp.Header}).BasicAuth(); !ok || u != "sa.user" || p != "sa-secret" {
		t.Errorf("/import basic auth %q:%q, want the service account", u, p)
	}
	for k, v := range map[string]string{"Content-Type": "application/json", "Content-Encoding": "gzip", "User-Agent": "trackd-mixpanel"} {
		if imp.Header.Get(k) != v {
			t.Errorf("/import %s = %q, want %q", k, imp.Header.Get(k), v)
		}
	}

	engages := f.requests("/engage")
	if len(engages) != 1 || len(engages[0].items) != 1 {
		t.Fatalf("%d /engage requests, want 1 with 1 update", len(engages))
	}
	eng := engages[0]
	wantEngage := `{"$append":{"$transactions":{"$amount":18.9,"$time":"2020-01-24T06:29:02.403Z"}},"$distinct_id":"userId01","$token":"tok"}`
	if got := destinationtest.CanonicalJSON(t, eng.items[0]); got != wantEngage {
		t.Errorf("/engage update\n got %s\nwant %s", got, wantEngage)
	}
	if eng.Query.Get("verbose") != "1" || eng.Header.Get("Content-Encoding") != "" || eng.Header.Get("Content-Type") != "application/json" {
		t.Errorf("/engage query %v, Content-Encoding %q, Content-Type %q; want verbose=1, no gzip, JSON",
			eng.Query, eng.Header.Get("Content-Encoding"), eng.Header.Get("Content-Type"))
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
			f := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(f.URL, tt.settings...))
			e := event(t, "m-1", "user-1", "", at, tt.props)
			distinct := "user-1"
			if tt.anonymous {
				e = event(t, "m-1", "", "anon-1", at, tt.props)
				distinct = "anon-1"
			}
			if r := destinationtest.Deliver(t, c, []sdk.Event{e})[0]; r.Status != sdk.StatusOK {
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
			if destinationtest.CanonicalJSON(t, got) != destinationtest.CanonicalJSON(t, []byte(tt.wantProps)) {
				t.Errorf("properties %s, want %s", destinationtest.CanonicalJSON(t, got), destinationtest.CanonicalJSON(t, []byte(tt.wantProps)))
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
			if got := destinationtest.CanonicalJSON(t, engages[0].items[0]); got != want {
				t.Errorf("/engage update\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestMalformedEventsAreDropped(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg),
		config(f.URL, "convert_to", "USD", "rates", map[string]any{"EUR": 1.08}))
	batch := []sdk.Event{
		simple(t, 0, `{"revenue":"abc"}`),
		simple(t, 1, `{"revenue":5,"currency":"US$"}`),
		simple(t, 2, `{"revenue":5,"currency":"GBP"}`),
		simple(t, 3, `{"revenue":5,"price":true}`),
		simple(t, 4, `{"revenue":5}`),
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{
		sdk.Drop(`properties.revenue is "abc"`),
		sdk.Drop(`properties.currency "US$"`),
		sdk.Drop("currency GBP has no rate"),
		sdk.Drop("properties.price is true"),
		sdk.OK(),
	})
	if imports := f.requests("/import"); len(imports) != 1 || len(imports[0].items) != 1 {
		t.Errorf("/import requests %v, want one with the one good event", imports)
	}
}

func TestBatchesAreSplit(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	batch := make([]sdk.Event, 2500)
	for i := range batch {
		batch[i] = simple(t, i, `{"n":`+fmt.Sprint(i)+`}`)
	}
	for i, r := range destinationtest.Deliver(t, c, batch) {
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
	ok := sdk.OK()
	tests := []struct {
		name    string
		import_ func(r request) answer
		engage  func(r request) answer
		want    []sdk.Result // for events 0 (revenue 10), 1 and 2
		imports int          // /import requests expected
	}{
		{name: "429 Retry-After", import_: func(request) answer {
			return answer{Status: 429, Header: map[string]string{"Retry-After": "7"}, Body: `{"error":"Project exceeded rate limits."}`}
		}, want: []sdk.Result{sdk.Retry(7*time.Second, "429"), sdk.Retry(7*time.Second, "rate limits"), sdk.Retry(7*time.Second, "429")}, imports: 1},
		{name: "500", import_: func(request) answer { return answer{Status: 500} },
			want: []sdk.Result{sdk.Retry(0, "500"), sdk.Retry(0, "500"), sdk.Retry(0, "500")}, imports: 1},
		{name: "400 failed records", import_: func(request) answer {
			return answer{Status: 400, Body: `{"code":400,"error":"some data points in the request failed validation","status":"Bad Request","num_records_imported":2,` +
				`"failed_records":[{"index":1,"insert_id":"m-0001","field":"properties.time","message":"'properties.time' is invalid: must be specified as seconds since epoch"}]}`}
		}, want: []sdk.Result{ok, sdk.Drop("Mixpanel rejected the event: 'properties.time' is invalid: must be specified as seconds since epoch"), ok}, imports: 1},
		{name: "400 without records", import_: func(request) answer {
			return answer{Status: 400, Body: `{"error":"project_id is not valid","status":"Bad Request"}`}
		}, want: []sdk.Result{sdk.Drop("project_id is not valid"), sdk.Drop("400"), sdk.Drop("400")}, imports: 1},
		{name: "401", import_: func(request) answer { return answer{Status: 401, Body: `{"error":"Invalid credentials"}`} },
			want: []sdk.Result{sdk.Drop("Invalid credentials"), sdk.Drop("401"), sdk.Drop("401")}, imports: 1},
		{name: "413 halves", import_: func(r request) answer {
			if len(r.items) > 1 {
				return answer{Status: 413, Body: `{"error":"request exceeds max limit of 2097152 bytes"}`}
			}
			return answer{}
		}, want: []sdk.Result{ok, ok, ok}, imports: 5},
		{name: "engage fails after import", engage: func(request) answer { return answer{Status: 503, Header: map[string]string{"Retry-After": "3"}} },
			want: []sdk.Result{sdk.Retry(3*time.Second, "imported but its revenue was not recorded"), ok, ok}, imports: 1},
		{name: "engage rejects", engage: func(request) answer { return answer{Body: `{"status":0,"error":"$distinct_id is invalid"}`} },
			want: []sdk.Result{sdk.Drop("$distinct_id is invalid"), ok, ok}, imports: 1},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(r request) answer {
				if r.Path == "/engage" && tt.engage != nil {
					return tt.engage(r)
				}
				if r.Path == "/import" && tt.import_ != nil {
					return tt.import_(r)
				}
				return answer{}
			})
			c := destinationtest.Start(t, bin, config(f.URL))
			batch := []sdk.Event{simple(t, 0, `{"revenue":10}`), simple(t, 1, `{}`), simple(t, 2, `{}`)}
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), tt.want)
			if n := len(f.requests("/import")); n != tt.imports {
				t.Errorf("%d /import requests, want %d", n, tt.imports)
			}
			engageWanted := tt.want[0].Status == sdk.StatusOK || tt.engage != nil
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
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	batch := make([]sdk.Event, len(tests))
	for i, tt := range tests {
		batch[i] = event(t, tt.messageID, "u-1", "", at, `{}`)
	}
	destinationtest.Deliver(t, c, batch)
	destinationtest.Deliver(t, c, batch) // a retry sends the same ids
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
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL+"/",
		"service_account_username", nil, "service_account_secret", nil, "project_id", nil,
		"api_secret", "s3cret", "gzip", false))
	destinationtest.Deliver(t, c, []sdk.Event{simple(t, 0, `{}`)})
	imports := f.requests("/import")
	if len(imports) != 1 {
		t.Fatalf("%d /import requests, want 1 (a trailing / on endpoint must not matter)", len(imports))
	}
	imp := imports[0]
	if u, p, ok := (&http.Request{Header: imp.Header}).BasicAuth(); !ok || u != "s3cret" || p != "" {
		t.Errorf("basic auth %q:%q, want the API secret as user name", u, p)
	}
	if imp.Query.Has("project_id") || imp.Query.Get("strict") != "1" {
		t.Errorf("query %v, want strict=1 and no project_id", imp.Query)
	}
	if ce := imp.Header.Get("Content-Encoding"); ce != "" {
		t.Errorf("Content-Encoding %q with gzip = false", ce)
	}
}

func TestUnreachableRetries(t *testing.T) {
	srv := destinationtest.NewServer(t, nil)
	srv.Close() // nothing listens at its address now
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(srv.URL))
	if r := destinationtest.Deliver(t, c, []sdk.Event{simple(t, 0, `{}`)})[0]; r.Status != sdk.StatusRetry {
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
			destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
		})
	}
}

func TestSampleConfig(t *testing.T) {
	// Configure makes no network calls, so api.mixpanel.com is never contacted.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg),
		// The commented-out settings are valid too; api_secret replaces the
		// service account.
		strings.NewReplacer(
			"# api_secret", "api_secret",
			"\nservice_account_username =", "\n# service_account_username =",
			"\nservice_account_secret =", "\n# service_account_secret =",
			"\nproject_id =", "\n# project_id =",
			"# convert_to", "convert_to",
			"# rates", "rates",
		).Replace)
}
