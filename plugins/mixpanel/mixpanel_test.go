package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
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

const pkg = "trackd.dev/trackd/plugins/mixpanel"

// request is a request to the fake Mixpanel, its body decoded.
type request struct {
	destinationtest.Request
	items []json.RawMessage // the JSON array of the body
}

// decode reads a request as Mixpanel does: /import and /engage take a JSON
// array as an application/json body, /groups takes it as the data field of
// a form. It also checks each item against the endpoint's documented fields,
// so that a misnamed or misplaced field is an error.
func decode(r destinationtest.Request) (request, error) {
	req := request{Request: r}
	wantType, body := "application/json", r.Body
	if r.Path == "/groups" {
		wantType = "application/x-www-form-urlencoded"
	}
	if ct := r.Header.Get("Content-Type"); ct != wantType {
		return req, fmt.Errorf("Content-Type %q, want %q", ct, wantType)
	}
	if r.Path == "/engage" || r.Path == "/groups" {
		if r.Query.Get("verbose") != "1" {
			return req, fmt.Errorf("query %v without verbose=1, which makes Mixpanel say whether it took the updates", r.Query)
		}
		if r.Header.Get("Content-Encoding") != "" {
			return req, fmt.Errorf("Content-Encoding %q; %s does not accept compression", r.Header.Get("Content-Encoding"), r.Path)
		}
	}
	if r.Path == "/groups" {
		form, err := url.ParseQuery(string(body))
		if err != nil || len(form) != 1 || len(form["data"]) != 1 {
			return req, fmt.Errorf("form %q (%v), want one field data", body, err)
		}
		body = []byte(form.Get("data"))
	}
	if err := json.Unmarshal(body, &req.items); err != nil {
		return req, fmt.Errorf("body is not a JSON array: %v: %s", err, body)
	}
	for i, it := range req.items {
		if err := checkItem(r.Path, it); err != nil {
			return req, fmt.Errorf("item %d: %v: %s", i, err, it)
		}
	}
	return req, nil
}

// The operations /engage and /groups take, one per update.
var (
	profileOps = []string{"$set", "$set_once", "$add", "$union", "$append", "$remove", "$unset", "$delete"}
	groupOps   = []string{"$set", "$set_once", "$union", "$remove", "$unset", "$delete"}
)

