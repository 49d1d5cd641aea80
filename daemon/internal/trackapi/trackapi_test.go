package trackapi

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/bus/bustest"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
)

const webKey, iosKey = "web-key", "ios-key"

// apiServer is the API on a real embedded NATS server, with the daemon's streams.
type apiServer struct {
	*httptest.Server
	api     *API
	metrics *metrics.Metrics
	topo    *bus.Topology
}

func newAPIServer(t *testing.T) *apiServer {
	t.Helper()
	b, topo := bustest.Open(t)
	m := metrics.New()
	api, err := New(b.Conn, NewSources("track", map[string]string{"web": webKey, "ios": iosKey}, ""), m, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := &apiServer{Server: httptest.NewServer(api), api: api, metrics: m, topo: topo}
	t.Cleanup(s.Close)
	return s
}

// published is what a request put on a stream.
type published struct {
	subject string
	header  map[string]string
	body    map[string]any
}

// since returns the messages stream got after sequence seq.
func since(t *testing.T, stream jetstream.Stream, seq uint64) []published {
	t.Helper()
	ctx := context.Background()
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []published
	for s := seq + 1; s <= info.State.LastSeq; s++ {
		m, err := stream.GetMsg(ctx, s)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		p := published{subject: m.Subject, header: map[string]string{}}
		for k := range m.Header {
			p.header[k] = m.Header.Get(k)
		}
		if err := json.Unmarshal(m.Data, &p.body); err != nil {
			t.Fatalf("published %q, which is not a JSON object: %v", m.Data, err)
		}
		out = append(out, p)
	}
	return out
}

func lastSeq(t *testing.T, stream jetstream.Stream) uint64 {
	t.Helper()
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// req is one request to send.
type req struct {
	method, path string
	body         string
	gzip         bool
	basic        string // Authorization: Basic of this, "" for none
	header       map[string]string
}

func (s *apiServer) do(t *testing.T, r req) (*http.Response, map[string]any) {
	t.Helper()
	body := []byte(r.body)
	if r.gzip {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		_, _ = zw.Write(body)
		_ = zw.Close()
		body = buf.Bytes()
	}
	if r.method == "" {
		r.method = http.MethodPost
	}
	hr, err := http.NewRequest(r.method, s.URL+r.path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if r.gzip {
		hr.Header.Set("Content-Encoding", "gzip")
	}
	if r.basic != "" {
		hr.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(r.basic)))
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	if host := r.header["Host"]; host != "" {
		hr.Host = host
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var answer map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &answer); err != nil {
			t.Fatalf("answer %q is not JSON: %v", raw, err)
		}
	}
	return resp, answer
}

func count(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}

const orderCompleted = `{"type":"track","event":"Order Completed","userId":"u1","messageId":"m1","properties":{"revenue":9.5}}`

func TestAuthAndSources(t *testing.T) {
	s := newAPIServer(t)
	tests := []struct {
		name    string
		req     req
		status  int
		subject string // where the call went, "" for nowhere
		message string // in a failure's answer
	}{
		{"basic auth, key and colon", req{path: "/v1/track", body: orderCompleted, basic: webKey + ":"}, 200, "track.web", ""},
		{"basic auth without the colon", req{path: "/v1/track", body: orderCompleted, basic: webKey}, 200, "track.web", ""},
		{"another source", req{path: "/v1/track", body: orderCompleted, basic: iosKey + ":"}, 200, "track.ios", ""},
		{"writeKey in the body", req{path: "/v1/track", body: `{"event":"E","userId":"u","writeKey":"` + webKey + `"}`}, 200, "track.web", ""},
		{"writeKey of the batch", req{path: "/v1/batch", body: `{"writeKey":"` + iosKey + `","batch":[` + orderCompleted + `]}`}, 200, "track.ios", ""},
		{"wrong key", req{path: "/v1/track", body: orderCompleted, basic: "nope:"}, 401, "", "not one of http.write_keys"},
		{"a key's prefix", req{path: "/v1/track", body: orderCompleted, basic: webKey[:3] + ":"}, 401, "", "not one of http.write_keys"},
		{"no key", req{path: "/v1/track", body: orderCompleted}, 401, "", "no write key"},
		{"basic auth wins over the body", req{path: "/v1/track", body: `{"event":"E","userId":"u","writeKey":"` + webKey + `"}`, basic: "nope:"}, 401, "", "not one of"},
		{"one call of a batch with a wrong key", req{path: "/v1/batch", body: `{"writeKey":"` + webKey + `","batch":[` + orderCompleted + `,{"event":"E","userId":"u","writeKey":"nope"}]}`}, 401, "", "not one of"},
		{"an empty batch with a wrong key", req{path: "/v1/batch", body: `{"batch":[]}`, basic: "nope:"}, 401, "", "not one of"},
		{"an empty batch", req{path: "/v1/batch", body: `{"batch":[]}`, basic: webKey + ":"}, 200, "", ""},
		{"a writeKey that is not a string", req{path: "/v1/track", body: `{"event":"E","userId":"u","writeKey":7}`}, 400, "", "writeKey is a number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := lastSeq(t, s.topo.Ingest)
			resp, answer := s.do(t, tt.req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; answer %v", resp.StatusCode, tt.status, answer)
			}
			if tt.status == 200 && answer["success"] != true {
				t.Errorf("answer %v, want success true", answer)
			}
			if tt.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("a 401 without WWW-Authenticate")
			}
			if msg, _ := answer["message"].(string); !strings.Contains(msg, tt.message) || tt.status != 200 && answer["success"] != false {
				t.Errorf("answer %v, want success false and a message with %q", answer, tt.message)
			}
			got := since(t, s.topo.Ingest, before)
			if tt.subject == "" {
				if len(got) != 0 {
					t.Errorf("published %v, want nothing", got)
				}
				return
			}
			if len(got) != 1 || got[0].subject != tt.subject {
				t.Fatalf("published %v, want one call on %s", got, tt.subject)
			}
			if _, ok := got[0].body["writeKey"]; ok {
				t.Errorf("the write key was published: %v", got[0].body)
			}
		})
	}
	if got := count(s.metrics.HTTPRequests.WithLabelValues("web", "200")); got == 0 {
		t.Errorf("trackd_http_requests_total{source=web,code=200} = %v", got)
	}
	if got := count(s.metrics.HTTPRequests.WithLabelValues("", "401")); got == 0 {
		t.Errorf("trackd_http_requests_total{source=\"\",code=401} = %v", got)
	}

	// A reload's keys take effect for the next request.
	s.api.SetSources(NewSources("track", map[string]string{"web": "rotated"}, ""))
	if resp, _ := s.do(t, req{path: "/v1/track", body: orderCompleted, basic: webKey}); resp.StatusCode != 401 {
		t.Errorf("the old key after rotation: status %d, want 401", resp.StatusCode)
	}
	if resp, _ := s.do(t, req{path: "/v1/track", body: orderCompleted, basic: "rotated"}); resp.StatusCode != 200 {
		t.Errorf("the new key after rotation: status %d, want 200", resp.StatusCode)
	}
}

