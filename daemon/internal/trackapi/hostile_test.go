package trackapi

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// hostileCase is a request a hostile or broken client sends, and what the API
// must make of it.
type hostileCase struct {
	name      string
	req       req
	status    int
	published int    // calls on the ingest stream
	message   string // in a 400's answer
	anonymous bool   // no Basic auth
	check     func(t *testing.T, got []published)
}

// runHostile sends each case's request (with the web source's key unless it
// is anonymous), checks the answer and what was published, and then that the
// API still takes a plain call.
func runHostile(t *testing.T, s *apiServer, tests []hostileCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.basic == "" && !tt.anonymous {
				tt.req.basic = webKey
			}
			before := lastSeq(t, s.topo.Ingest)
			resp, answer := s.do(t, tt.req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.status, answer)
			}
			if msg, _ := answer["message"].(string); !strings.Contains(msg, tt.message) {
				t.Errorf("message %q does not say %q", msg, tt.message)
			}
			got := since(t, s.topo.Ingest, before)
			if len(got) != tt.published {
				t.Fatalf("published %d calls, want %d", len(got), tt.published)
			}
			for _, p := range got {
				if _, ok := p.body["writeKey"]; ok {
					t.Errorf("published a writeKey: %v", p.body)
				}
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
	// Whatever came before, the API still takes a plain call.
	if resp, answer := s.do(t, req{path: "/v1/track", body: orderCompleted, basic: webKey}); resp.StatusCode != http.StatusOK {
		t.Fatalf("a plain call afterwards: status %d %v", resp.StatusCode, answer)
	}
}

// nest is n arrays (or objects, with open `{"a":`) around a 0.
func nest(n int, open, close string) string {
	return strings.Repeat(open, n) + "0" + strings.Repeat(close, n)
}

func TestDeepNesting(t *testing.T) {
	s := newAPIServer(t)
	inCall := func(properties string) string {
		return `{"type":"track","event":"E","userId":"u","properties":` + properties + `}`
	}
	batchOf := func(calls ...string) string { return `{"batch":[` + strings.Join(calls, ",") + `]}` }
	runHostile(t, s, []hostileCase{
		{name: "100,000 nested arrays in a call's properties",
			req:    req{path: "/v1/batch", body: batchOf(inCall(nest(100_000, "[", "]")))},
			status: 400, message: "exceeded max depth"},
		{name: "100,000 nested objects in a call's properties",
			req:    req{path: "/v1/batch", body: batchOf(inCall(nest(100_000, `{"":`, "}"))), gzip: true},
			status: 400, message: "exceeded max depth"},
		{name: "100,000 nested arrays in the batch's context",
			req:    req{path: "/v1/batch", body: `{"context":` + nest(100_000, "[", "]") + `,"batch":[` + inCall("{}") + `]}`, gzip: true},
			status: 400, message: "exceeded max depth"},
		{name: "15,000 nested arrays in a single call",
			req:    req{path: "/v1/track", body: inCall(nest(15_000, "[", "]"))},
			status: 400, message: "exceeded max depth"},
		// encoding/json's limit is 10,000 levels, the body, its batch and the call counting as three.
		{name: "nesting at the limit",
			req:    req{path: "/v1/batch", body: batchOf(inCall(nest(9_997, "[", "]")), inCall(nest(4_999, `{"a":`, "}")))},
			status: 200, published: 2},
	})
}