// checkItem checks an item of a request to path against Mixpanel's
// reference for that endpoint.
func checkItem(path string, raw json.RawMessage) error {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("not a JSON object")
	}
	str := func(m map[string]json.RawMessage, key string) (string, error) {
		var s string
		if err := json.Unmarshal(m[key], &s); err != nil || s == "" {
			return "", fmt.Errorf("%s is not a non-empty string", key)
		}
		return s, nil
	}
	only := func(m map[string]json.RawMessage, allowed ...string) error {
		for k := range m {
			if !slices.Contains(allowed, k) {
				return fmt.Errorf("unexpected field %q", k)
			}
		}
		return nil
	}
	switch path {
	case "/import":
		if err := only(obj, "event", "properties"); err != nil {
			return err
		}
		name, err := str(obj, "event")
		if err != nil {
			return err
		}
		var props map[string]json.RawMessage
		if json.Unmarshal(obj["properties"], &props) != nil || props == nil {
			return fmt.Errorf("properties is not an object")
		}
		required := []string{"token", "distinct_id", "$insert_id"}
		switch name {
		case "$identify":
			required = append(required, "$identified_id", "$anon_id")
		case "$create_alias":
			required = append(required, "alias")
		}
		for _, k := range required {
			if _, err := str(props, k); err != nil {
				return fmt.Errorf("properties.%v", err)
			}
		}
		var ms int64
		if json.Unmarshal(props["time"], &ms) != nil || ms < 1e12 {
			return fmt.Errorf("properties.time %s is not milliseconds since the epoch", props["time"])
		}
		for _, k := range []string{"$token", "$distinct_id", "$time"} {
			if _, ok := props[k]; ok {
				return fmt.Errorf("properties.%s is a profile update's field, not an event's", k)
			}
		}
	case "/engage", "/groups":
		fields, ops, ids := []string{"$token", "$time", "$ignore_time"}, profileOps, []string{"$distinct_id"}
		if path == "/engage" {
			fields = append(fields, "$distinct_id", "$ip", "$ignore_alias")
		} else {
			fields, ops, ids = append(fields, "$group_key", "$group_id"), groupOps, []string{"$group_key", "$group_id"}
		}
		if err := only(obj, append(fields, ops...)...); err != nil {
			return err
		}
		for _, k := range append([]string{"$token"}, ids...) {
			if _, err := str(obj, k); err != nil {
				return err
			}
		}
		n := 0
		for _, op := range ops {
			if v, ok := obj[op]; ok {
				n++
				var m map[string]json.RawMessage
				if op != "$unset" && op != "$delete" && (json.Unmarshal(v, &m) != nil || m == nil) {
					return fmt.Errorf("%s is not an object", op)
				}
				for k, list := range m {
					var items []json.RawMessage
					if op == "$union" && json.Unmarshal(list, &items) != nil {
						return fmt.Errorf("$union.%s is not a list", k)
					}
				}
			}
		}
		if n != 1 {
			return fmt.Errorf("%d operations, want one", n)
		}
		if t, ok := obj["$time"]; ok {
			var ms int64
			if json.Unmarshal(t, &ms) != nil || ms < 1e12 {
				return fmt.Errorf("$time %s is not milliseconds since the epoch", t)
			}
		}
		if ip, ok := obj["$ip"]; ok {
			if _, err := str(obj, "$ip"); err != nil {
				return fmt.Errorf("$ip %s is not an IP address", ip)
			}
		}
	default:
		return fmt.Errorf("no such endpoint")
	}
	return nil
}

type answer = destinationtest.Answer

// fake plays Mixpanel's /import, /engage and /groups. By default it accepts
// everything, as Mixpanel does: /import with a strict 200, /engage and
// /groups with verbose=1's {"status":1}. A request that Mixpanel would not
// read as the plugin meant it fails the test.
type fake struct{ *destinationtest.Server }