func TestBatchMerging(t *testing.T) {
	s := newAPIServer(t)
	body := `{"writeKey":"` + webKey + `","messageId":"batch-id","sentAt":"2026-12-02T10:00:05.000Z",
		"context":{"library":{"name":"analytics-go","version":"3.3.0"},"locale":"en-US"},
		"integrations":{"All":false,"Mixpanel":true},
		"batch":[
			{"type":"track","event":"A","userId":"u1","messageId":"a","originalTimestamp":"2026-12-02T10:00:00.000Z"},
			{"type":"track","event":"B","userId":"u1","messageId":"b","sentAt":"2026-12-02T09:00:00.000Z",
			 "context":{"locale":"fr-FR","ip":"10.0.0.1"},"integrations":{"Mixpanel":false,"Amplitude":true},"writeKey":"` + webKey + `"},
			{"event":"C","userId":"u1","messageId":"c","context":null,"integrations":"bad"},
			{"type":"identify","userId":"u1","messageId":"d","traits":{"plan":"pro"}}
		]}`
	before := lastSeq(t, s.topo.Ingest)
	if resp, answer := s.do(t, req{path: "/v1/batch", body: body}); resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, answer)
	}
	got := since(t, s.topo.Ingest, before)
	if len(got) != 4 {
		t.Fatalf("published %d calls, want 4: %v", len(got), got)
	}
	byID := map[string]map[string]any{}
	for _, p := range got {
		byID[p.body["messageId"].(string)] = p.body
	}
	check := func(id, path string, want any) {
		t.Helper()
		var v any = byID[id]
		for _, k := range strings.Split(path, ".") {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		if fmt.Sprint(v) != fmt.Sprint(want) {
			t.Errorf("call %s: %s = %v, want %v", id, path, v, want)
		}
	}
	// The batch's fields fill what a call lacks; a call's own keys win.
	check("a", "sentAt", "2026-12-02T10:00:05.000Z")
	check("a", "context.library.name", "analytics-go")
	check("a", "context.locale", "en-US")
	check("a", "integrations.All", false)
	check("b", "sentAt", "2026-12-02T09:00:00.000Z")
	check("b", "context.locale", "fr-FR")
	check("b", "context.ip", "10.0.0.1")
	check("b", "context.library.version", "3.3.0")
	check("b", "integrations.Mixpanel", false)
	check("b", "integrations.Amplitude", true)
	check("b", "integrations.All", false)
	check("c", "context.locale", "en-US")
	// Not an object: kept, for the router to dead-letter with its reason.
	check("c", "integrations", "bad")
	check("d", "type", "identify")
	check("d", "traits.plan", "pro")
	for id, call := range byID {
		if _, ok := call["writeKey"]; ok {
			t.Errorf("call %s kept its writeKey", id)
		}
	}
	if _, ok := byID["batch-id"]; ok {
		t.Error("the batch's messageId was given to a call")
	}
}