func TestInvalidUTF8(t *testing.T) {
	s := newAPIServer(t)
	// encoding/json, as every later stage reads calls, takes each invalid
	// byte for U+FFFD: so does the merge, and a call's own key still wins.
	const bad = "\xff\xfe\xc3\xed\xa0\x80"
	field := func(got []published, path ...string) any {
		var v any = got[0].body
		for _, k := range path {
			m, _ := v.(map[string]any)
			v = m[k]
		}
		return v
	}
	runHostile(t, s, []hostileCase{
		{name: "in values",
			req:    req{path: "/v1/track", body: `{"event":"` + bad + `","userId":"u` + bad + `","properties":{"p":"` + bad + `"}}`},
			status: 200, published: 1,
			check: func(t *testing.T, got []published) {
				if v := field(got, "properties", "p"); !strings.Contains(fmt.Sprint(v), "\uFFFD") {
					t.Errorf("properties.p = %q", v)
				}
			}},
		{name: "in keys",
			req:    req{path: "/v1/track", body: `{"event":"E","userId":"u","properties":{"` + bad + `":1,"ok":2}}`, gzip: true},
			status: 200, published: 1,
			check: func(t *testing.T, got []published) {
				if v := field(got, "properties", "ok"); v != 2.0 {
					t.Errorf("properties.ok = %v", v)
				}
				if v := field(got, "properties", strings.Repeat("\uFFFD", len(bad))); v != 1.0 {
					t.Errorf("properties[the invalid key] = %v, want 1", v)
				}
			}},
		{name: "in keys merged from the batch's context",
			req: req{path: "/v1/batch", body: "{\"context\":{\"\xff\":\"batch\",\"locale\":\"\xfe\"},\"batch\":[" +
				"{\"event\":\"E\",\"userId\":\"u\",\"context\":{\"\xfe\":\"own\"}}]}"},
			status: 200, published: 1,
			check: func(t *testing.T, got []published) {
				if v := field(got, "context", "\uFFFD"); v != "own" {
					t.Errorf("context[U+FFFD] = %v, want the call's own", v)
				}
				if v := field(got, "context", "locale"); v != "\uFFFD" {
					t.Errorf("context.locale = %q, want the batch's", v)
				}
			}},
		{name: "in a top-level key like writeKey, which is not writeKey",
			req:       req{path: "/v1/track", body: "{\"event\":\"E\",\"userId\":\"u\",\"writeKey\xff\":\"" + webKey + "\"}"},
			anonymous: true, status: 401, message: "no write key"},
		{name: "in the write key",
			req:       req{path: "/v1/track", body: "{\"event\":\"E\",\"userId\":\"u\",\"writeKey\":\"" + webKey + "\xff\"}"},
			anonymous: true, status: 401, message: "not one of http.write_keys"},
		{name: "lone surrogates, escaped",
			req:    req{path: "/v1/track", body: `{"event":"\ud800","userId":"\udfff","properties":{"\ud800":"\u0000"}}`},
			status: 200, published: 1},
		{name: "a NUL byte in a string, which JSON refuses",
			req:    req{path: "/v1/track", body: "{\"event\":\"a\x00b\",\"userId\":\"u\"}"},
			status: 400, message: "not JSON"},
	})
}

func TestThousandsOfCalls(t *testing.T) {
	s := newAPIServer(t)
	batch := func(n int, call func(i int) string) string {
		calls := make([]string, n)
		for i := range calls {
			calls[i] = call(i)
		}
		return `{"sentAt":"2026-12-02T10:00:05.000Z","batch":[` + strings.Join(calls, ",") + `]}`
	}
	track := func(i int) string {
		return `{"type":"track","event":"E","userId":"u","messageId":"m` + strconv.Itoa(i) + `"}`
	}
	empty := func(int) string { return `{}` }
	runHostile(t, s, []hostileCase{
		{name: "2,500 calls", req: req{path: "/v1/batch", body: batch(MaxBatchCalls, track), gzip: true},
			status: 200, published: MaxBatchCalls,
			check: func(t *testing.T, got []published) {
				seen := map[any]bool{}
				for _, p := range got {
					seen[p.body["messageId"]] = true
					if p.body["sentAt"] != "2026-12-02T10:00:05.000Z" {
						t.Fatalf("call without the batch's sentAt: %v", p.body)
					}
				}
				if len(seen) != MaxBatchCalls {
					t.Errorf("%d distinct calls published, want %d", len(seen), MaxBatchCalls)
				}
			}},
		{name: "2,501 calls", req: req{path: "/v1/batch", body: batch(MaxBatchCalls+1, track)},
			status: 400, message: "2501 calls, over the limit of 2500"},
		{name: "100,000 empty calls", req: req{path: "/v1/batch", body: batch(100_000, empty)},
			status: 400, message: "100000 calls, over the limit of 2500"},
		{name: "200,000 empty calls, over 500 KB", req: req{path: "/v1/batch", body: batch(200_000, empty), gzip: true},
			status: 400, message: "over 500 KB"},
	})
}