func newFake(t *testing.T, onPost func(request) answer) fake {
	return fake{destinationtest.NewServer(t, func(r destinationtest.Request) answer {
		req, err := decode(r)
		if err != nil {
			t.Errorf("%s: %v", r.Path, err)
			return answer{Status: http.StatusBadRequest, Body: `{"error":"the fake could not read the request","status":0}`}
		}
		var a answer
		if onPost != nil {
			a = onPost(req)
		}
		if a.Body == "" && (a.Status == 0 || a.Status == http.StatusOK) {
			a.Body = `{"code":200,"num_records_imported":` + fmt.Sprint(len(req.items)) + `,"status":"OK"}`
			if req.Path != "/import" {
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
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(destinationtest.HangUpURL(t)))
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
		{"empty group_key", config(ep, "group_key", ""), "group_key is empty"},
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

func TestTakesEveryType(t *testing.T) {
	c := destinationtest.Launch(t, destinationtest.Build(t, pkg))
	types, err := c.Configure(context.Background(), config("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(types, sdk.AllTypes()) {
		t.Errorf("types %v, want %v", types, sdk.AllTypes())
	}
}

// call builds a normalized call of any type at the time at, with the
// messageId "m-1" unless it has one.
func call(t *testing.T, c destinationtest.Call) sdk.Event {
	if c.MessageID == "" {
		c.MessageID = "m-1"
	}
	c.Timestamp = at
	return destinationtest.Event(t, c)
}

// withField returns e with its JSON's top-level key set to the JSON value,
// for fields destinationtest.Call has none for, such as a page's category.
func withField(t *testing.T, e sdk.Event, key, value string) sdk.Event {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(e.JSON, &m); err != nil {
		t.Fatal(err)
	}
	m[key] = json.RawMessage(value)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	e.JSON = b
	return e
}

// items returns the canonical JSON of every item sent to path, in order.
func (f fake) items(t *testing.T, path string) []string {
	var out []string
	for _, r := range f.requests(path) {
		for _, it := range r.items {
			out = append(out, destinationtest.CanonicalJSON(t, it))
		}
	}
	return out
}

// canonical returns the canonical JSON of each of js.
func canonical(t *testing.T, js ...string) []string {
	out := make([]string, len(js))
	for i, j := range js {
		out[i] = destinationtest.CanonicalJSON(t, []byte(j))
	}
	return out
}

// checkItems checks that path received exactly want, in order.
func checkItems(t *testing.T, f fake, path string, want ...string) {
	t.Helper()
	got := f.items(t, path)
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, canonical(t, want...)) {
		t.Errorf("%s got\n  %s\nwant\n  %s", path, strings.Join(got, "\n  "), strings.Join(canonical(t, want...), "\n  "))
	}
}

func TestIdentify(t *testing.T) {
	const allTraits = `{"email":"ada@example.com","firstName":"Ada","lastName":"Lovelace","name":"Ada Lovelace",` +
		`"phone":"+441234","username":"ada","avatar":"https://example.com/a.png","createdAt":"2020-01-01T00:00:00Z","plan":"pro"}`
	const renamed = `{"$email":"ada@example.com","$first_name":"Ada","$last_name":"Lovelace","$name":"Ada Lovelace",` +
		`"$phone":"+441234","$username":"ada","$avatar":"https://example.com/a.png","$created":"2020-01-01T00:00:00Z","plan":"pro"}`
	tests := []struct {
		name    string
		call    destinationtest.Call
		engage  []string
		import_ []string
	}{
		{
			name: "both ids, every renamed trait, context.ip",
			call: destinationtest.Call{UserID: "user-1", AnonymousID: "3f1e5a0c-8a8e-4c57-9d54-1c2b8f6f0a11", Traits: allTraits,
				Context: `{"ip":"203.0.113.9","library":{"name":"analytics.js"}}`},
			engage: []string{`{"$token":"tok","$distinct_id":"user-1","$ip":"203.0.113.9","$time":1579847342403,"$set":` + renamed + `}`},
			import_: []string{`{"event":"$identify","properties":{"$identified_id":"user-1","$anon_id":"3f1e5a0c-8a8e-4c57-9d54-1c2b8f6f0a11",` +
				`"distinct_id":"user-1","time":1579847342403,"$insert_id":"m-1","token":"tok"}}`},
		},
		{
			name:   "userId only: no $identify, no $ip without context.ip",
			call:   destinationtest.Call{UserID: "user-1", Traits: `{"plan":"pro","email":"a@b.c"}`},
			engage: []string{`{"$token":"tok","$distinct_id":"user-1","$time":1579847342403,"$set":{"plan":"pro","$email":"a@b.c"}}`},
		},
		{
			name:   "anonymousId only is the distinct id",
			call:   destinationtest.Call{AnonymousID: "anon-1", Traits: `{"plan":"free"}`, Context: `{"ip":42}`},
			engage: []string{`{"$token":"tok","$distinct_id":"anon-1","$time":1579847342403,"$set":{"plan":"free"}}`},
		},
		{
			name: "no traits: $identify alone",
			call: destinationtest.Call{UserID: "user-1", AnonymousID: "anon-1"},
			import_: []string{`{"event":"$identify","properties":{"$identified_id":"user-1","$anon_id":"anon-1",` +
				`"distinct_id":"user-1","time":1579847342403,"$insert_id":"m-1","token":"tok"}}`},
		},
		{
			name: "no traits and one id: nothing to send",
			call: destinationtest.Call{UserID: "user-1"},
		},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(f.URL))
			tt.call.Type = sdk.TypeIdentify
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, []sdk.Event{call(t, tt.call)}), []sdk.Result{sdk.OK()})
			checkItems(t, f, "/engage", tt.engage...)
			checkItems(t, f, "/import", tt.import_...)
			checkItems(t, f, "/groups")
		})
	}
}