func TestEndpoints(t *testing.T) {
	s := newAPIServer(t)
	tests := []struct {
		path, body, typ string
	}{
		{"/v1/track", `{"event":"E","userId":"u"}`, "track"},
		{"/v1/t", `{"event":"E","userId":"u"}`, "track"},
		{"/v1/identify", `{"userId":"u","traits":{}}`, "identify"},
		{"/v1/i", `{"userId":"u"}`, "identify"},
		{"/v1/page", `{"userId":"u","name":"Home"}`, "page"},
		{"/v1/p", `{"userId":"u"}`, "page"},
		{"/v1/screen", `{"userId":"u"}`, "screen"},
		{"/v1/s", `{"userId":"u"}`, "screen"},
		{"/v1/group", `{"userId":"u","groupId":"g"}`, "group"},
		{"/v1/g", `{"userId":"u"}`, "group"},
		{"/v1/alias", `{"userId":"u","previousId":"p"}`, "alias"},
		{"/v1/a", `{"userId":"u"}`, "alias"},
		{"/v1/track", `{"type":"page","userId":"u"}`, "page"},
		{"/v1/batch", `{"batch":[{"type":"track","event":"E","userId":"u"}]}`, "track"},
		{"/v1/b", `{"batch":[{"type":"screen","userId":"u"}]}`, "screen"},
		{"/v1/import", `{"batch":[{"type":"group","userId":"u"}]}`, "group"},
		{"/v1/batch/", `{"batch":[{"type":"track","event":"E","userId":"u"}]}`, "track"},
		{"//v1/batch", `{"batch":[{"type":"track","event":"E","userId":"u"}]}`, "track"},
	}
	for _, tt := range tests {
		before := lastSeq(t, s.topo.Ingest)
		resp, answer := s.do(t, req{path: tt.path, body: tt.body, basic: webKey})
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d: %v", tt.path, resp.StatusCode, answer)
			continue
		}
		if got := since(t, s.topo.Ingest, before); len(got) != 1 || got[0].body["type"] != tt.typ {
			t.Errorf("%s %s: published %v, want one call of type %s", tt.path, tt.body, got, tt.typ)
		}
	}
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/v1/track", 405},
		{http.MethodPost, "/v1/nope", 404},
		{http.MethodPost, "/track", 404},
	} {
		resp, answer := s.do(t, req{method: tt.method, path: tt.path, body: `{}`, basic: webKey})
		if resp.StatusCode != tt.status || answer["success"] != false {
			t.Errorf("%s %s: status %d %v, want %d", tt.method, tt.path, resp.StatusCode, answer, tt.status)
		}
	}
}

