package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/httpdest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/customerio"

const apiKey = "cio-k3y"

// received is the receivedAt of the track calls built here, as call's is
// fixed, so that calls built alike have the same size.
var received = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// call returns a normalized call of a type other than track as the daemon
// hands it to a plugin; fields are its own members, written as a producer
// would, spacing and all, which must reach the API untouched.
func call(t *testing.T, typ, messageID, fields string) sdk.Event {
	t.Helper()
	js := `{"type":"` + typ + `","messageId":"` + messageID + `",` + fields +
		`,"receivedAt":"2025-03-01T12:00:00.000Z","timestamp":"2025-03-01T11:59:58.120Z","version":2}`
	if !json.Valid([]byte(js)) {
		t.Fatalf("call %s is not valid JSON: %s", messageID, js)
	}
	var f struct{ UserID, AnonymousID, Name, GroupID, PreviousID string }
	if err := json.Unmarshal([]byte(js), &f); err != nil {
		t.Fatal(err)
	}
	return sdk.Event{
		JSON: []byte(js), MessageID: messageID, Type: typ, Name: f.Name,
		UserID: f.UserID, AnonymousID: f.AnonymousID, GroupID: f.GroupID, PreviousID: f.PreviousID,
		Timestamp: time.Date(2025, 3, 1, 11, 59, 58, 120_000_000, time.UTC),
	}
}

// everyType is one call of each of the six types.
func everyType(t *testing.T) []sdk.Event {
	return []sdk.Event{
		destinationtest.Event(t, destinationtest.Track{
			Name: "Order Completed", MessageID: "m-track", UserID: "u-1", ReceivedAt: received,
			Properties: `{"revenue":19.99, "currency":"EUR", "note":"<b>&</b>"}`,
			Context:    `{"ip":"203.0.113.7"}`,
		}),
		call(t, "identify", "m-identify", `"userId":"u-1","traits":{"email":"ada@example.com", "plan" : "pro"}`),
		call(t, "page", "m-page", `"anonymousId":"a-1","name":"Pricing","category":"Docs","properties":{"url":"https://example.com/pricing?a=<1>&b=2"}`),
		call(t, "screen", "m-screen", `"userId":"u-1","name":"Home","properties":{ }`),
		call(t, "group", "m-group", `"userId":"u-1","groupId":"g-1","traits":{"name":"Initech", "employees":1.50e2}`),
		call(t, "alias", "m-alias", `"userId":"u-1","previousId":"a-1","context":{"library":{"name":"analytics-go"}}`),
	}
}