func TestPageAndScreen(t *testing.T) {
	const rest = `"distinct_id":"user-1","time":1579847342403,"$insert_id":"m-1","token":"tok"`
	tests := []struct {
		name     string
		typ      string
		pageName string
		category string // JSON, "" for none
		want     string
	}{
		{"named page", sdk.TypePage, "Pricing", `"Docs"`,
			`{"event":"Viewed Pricing Page","properties":{"url":"https://example.com/p","name":"Pricing","category":"Docs",` + rest + `}}`},
		{"page without name", sdk.TypePage, "", "",
			`{"event":"Loaded a Page","properties":{"url":"https://example.com/p",` + rest + `}}`},
		{"page with null category", sdk.TypePage, "Home", "null",
			`{"event":"Viewed Home Page","properties":{"url":"https://example.com/p","name":"Home",` + rest + `}}`},
		{"named screen", sdk.TypeScreen, "Settings", "",
			`{"event":"Viewed Settings Screen","properties":{"url":"https://example.com/p","name":"Settings",` + rest + `}}`},
		{"screen without name", sdk.TypeScreen, "", `"Onboarding"`,
			`{"event":"Loaded a Screen","properties":{"url":"https://example.com/p","category":"Onboarding",` + rest + `}}`},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(f.URL))
			e := call(t, destinationtest.Call{Type: tt.typ, Name: tt.pageName, UserID: "user-1", Properties: `{"url":"https://example.com/p"}`})
			if tt.category != "" {
				e = withField(t, e, "category", tt.category)
			}
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, []sdk.Event{e}), []sdk.Result{sdk.OK()})
			checkItems(t, f, "/import", tt.want)
			checkItems(t, f, "/engage")
			checkItems(t, f, "/groups")
		})
	}
}

func TestGroup(t *testing.T) {
	tests := []struct {
		name     string
		settings []any
		traits   string
		groups   []string
		engage   string
	}{
		{
			name:   "default group key",
			traits: `{"name":"Initech","employees":120}`,
			groups: []string{`{"$token":"tok","$group_key":"$group_id","$group_id":"g-7","$time":1579847342403,"$set":{"name":"Initech","employees":120}}`},
			engage: `{"$token":"tok","$distinct_id":"user-1","$time":1579847342403,"$union":{"$group_id":["g-7"]}}`,
		},
		{
			name:     "custom group key",
			settings: []any{"group_key", "company_id"},
			traits:   `{"plan":"enterprise"}`,
			groups:   []string{`{"$token":"tok","$group_key":"company_id","$group_id":"g-7","$time":1579847342403,"$set":{"plan":"enterprise"}}`},
			engage:   `{"$token":"tok","$distinct_id":"user-1","$time":1579847342403,"$union":{"company_id":["g-7"]}}`,
		},
		{
			name:     "no traits: membership only",
			settings: []any{"group_key", "company_id"},
			engage:   `{"$token":"tok","$distinct_id":"user-1","$time":1579847342403,"$union":{"company_id":["g-7"]}}`,
		},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, nil)
			c := destinationtest.Start(t, bin, config(f.URL, tt.settings...))
			e := call(t, destinationtest.Call{Type: sdk.TypeGroup, UserID: "user-1", GroupID: "g-7", Traits: tt.traits})
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, []sdk.Event{e}), []sdk.Result{sdk.OK()})
			checkItems(t, f, "/groups", tt.groups...)
			checkItems(t, f, "/engage", tt.engage)
			checkItems(t, f, "/import")
		})
	}
}