func TestBodiesAndLimits(t *testing.T) {
	s := newAPIServer(t)
	call := func(n int) string {
		return `{"event":"E","userId":"u","properties":{"pad":"` + strings.Repeat("x", n) + `"}}`
	}
	batchOf := func(calls ...string) string { return `{"batch":[` + strings.Join(calls, ",") + `]}` }
	many := make([]string, MaxBatchCalls+1)
	for i := range many {
		many[i] = `{}`
	}
	tests := []struct {
		name      string
		req       req
		status    int
		published int
		message   string
	}{
		{"gzip", req{path: "/v1/batch", body: batchOf(call(10), call(10)), gzip: true}, 200, 2, ""},
		{"text/plain, as browser beacons send", req{path: "/v1/track", body: call(10), header: map[string]string{"Content-Type": "text/plain"}}, 200, 1, ""},
		{"a call of 32 KB at most", req{path: "/v1/track", body: call(MaxCallBytes - 100)}, 200, 1, ""},
		{"a call over 32 KB", req{path: "/v1/track", body: call(MaxCallBytes)}, 400, 0, "over 32 KB"},
		{"a gzipped call over 32 KB", req{path: "/v1/track", body: call(MaxCallBytes), gzip: true}, 400, 0, "over 32 KB"},
		{"a batch over 500 KB", req{path: "/v1/batch", body: batchOf(call(300<<10), call(300<<10))}, 400, 0, "over 500 KB"},
		{"a gzip bomb", req{path: "/v1/batch", body: batchOf(call(32 << 20)), gzip: true}, 400, 0, "over 500 KB"},
		{"too many calls", req{path: "/v1/batch", body: batchOf(many...)}, 400, 0, "2501 calls, over the limit of 2500"},
		{"not JSON", req{path: "/v1/track", body: `{"event":`}, 400, 0, "body is not JSON"},
		{"not an object", req{path: "/v1/track", body: `[1]`}, 400, 0, "body is an array"},
		{"a batch without calls", req{path: "/v1/batch", body: `{"sentAt":"x"}`}, 400, 0, `no "batch"`},
		{"a batch that is not an array", req{path: "/v1/batch", body: `{"batch":{}}`}, 400, 0, `"batch" is an object`},
		{"a call that is not an object", req{path: "/v1/batch", body: batchOf(call(1), `"x"`)}, 400, 0, "batch[1] is a string"},
		{"a batch context that is not an object", req{path: "/v1/batch", body: `{"context":[],"batch":[]}`}, 400, 0, "context is an array"},
		{"a batch context over 32 KB", req{path: "/v1/batch", body: `{"context":{"pad":"` + strings.Repeat("x", MaxCallBytes) + `"},"batch":[{}]}`}, 400, 0, "merged into"},
		{"gzip in name only", req{path: "/v1/track", body: call(1), header: map[string]string{"Content-Encoding": "gzip"}}, 400, 0, "not gzip"},
		{"another encoding", req{path: "/v1/track", body: call(1), header: map[string]string{"Content-Encoding": "br"}}, 400, 0, `"br" is not supported`},
	}
	cases := make([]hostileCase, len(tests))
	for i, tt := range tests {
		cases[i] = hostileCase{name: tt.name, req: tt.req, status: tt.status, published: tt.published, message: tt.message}
	}
	runHostile(t, s, cases)

	// One call over 32 KB in a batch is dead-lettered with its reason; the rest go on.
	before, dlqBefore := lastSeq(t, s.topo.Ingest), lastSeq(t, s.topo.DLQ)
	big := `{"event":"Big","userId":"u","messageId":"big","writeKey":"` + webKey + `","properties":{"pad":"` + strings.Repeat("x", MaxCallBytes) + `"}}`
	if resp, answer := s.do(t, req{path: "/v1/batch", body: batchOf(call(1), big, call(2)), basic: webKey}); resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, answer)
	}
	if got := since(t, s.topo.Ingest, before); len(got) != 2 {
		t.Errorf("published %d calls, want the 2 small ones", len(got))
	}
	letters := since(t, s.topo.DLQ, dlqBefore)
	if len(letters) != 1 || letters[0].body["messageId"] != "big" || letters[0].subject != dlq.Subject(dlq.Invalid) {
		t.Fatalf("dead letters %v, want the big call on %s", letters, dlq.Subject(dlq.Invalid))
	}
	if h := letters[0].header; h[dlq.HeaderStage] != "http" || !strings.Contains(h[dlq.HeaderError], "over the tracking API's limit of 32768 bytes") {
		t.Errorf("dead letter headers %v", h)
	}
	if _, ok := letters[0].body["writeKey"]; ok {
		t.Error("the dead letter kept the write key")
	}
	if got := count(s.metrics.HTTPCallsDeadLettered.WithLabelValues("web")); got != 1 {
		t.Errorf("trackd_http_calls_dead_lettered_total = %v, want 1", got)
	}

	// A call under 32 KB that the batch's context takes over it is dead-lettered too.
	before, dlqBefore = lastSeq(t, s.topo.Ingest), lastSeq(t, s.topo.DLQ)
	merged := `{"context":{"pad":"` + strings.Repeat("y", 20<<10) + `"},"batch":[` + call(15<<10) + `,` + call(1) + `]}`
	if resp, answer := s.do(t, req{path: "/v1/batch", body: merged, basic: webKey}); resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, answer)
	}
	if got := since(t, s.topo.Ingest, before); len(got) != 1 {
		t.Errorf("published %d calls, want the one that fits", len(got))
	}
	if letters := since(t, s.topo.DLQ, dlqBefore); len(letters) != 1 || !strings.Contains(letters[0].header[dlq.HeaderError], "with the batch's context") {
		t.Errorf("dead letters %v, want the call the context made too large", letters)
	}
}