// batchOf decodes a request body, {"batch": [...]}, failing the test if it is
// anything else.
func batchOf(t *testing.T, body []byte) []json.RawMessage {
	t.Helper()
	var req struct {
		Batch []json.RawMessage `json:"batch"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(&req); err != nil {
		t.Fatalf("request body is not {\"batch\": [...]}: %v", err)
	}
	return req.Batch
}

// messageIDs returns the messageId of each call of a request body.
func messageIDs(t *testing.T, body []byte) []string {
	t.Helper()
	var ids []string
	for _, c := range batchOf(t, body) {
		var m struct {
			MessageID string `json:"messageId"`
		}
		if err := json.Unmarshal(c, &m); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.MessageID)
	}
	return ids
}

func TestDeliverEveryType(t *testing.T) {
	for _, gzip := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gzip), func(t *testing.T) {
			srv := destinationtest.NewServer(t, nil)
			c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
				"api_key":  apiKey,
				"endpoint": srv.URL + "/v1/",
				"gzip":     gzip,
			})
			batch := everyType(t)
			results := destinationtest.Deliver(t, c, batch)
			destinationtest.CheckResults(t, results, slices.Repeat([]sdk.Result{sdk.OK()}, len(batch)))

			reqs := srv.Requests()
			if len(reqs) != 1 {
				t.Fatalf("%d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if r.Method != http.MethodPost || r.Path != "/v1/batch" {
				t.Errorf("%s %s, want POST /v1/batch", r.Method, r.Path)
			}
			user, password, ok := (&http.Request{Header: r.Header}).BasicAuth()
			if !ok || user != apiKey || password != "" {
				t.Errorf("Basic auth %q:%q (%v), want the api_key and an empty password", user, password, ok)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if enc, want := r.Header.Get("Content-Encoding"), map[bool]string{true: "gzip"}[gzip]; enc != want {
				t.Errorf("Content-Encoding %q, want %q", enc, want)
			}

			calls := batchOf(t, r.Body)
			if len(calls) != len(batch) {
				t.Fatalf("%d calls in the batch, want %d", len(calls), len(batch))
			}
			for i, e := range batch {
				if !bytes.Equal(calls[i], e.JSON) {
					t.Errorf("%s: got\n%s\nwant it byte for byte as received:\n%s", e.MessageID, calls[i], e.JSON)
				}
				if got, want := destinationtest.CanonicalJSON(t, calls[i]), destinationtest.CanonicalJSON(t, e.JSON); got != want {
					t.Errorf("%s: got %s, want %s", e.MessageID, got, want)
				}
			}
		})
	}
}

func TestTypes(t *testing.T) {
	// Through the handshake, as the daemon asks.
	c := destinationtest.Launch(t, destinationtest.Build(t, pkg))
	types, err := c.Configure(t.Context(), map[string]any{"api_key": apiKey})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"track", "identify", "page", "screen", "group", "alias"}
	if !slices.Equal(types, want) {
		t.Errorf("the plugin takes %q, want %q", types, want)
	}
}

// recorder is a RoundTripper that answers 200 to everything and records
// the URLs, so that a test can see where requests would go without sending
// them.
type recorder struct {
	mu   sync.Mutex
	urls []string
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.urls = append(r.urls, req.URL.String())
	r.mu.Unlock()
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(strings.NewReader("{}")), Request: req}, nil
}

func TestEndpointByRegion(t *testing.T) {
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"default", nil, "https://cdp.customer.io/v1/batch"},
		{"us", map[string]any{"region": "us"}, "https://cdp.customer.io/v1/batch"},
		{"empty region", map[string]any{"region": ""}, "https://cdp.customer.io/v1/batch"},
		{"eu", map[string]any{"region": "eu"}, "https://cdp-eu.customer.io/v1/batch"},
		{"EU", map[string]any{"region": "EU"}, "https://cdp-eu.customer.io/v1/batch"},
		{"endpoint wins", map[string]any{"region": "eu", "endpoint": "https://api.segment.io/v1"}, "https://api.segment.io/v1/batch"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := map[string]any{"api_key": apiKey}
			for k, v := range tt.settings {
				table[k] = v
			}
			s, err := sdk.NewSettings(table)
			if err != nil {
				t.Fatal(err)
			}
			var c CustomerIO
			if err := c.Configure(t.Context(), s); err != nil {
				t.Fatalf("Configure: %v", err)
			}
			rt := &recorder{}
			c.client = httpdest.New(httpdest.Options{Transport: rt})
			results := c.Deliver(t.Context(), everyType(t)[:1])
			destinationtest.CheckResults(t, results, []sdk.Result{sdk.OK()})
			if !slices.Equal(rt.urls, []string{tt.want}) {
				t.Errorf("requests to %q, want one to %q", rt.urls, tt.want)
			}
		})
	}
}

// apiAnswers plays the API: it answers a request by the userId of its first
// call, a key of answers.
func apiAnswers(t *testing.T, answers map[string]destinationtest.Answer) *destinationtest.Server {
	return destinationtest.NewServer(t, func(r destinationtest.Request) destinationtest.Answer {
		calls := batchOf(t, r.Body)
		if len(calls) == 0 {
			return destinationtest.Answer{Status: http.StatusBadRequest, Body: `{"message":"empty batch"}`}
		}
		var first struct{ UserID string }
		_ = json.Unmarshal(calls[0], &first)
		return answers[first.UserID]
	})
}

func TestAnswers(t *testing.T) {
	tests := []struct {
		name   string
		answer destinationtest.Answer
		want   sdk.Result
	}{
		{"200", destinationtest.Answer{Body: `{"success":true}`}, sdk.OK()},
		{"429 with Retry-After", destinationtest.Answer{Status: 429, Header: map[string]string{"Retry-After": "7"}},
			sdk.Retry(7*time.Second, "POST %s/v1/batch: 429 Too Many Requests")},
		{"429", destinationtest.Answer{Status: 429}, sdk.Retry(0, "429 Too Many Requests")},
		{"408", destinationtest.Answer{Status: 408}, sdk.Retry(0, "408")},
		{"500", destinationtest.Answer{Status: 500, Body: "oops"}, sdk.Retry(0, "500 Internal Server Error: oops")},
		{"503 with Retry-After", destinationtest.Answer{Status: 503, Header: map[string]string{"Retry-After": "30"}},
			sdk.Retry(30*time.Second, "503")},
		{"400 message", destinationtest.Answer{Status: 400, Body: `{"success": false, "message": "batch has\n 2 calls without a type"}`},
			sdk.Drop("POST %s/v1/batch: 400 Bad Request: batch has 2 calls without a type")},
		{"400 errors", destinationtest.Answer{Status: 400, Body: `{"errors":[{"message":"userId is too long"}]}`},
			sdk.Drop("400 Bad Request: userId is too long")},
		{"401 text", destinationtest.Answer{Status: 401, Body: "Unauthorized: invalid write key"},
			sdk.Drop("401 Unauthorized: Unauthorized: invalid write key")},
		{"302", destinationtest.Answer{Status: 302, Header: map[string]string{"Location": "/elsewhere"}}, sdk.Drop("302 Found")},
	}
	answers := make(map[string]destinationtest.Answer)
	for _, tt := range tests {
		answers[tt.name] = tt.answer
	}
	srv := apiAnswers(t, answers)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"api_key": apiKey, "endpoint": srv.URL + "/v1"})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			batch := []sdk.Event{
				call(t, "identify", "m-1-"+tt.name, `"userId":"`+tt.name+`","traits":{}`),
				destinationtest.Event(t, destinationtest.Track{Name: "Signed Up", MessageID: "m-2-" + tt.name, UserID: "u-2"}),
			}
			want := tt.want
			if strings.Contains(want.Reason, "%s") {
				want.Reason = fmt.Sprintf(want.Reason, srv.URL)
			}
			destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{want, want})
		})
	}
}

func TestUnreachableRetries(t *testing.T) {
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"api_key": apiKey, "endpoint": destinationtest.HangUpURL(t)})
	results := destinationtest.Deliver(t, c, everyType(t)[:2])
	for i, r := range results {
		if r.Status != sdk.StatusRetry {
			t.Errorf("call %d to an unreachable API: %v (%q), want retry", i, r.Status, r.Reason)
		}
	}
}

// sized returns a track call of exactly n bytes, padded in a property.
func sized(t *testing.T, userID, messageID string, n int) sdk.Event {
	t.Helper()
	tr := destinationtest.Track{Name: "Padded", MessageID: messageID, UserID: userID, ReceivedAt: received, Properties: `{"pad":""}`}
	base := len(destinationtest.Event(t, tr).JSON)
	if n < base {
		t.Fatalf("a call cannot be %d bytes; the smallest is %d", n, base)
	}
	tr.Properties = `{"pad":"` + strings.Repeat("x", n-base) + `"}`
	e := destinationtest.Event(t, tr)
	if len(e.JSON) != n {
		t.Fatalf("padded call is %d bytes, want %d", len(e.JSON), n)
	}
	return e
}

func TestOversizedCallDropped(t *testing.T) {
	srv := destinationtest.NewServer(t, nil)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"api_key": apiKey, "endpoint": srv.URL})
	batch := []sdk.Event{
		sized(t, "u-1", "m-small-1", 500),
		sized(t, "u-1", "m-limit", maxCallBytes),
		sized(t, "u-1", "m-big", maxCallBytes+1),
		sized(t, "u-1", "m-small-2", 500),
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), []sdk.Result{
		sdk.OK(),
		sdk.OK(),
		sdk.Drop("the call is 32001 bytes, over the tracking API's limit of 32000 bytes a call"),
		sdk.OK(),
	})
	reqs := srv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	if got, want := messageIDs(t, reqs[0].Body), []string{"m-small-1", "m-limit", "m-small-2"}; !slices.Equal(got, want) {
		t.Errorf("request holds %q, want %q", got, want)
	}
}

func TestSplitIntoRequests(t *testing.T) {
	// The API refuses the requests that start with a call of u-refused, so
	// that the test sees each request's answer go to its calls, and only to
	// them.
	srv := apiAnswers(t, map[string]destinationtest.Answer{
		"u-refused": {Status: http.StatusBadRequest, Body: `{"message":"refused"}`},
	})
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"api_key": apiKey, "endpoint": srv.URL, "concurrency": int64(2)})

	const calls, size = 50, 30_000 // 1.5 MB: at least 4 requests
	batch := make([]sdk.Event, calls)
	byID := make(map[string]sdk.Event)
	for i := range batch {
		user := "u-ok"
		if i >= calls/2 {
			user = "u-refused"
		}
		batch[i] = sized(t, user, fmt.Sprintf("m-%02d", i), size)
		byID[batch[i].MessageID] = batch[i]
	}
	results := destinationtest.Deliver(t, c, batch)

	reqs := srv.Requests()
	if len(reqs) < 4 {
		t.Fatalf("%d requests for %d bytes of calls, want at least 4 within %d bytes each", len(reqs), calls*size, maxRequestBytes)
	}
	sent := make(map[string]int)
	refused := make(map[string]bool)
	for _, r := range reqs {
		if len(r.Body) > maxRequestBytes {
			t.Errorf("a request body is %d bytes, over %d", len(r.Body), maxRequestBytes)
		}
		ids := messageIDs(t, r.Body)
		for k, c := range batchOf(t, r.Body) {
			sent[ids[k]]++
			if !bytes.Equal(c, byID[ids[k]].JSON) {
				t.Errorf("%s arrived changed", ids[k])
			}
			refused[ids[k]] = byID[ids[0]].UserID == "u-refused"
		}
	}
	var dropped int
	for i, e := range batch {
		if sent[e.MessageID] != 1 {
			t.Errorf("%s was sent %d times, want once", e.MessageID, sent[e.MessageID])
		}
		want := sdk.OK()
		if refused[e.MessageID] {
			want = sdk.Drop("400 Bad Request: refused")
			dropped++
		}
		if r := results[i]; r.Status != want.Status || !strings.Contains(r.Reason, want.Reason) {
			t.Errorf("%s: %v (%q), want %v (%q)", e.MessageID, r.Status, r.Reason, want.Status, want.Reason)
		}
	}
	if dropped == 0 || dropped == calls {
		t.Errorf("%d of %d calls were in refused requests; the test wants some, not all", dropped, calls)
	}
}

func TestRequestLimits(t *testing.T) {
	// 16 calls whose request is exactly maxRequestBytes: the envelope, 15
	// commas and the calls.
	exact := func(last int) []sdk.Event {
		room := maxRequestBytes - len(`{"batch":[]}`) - 15
		batch := make([]sdk.Event, 16)
		for i := range batch {
			n := room / 16
			if i == 15 {
				n = room - 15*(room/16) + last
			}
			batch[i] = sized(t, "u-1", fmt.Sprintf("m-%02d", i), n)
		}
		return batch
	}
	many := make([]sdk.Event, maxCallsPerRequest+1)
	for i := range many {
		many[i] = call(t, "alias", fmt.Sprintf("m-%04d", i), `"userId":"u-1","previousId":"a-1"`)
	}
	tests := []struct {
		name  string
		batch []sdk.Event
		sizes []int // calls in each request
	}{
		{"exactly the limit", exact(0), []int{16}},
		{"a byte over", exact(1), []int{15, 1}},
		{"too many calls", many, []int{maxCallsPerRequest, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := destinationtest.NewServer(t, nil)
			c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"api_key": apiKey, "endpoint": srv.URL, "concurrency": int64(1)})
			results := destinationtest.Deliver(t, c, tt.batch)
			destinationtest.CheckResults(t, results, slices.Repeat([]sdk.Result{sdk.OK()}, len(tt.batch)))
			var sizes []int
			for _, r := range srv.Requests() {
				if len(r.Body) > maxRequestBytes {
					t.Errorf("a request body is %d bytes, over %d", len(r.Body), maxRequestBytes)
				}
				sizes = append(sizes, len(batchOf(t, r.Body)))
			}
			if !slices.Equal(sizes, tt.sizes) {
				t.Errorf("requests of %v calls, want %v", sizes, tt.sizes)
			}
		})
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	const limit = 3
	inFlight := destinationtest.NewInFlight(limit)
	srv := destinationtest.NewServer(t, inFlight.Answer)
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{
		"api_key": apiKey, "endpoint": srv.URL, "concurrency": int64(limit),
		// Above the time InFlight may hold a request, so that the plugin
		// does not give up on one while the others are still on their way.
		"timeout": (2 * destinationtest.InFlightWait).String(),
	})

	batch := make([]sdk.Event, 7*16) // 7 requests of 16 calls of 30,000 bytes
	for i := range batch {
		batch[i] = sized(t, "u-1", fmt.Sprintf("m-%03d", i), 30_000)
	}
	destinationtest.CheckResults(t, destinationtest.Deliver(t, c, batch), slices.Repeat([]sdk.Result{sdk.OK()}, len(batch)))
	if n := len(srv.Requests()); n != 7 {
		t.Errorf("%d requests, want 7", n)
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
		{"missing api_key", nil, "api_key is empty"},
		{"empty api_key", map[string]any{"api_key": ""}, "api_key is empty"},
		{"api_key with space", map[string]any{"api_key": apiKey + " "}, "api_key starts or ends with white space"},
		{"bad region", map[string]any{"api_key": apiKey, "region": "apac"}, `region "apac" is not "us" or "eu"`},
		{"region not a string", map[string]any{"api_key": apiKey, "region": int64(1)}, `setting "region"`},
		{"endpoint not http", map[string]any{"api_key": apiKey, "endpoint": "ftp://example.com/v1"}, `endpoint "ftp://example.com/v1" is not an http`},
		{"endpoint without scheme", map[string]any{"api_key": apiKey, "endpoint": "cdp.customer.io/v1"}, `endpoint "cdp.customer.io/v1"`},
		{"endpoint with query", map[string]any{"api_key": apiKey, "endpoint": "https://example.com/v1?x=1"}, "endpoint"},
		{"endpoint with user", map[string]any{"api_key": apiKey, "endpoint": "https://me:pw@example.com/v1"}, "endpoint"},
		{"bad timeout", map[string]any{"api_key": apiKey, "timeout": "soon"}, `setting "timeout"`},
		{"zero timeout", map[string]any{"api_key": apiKey, "timeout": "0s"}, "timeout"},
		{"bad concurrency", map[string]any{"api_key": apiKey, "concurrency": int64(0)}, "concurrency is 0"},
		{"unknown setting", map[string]any{"api_key": apiKey, "write_key": "x"}, `unknown setting "write_key"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
			if err != nil && strings.Contains(err.Error(), apiKey) {
				t.Errorf("error %q quotes the api_key", err)
			}
		})
	}
}

func TestSampleConfig(t *testing.T) {
	// Configure makes no network calls, so no endpoint is contacted.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg),
		strings.NewReplacer(`region = "us"`, `region = "eu"`).Replace,
		strings.NewReplacer("# endpoint", "endpoint", "# gzip", "gzip").Replace,
	)
}