func TestAlias(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	e := call(t, destinationtest.Call{Type: sdk.TypeAlias, UserID: "user-1", PreviousID: "anon-1"})
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, []sdk.Event{e}), []sdk.Result{sdk.OK()})
	checkItems(t, f, "/import", `{"event":"$create_alias","properties":{"distinct_id":"anon-1","alias":"user-1",`+
		`"time":1579847342403,"$insert_id":"m-1","token":"tok"}}`)
	checkItems(t, f, "/engage")
	checkItems(t, f, "/groups")
}

// everyType is a batch with each call type, and what each needs:
// 0 track, 1 track with revenue (/import, then /engage), 2 page, 3 screen,
// 4 identify with one id (/engage), 5 identify with both ids (/engage and
// /import), 6 and 7 group (/groups and /engage), 8 alias.
func everyType(t *testing.T) []sdk.Event {
	return []sdk.Event{
		call(t, destinationtest.Call{MessageID: "m-0", Name: "Signed Up", UserID: "user-0"}),
		call(t, destinationtest.Call{MessageID: "m-1", Name: "Order Completed", UserID: "user-1", Properties: `{"revenue":10}`}),
		call(t, destinationtest.Call{MessageID: "m-2", Type: sdk.TypePage, Name: "Home", UserID: "user-2"}),
		call(t, destinationtest.Call{MessageID: "m-3", Type: sdk.TypeScreen, AnonymousID: "anon-3"}),
		call(t, destinationtest.Call{MessageID: "m-4", Type: sdk.TypeIdentify, UserID: "user-4", Traits: `{"plan":"pro"}`}),
		call(t, destinationtest.Call{MessageID: "m-5", Type: sdk.TypeIdentify, UserID: "user-5", AnonymousID: "anon-5", Traits: `{"plan":"pro"}`}),
		call(t, destinationtest.Call{MessageID: "m-6", Type: sdk.TypeGroup, UserID: "user-6", GroupID: "g-6", Traits: `{"name":"Six"}`}),
		call(t, destinationtest.Call{MessageID: "m-7", Type: sdk.TypeGroup, UserID: "user-7", GroupID: "g-7", Traits: `{"name":"Seven"}`}),
		call(t, destinationtest.Call{MessageID: "m-8", Type: sdk.TypeAlias, UserID: "user-8", PreviousID: "anon-8"}),
	}
}