func TestCORS(t *testing.T) {
	s := newAPIServer(t)
	for _, path := range []string{"/v1/batch", "/v1/t", "/v1/projects/" + webKey + "/settings", "/customerio/v1/projects/" + webKey + "/settings"} {
		resp, _ := s.do(t, req{method: http.MethodOptions, path: path, header: map[string]string{
			"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization",
		}})
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("preflight of %s: status %d", path, resp.StatusCode)
		}
		h := resp.Header
		allowed := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
		for _, want := range []string{"authorization", "content-type", "x-retry-count"} {
			if !strings.Contains(allowed, want) {
				t.Errorf("preflight of %s does not allow %s: %v", path, want, h)
			}
		}
		if h.Get("Access-Control-Allow-Origin") != "https://shop.example.com" || h.Get("Access-Control-Allow-Credentials") != "true" ||
			!strings.Contains(h.Get("Access-Control-Allow-Methods"), "POST") || !strings.Contains(h.Get("Access-Control-Allow-Methods"), "GET") {
			t.Errorf("preflight of %s: headers %v", path, h)
		}
	}
	// A header an SDK was configured to add is allowed too.
	resp, _ := s.do(t, req{method: http.MethodOptions, path: "/v1/b", header: map[string]string{
		"Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-tenant",
	}})
	if !strings.Contains(strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")), "x-tenant") {
		t.Errorf("preflight asking for x-tenant: %v", resp.Header)
	}

	// Every answer, whatever its status, lets the page read it and its Retry-After.
	for _, r := range []req{
		{path: "/v1/t", body: `{"event":"E","userId":"u","writeKey":"` + webKey + `"}`},
		{path: "/v1/b", body: `{"writeKey":"` + webKey + `","batch":[{"type":"page","userId":"u"}]}`, basic: webKey},
		{path: "/v1/t", body: `{}`},
		{path: "/v1/t", body: `[`, basic: webKey},
		{path: "/v1/nope", body: `{}`},
		{path: "/v1/m", body: `{"series":[]}`},
		{method: http.MethodGet, path: "/v1/projects/" + webKey + "/settings"},
		{method: http.MethodGet, path: "/customerio/v1/projects/nope/settings"},
	} {
		for _, origin := range []string{"https://a.example", ""} {
			r.header = map[string]string{"Content-Type": "text/plain"}
			if origin != "" {
				r.header["Origin"] = origin
			}
			resp, _ := s.do(t, r)
			h := resp.Header
			what := fmt.Sprintf("%s %s (status %d) with Origin %q", cmp.Or(r.method, "POST"), r.path, resp.StatusCode, origin)
			if h.Get("Access-Control-Expose-Headers") != "Retry-After" {
				t.Errorf("%s: Access-Control-Expose-Headers %q, want Retry-After", what, h.Get("Access-Control-Expose-Headers"))
			}
			switch {
			case origin != "" && (h.Get("Access-Control-Allow-Origin") != origin || h.Get("Access-Control-Allow-Credentials") != "true"):
				t.Errorf("%s: the origin is not echoed with credentials allowed: %v", what, h)
			case origin == "" && h.Get("Access-Control-Allow-Origin") != "*":
				t.Errorf("%s: Access-Control-Allow-Origin %q, want *", what, h.Get("Access-Control-Allow-Origin"))
			}
		}
	}
	// And so does a 503 telling the SDK to retry.
	s.api.SetSources(NewSources("elsewhere", map[string]string{"web": webKey}, ""))
	resp, _ = s.do(t, req{path: "/v1/t", body: `{"event":"E","userId":"u"}`, basic: webKey, header: map[string]string{"Origin": "https://a.example"}})
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || resp.Header.Get("Access-Control-Expose-Headers") != "Retry-After" {
		t.Errorf("status %d, headers %v; want 503 with Retry-After exposed", resp.StatusCode, resp.Header)
	}
}