func TestWideMerge(t *testing.T) {
	s := newAPIServer(t)
	members := func(prefix string, n, value int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"%s%x":%d`, prefix, i, value)
		}
		return b.String()
	}
	// A call's own context of 50,000 members merged with a batch context of
	// 3,500, 500 of them the call's too (the merge once compared each name
	// with each, half a second of CPU for one request). The call, over 32 KB,
	// is dead-lettered; the other is published.
	body := `{"context":{` + members("", 500, 1) + "," + members("s", 3000, 1) + `},"batch":[` +
		`{"type":"track","event":"Wide","userId":"u","context":{` + members("", 50_000, 0) + `}},` + orderCompleted + `]}`
	dlqBefore := lastSeq(t, s.topo.DLQ)
	runHostile(t, s, []hostileCase{{name: "a wide context merged", req: req{path: "/v1/batch", body: body, gzip: true},
		status: 200, published: 1}})
	letters := since(t, s.topo.DLQ, dlqBefore)
	if len(letters) != 1 || letters[0].body["event"] != "Wide" {
		t.Fatalf("%d dead letters, want the wide call", len(letters))
	}
	context, _ := letters[0].body["context"].(map[string]any)
	if len(context) != 53_000 || context["0"] != 0.0 || context["1f3"] != 0.0 || context["sbb7"] != 1.0 {
		t.Errorf("the wide call's context has %d members, want 53,000 with its own values winning", len(context))
	}
}

// bombBody is a gzip body of zeros that never ends, until stop is called: one
// member of 1 MB of zeros, about 1 KB gzipped, sent again and again, as gzip
// readers take a stream of members for one body.
func bombBody() (body io.Reader, stop func()) {
	member := gzipped(make([]byte, 1<<20))
	pr, pw := io.Pipe()
	go func() {
		for {
			if _, err := pw.Write(member); err != nil {
				return
			}
		}
	}()
	return pr, func() { _ = pr.Close() }
}

// sendWhileReading sends hr on a connection of its own and reads the answer
// as it comes, however much of the body is still unsent. (net/http's client
// reports the reset of a connection the server hangs up on before it reports
// an answer that came first, if its reader is slow to read the answer.)
func sendWhileReading(t *testing.T, hr *http.Request) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", hr.URL.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	go func() { _ = hr.Write(conn) }()
	resp, err := http.ReadResponse(bufio.NewReader(conn), hr)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestGzipBomb(t *testing.T) {
	s := newAPIServer(t)
	for _, tt := range []struct {
		path, limit string
	}{
		{"/v1/batch", "over 500 KB"},
		{"/v1/track", "over 32 KB"},
	} {
		// The body never ends: only a request refused once it inflates past
		// the limit is answered at all.
		body, stop := bombBody()
		t.Cleanup(stop)
		hr, err := http.NewRequest(http.MethodPost, s.URL+tt.path, body)
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("Content-Encoding", "gzip")
		hr.SetBasicAuth(webKey, "")
		before := lastSeq(t, s.topo.Ingest)
		resp := sendWhileReading(t, hr)
		var answer map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&answer)
		_ = resp.Body.Close()
		if msg, _ := answer["message"].(string); resp.StatusCode != http.StatusBadRequest || !strings.Contains(msg, tt.limit) {
			t.Errorf("%s: status %d %v, want 400 saying %s", tt.path, resp.StatusCode, answer, tt.limit)
		}
		if got := since(t, s.topo.Ingest, before); len(got) != 0 {
			t.Errorf("%s: published %d calls", tt.path, len(got))
		}
	}
	if resp, answer := s.do(t, req{path: "/v1/track", body: orderCompleted, basic: webKey}); resp.StatusCode != http.StatusOK {
		t.Fatalf("a plain call afterwards: status %d %v", resp.StatusCode, answer)
	}
}

// A client that trickles its headers in holds its own connection, not the
// API: another client is answered while it is still sending them, and it is
// answered in turn once it has sent them.
func TestSlowClient(t *testing.T) {
	s := newAPIServer(t)
	l, err := Listen("127.0.0.1:0", s.api, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Shutdown(context.Background()) })
	before := lastSeq(t, s.topo.Ingest)

	// Each sends half its headers, a byte a write, and waits; all of them
	// finish well within the listener's ReadHeaderTimeout.
	const slowClients = 20
	request := "POST /v1/track HTTP/1.1\r\nHost: trackd\r\nContent-Type: text/plain\r\n" +
		"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(webKey+":")) + "\r\nContent-Length: " + strconv.Itoa(len(orderCompleted)) + "\r\n\r\n" + orderCompleted
	headerEnd := strings.Index(request, "\r\n\r\n")
	conns := make([]net.Conn, slowClients)
	for i := range conns {
		conn, err := net.Dial("tcp", l.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		conns[i] = conn
		for j := range headerEnd / 2 {
			if _, err := conn.Write([]byte{request[j]}); err != nil {
				t.Fatal(err)
			}
		}
	}

	hr, err := http.NewRequest(http.MethodPost, "http://"+l.Addr()+"/v1/track", strings.NewReader(orderCompleted))
	if err != nil {
		t.Fatal(err)
	}
	hr.SetBasicAuth(webKey, "")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("another client, while %d trickle their headers: status %d, want 200", slowClients, resp.StatusCode)
	}

	for i, conn := range conns {
		for j := headerEnd / 2; j < len(request); j++ {
			if _, err := conn.Write([]byte{request[j]}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("slow client %d: %v", i, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("slow client %d: status %d, want 200", i, resp.StatusCode)
		}
	}
	if got := since(t, s.topo.Ingest, before); len(got) != slowClients+1 {
		t.Errorf("published %d calls, want %d", len(got), slowClients+1)
	}
}