func TestOneEndpointFailing(t *testing.T) {
	ok := sdk.OK()
	retry := func(after time.Duration, reason string) sdk.Result { return sdk.Retry(after, reason) }
	tests := []struct {
		name    string
		answer  func(r request) answer // for every request; zero for Mixpanel's 200
		want    []sdk.Result           // for everyType
		imports int                    // requests expected to each endpoint
		engages int
		groups  int
		// notImported: the track call with revenue was not imported, so
		// its revenue is not sent to /engage.
		notImported bool
	}{
		{
			name:    "all ok",
			want:    []sdk.Result{ok, ok, ok, ok, ok, ok, ok, ok, ok},
			imports: 1, engages: 1, groups: 1,
		},
		{
			name: "engage 500 retries only the calls that needed it",
			answer: func(r request) answer {
				if r.Path == "/engage" {
					return answer{Status: 500}
				}
				return answer{}
			},
			want: []sdk.Result{ok, retry(0, "imported but its revenue was not recorded: POST"), ok, ok,
				retry(0, "/engage"), retry(0, "500"), retry(0, "/engage"), retry(0, "500"), ok},
			imports: 1, engages: 1, groups: 1,
		},
		{
			name: "groups 503 with Retry-After",
			answer: func(r request) answer {
				if r.Path == "/groups" {
					return answer{Status: 503, Header: map[string]string{"Retry-After": "9"}}
				}
				return answer{}
			},
			want:    []sdk.Result{ok, ok, ok, ok, ok, ok, retry(9*time.Second, "/groups"), retry(9*time.Second, "503"), ok},
			imports: 1, engages: 1, groups: 1,
		},
		{
			name: "import 500: no revenue recorded, profiles still updated",
			answer: func(r request) answer {
				if r.Path == "/import" {
					return answer{Status: 500}
				}
				return answer{}
			},
			want: []sdk.Result{retry(0, "/import"), retry(0, "500"), retry(0, "500"), retry(0, "500"),
				ok, retry(0, "/import"), ok, ok, retry(0, "500")},
			imports: 1, engages: 1, groups: 1, notImported: true,
		},
		{
			name: "groups rejects the updates",
			answer: func(r request) answer {
				if r.Path == "/groups" {
					return answer{Body: `{"status":0,"error":"$group_key is not a group key of the project"}`}
				}
				return answer{}
			},
			want:    []sdk.Result{ok, ok, ok, ok, ok, ok, sdk.Drop("not a group key"), sdk.Drop("POST /groups"), ok},
			imports: 1, engages: 1, groups: 1,
		},
		{
			name: "$identify rejected while its profile update is retried: retry",
			answer: func(r request) answer {
				switch r.Path {
				case "/import":
					for i, it := range r.items {
						if strings.Contains(string(it), `"$identify"`) {
							return answer{Status: 400, Body: fmt.Sprintf(`{"code":400,"status":"Bad Request","num_records_imported":%d,`+
								`"failed_records":[{"index":%d,"field":"properties.$anon_id","message":"must be a UUID v4"}]}`, len(r.items)-1, i)}
						}
					}
				case "/engage":
					for _, it := range r.items {
						if strings.Contains(string(it), `"user-5"`) {
							return answer{Status: 429, Header: map[string]string{"Retry-After": "4"}}
						}
					}
				}
				return answer{}
			},
			want: []sdk.Result{ok, retry(4*time.Second, "revenue was not recorded"), ok, ok,
				retry(4*time.Second, "429"), retry(4*time.Second, "429"), retry(4*time.Second, "429"), retry(4*time.Second, "429"), ok},
			imports: 1, engages: 1, groups: 1,
		},
		{
			name: "$identify rejected: identify dropped, the rest ok",
			answer: func(r request) answer {
				for i, it := range r.items {
					if r.Path == "/import" && strings.Contains(string(it), `"$identify"`) {
						return answer{Status: 400, Body: fmt.Sprintf(`{"code":400,"status":"Bad Request","num_records_imported":%d,`+
							`"failed_records":[{"index":%d,"field":"properties.$anon_id","message":"must be a UUID v4"}]}`, len(r.items)-1, i)}
					}
				}
				return answer{}
			},
			want:    []sdk.Result{ok, ok, ok, ok, ok, sdk.Drop("properties.$anon_id: must be a UUID v4"), ok, ok, ok},
			imports: 1, engages: 1, groups: 1,
		},
		{
			name: "groups 413 halves",
			answer: func(r request) answer {
				if r.Path == "/groups" && len(r.items) > 1 {
					return answer{Status: 413, Body: `{"error":"request exceeds max limit"}`}
				}
				return answer{}
			},
			want:    []sdk.Result{ok, ok, ok, ok, ok, ok, ok, ok, ok},
			imports: 1, engages: 1, groups: 3,
		},
	}
	bin := destinationtest.Build(t, pkg)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(r request) answer {
				if tt.answer == nil {
					return answer{}
				}
				return tt.answer(r)
			})
			c := destinationtest.Start(t, bin, config(f.URL))
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, everyType(t)), tt.want)
			for path, n := range map[string]int{"/import": tt.imports, "/engage": tt.engages, "/groups": tt.groups} {
				if got := len(f.requests(path)); got != n {
					t.Errorf("%d %s requests, want %d", got, path, n)
				}
			}
			// The revenue of a track call is recorded only once it is imported.
			if charged := strings.Contains(strings.Join(f.items(t, "/engage"), "\n"), "$transactions"); charged == tt.notImported {
				t.Errorf("/engage has the charge: %v, want %v", charged, !tt.notImported)
			}
		})
	}
}