// Calls JetStream does not store are answered 503 with Retry-After, so SDKs retry.
func TestNotStored(t *testing.T) {
	s := newAPIServer(t)
	// No stream is bound to these subjects.
	s.api.SetSources(NewSources("elsewhere", map[string]string{"web": webKey}, ""))
	resp, answer := s.do(t, req{path: "/v1/batch", body: `{"batch":[{"event":"E","userId":"u"},{"event":"F","userId":"u"}]}`, basic: webKey})
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || answer["success"] != false {
		t.Errorf("status %d, Retry-After %q, answer %v; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), answer)
	}
	if got := count(s.metrics.HTTPCalls.WithLabelValues("web", "503")); got != 2 {
		t.Errorf("trackd_http_calls_total{source=web,code=503} = %v, want 2", got)
	}
	// A subject someone listens on but JetStream does not: no acknowledgement
	// ever comes, and the request is answered 503 when its time is up.
	sub, err := s.api.js.Conn().SubscribeSync("silent.>")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	s.api.ackTimeout = 200 * time.Millisecond
	s.api.SetSources(NewSources("silent", map[string]string{"web": webKey}, ""))
	resp, answer = s.do(t, req{path: "/v1/track", body: `{"event":"E","userId":"u"}`, basic: webKey})
	if msg, _ := answer["message"].(string); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(msg, "within 200ms") {
		t.Errorf("status %d %v; want 503 saying the acknowledgement did not come", resp.StatusCode, answer)
	}
	// Nothing is left holding the window: the next request goes through.
	s.api.SetSources(NewSources("track", map[string]string{"web": webKey}, ""))
	if resp, answer := s.do(t, req{path: "/v1/track", body: `{"event":"E","userId":"u"}`, basic: webKey}); resp.StatusCode != http.StatusOK {
		t.Errorf("after a timeout: status %d %v", resp.StatusCode, answer)
	}
	if status, _ := refusal(jetstream.ErrTooManyStalledMsgs); status != http.StatusTooManyRequests {
		t.Errorf("a full window is answered %d, want 429", status)
	}
}