func TestEveryEndpointSplitsAtItsLimit(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	// 2100 identify calls with both ids (/engage and /import each) and 2100
	// group calls (/groups and /engage each).
	const n = 2100
	batch := make([]sdk.Event, 0, 2*n)
	for i := range n {
		batch = append(batch, call(t, destinationtest.Call{Type: sdk.TypeIdentify, MessageID: fmt.Sprintf("i-%04d", i),
			UserID: fmt.Sprintf("user-%d", i), AnonymousID: fmt.Sprintf("anon-%d", i), Traits: `{"plan":"pro"}`}))
	}
	for i := range n {
		batch = append(batch, call(t, destinationtest.Call{Type: sdk.TypeGroup, MessageID: fmt.Sprintf("g-%04d", i),
			UserID: fmt.Sprintf("user-%d", i), GroupID: fmt.Sprintf("g-%d", i), Traits: `{"size":1}`}))
	}
	for i, r := range destinationtest.Deliver(t, c, batch) {
		if r.Status != sdk.StatusOK {
			t.Fatalf("call %d: %v (%q), want ok", i, r.Status, r.Reason)
		}
	}
	for path, want := range map[string][]int{
		"/import": {2000, 100},
		"/engage": {2000, 2000, 200},
		"/groups": {2000, 100},
	} {
		var sizes []int
		for _, r := range f.requests(path) {
			sizes = append(sizes, len(r.items))
		}
		if !slices.Equal(sizes, want) {
			t.Errorf("%s request sizes %v, want %v", path, sizes, want)
		}
	}
	// In order: the second /engage request starts with the update of call 2000.
	if engages := f.requests("/engage"); len(engages) == 3 && !strings.Contains(string(engages[1].items[0]), `"user-2000"`) {
		t.Errorf("second /engage request starts with %s, want call 2000's update", engages[1].items[0])
	}
}

func TestOversizedUpdateIsDropped(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	big := `{"notes":"` + strings.Repeat("x", 1_000_000) + `"}`
	batch := []sdk.Event{
		call(t, destinationtest.Call{Type: sdk.TypeIdentify, MessageID: "m-0", UserID: "user-0", Traits: big}),
		call(t, destinationtest.Call{Type: sdk.TypeGroup, MessageID: "m-1", UserID: "user-1", GroupID: "g-1", Traits: big}),
		call(t, destinationtest.Call{Type: sdk.TypeIdentify, MessageID: "m-2", UserID: "user-2", Traits: `{"plan":"pro"}`}),
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{
		sdk.Drop("Mixpanel takes at most 1000000"),
		sdk.Drop("Mixpanel takes at most 1000000"),
		sdk.OK(),
	})
	checkItems(t, f, "/engage", `{"$token":"tok","$distinct_id":"user-2","$time":1579847342403,"$set":{"plan":"pro"}}`)
	checkItems(t, f, "/groups")
}

func TestCallsMissingWhatMixpanelNeeds(t *testing.T) {
	f := newFake(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), config(f.URL))
	noGroup := call(t, destinationtest.Call{Type: sdk.TypeGroup, UserID: "user-1", GroupID: "g"})
	noGroup.GroupID = ""
	noPrevious := call(t, destinationtest.Call{Type: sdk.TypeAlias, UserID: "user-1", PreviousID: "p"})
	noPrevious.PreviousID = ""
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, []sdk.Event{noGroup, noPrevious}), []sdk.Result{
		sdk.Drop("no groupId"),
		sdk.Drop("previousId"),
	})
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d requests for calls that were dropped", n)
	}
}
