package trackapi

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The Content-Encoding cases of FuzzRequest.
const (
	encPlain     = iota // the body as it is
	encGzip             // the body gzipped, as an SDK sends it
	encGzipClaim        // Content-Encoding gzip on the body as it is: a gzip stream, a bomb or garbage
	encodings
)

// gzipped is b compressed, as the SDKs compress a body.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// postedNames are the endpoints that take a body, in a fixed order so that a
// fuzz input's byte picks the same one every run.
var postedNames = func() []string {
	var names []string
	for name, ep := range endpoints {
		if !ep.drop {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}()

// fuzzSeeds are inputs a fuzzer would take long to find: what the SDKs send,
// the tricks a hostile client plays, and each limit's edge.
func fuzzSeeds() []struct {
	name string
	enc  uint8
	body []byte
} {
	type seed = struct {
		name string
		enc  uint8
		body []byte
	}
	batchOf := func(calls ...string) string { return `{"batch":[` + strings.Join(calls, ",") + `]}` }
	nested := func(n int, open, close string) string {
		return strings.Repeat(open, n) + "0" + strings.Repeat(close, n)
	}
	members := func(prefix string, n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`"` + prefix + strconv.Itoa(i) + `":` + strconv.Itoa(i))
		}
		return b.String()
	}
	merging := `{"writeKey":"` + webKey + `","messageId":"batch-id","sentAt":"2026-12-02T10:00:05.000Z",
		"context":{"library":{"name":"analytics-go","version":"3.3.0"},"locale":"en-US"},
		"integrations":{"All":false,"Mixpanel":true},
		"batch":[
			{"type":"track","event":"A","userId":"u1","messageId":"a"},
			{"type":"track","event":"B","userId":"u1","sentAt":"2026-12-02T09:00:00.000Z",
			 "context":{"locale":"fr-FR","ip":"10.0.0.1"},"integrations":{"Mixpanel":false},"writeKey":"` + iosKey + `"},
			{"event":"C","userId":"u1","context":null,"integrations":"bad","type":null,"sentAt":null},
			{"type":"identify","userId":"u1","traits":{"plan":"pro"}}
		]}`
	seeds := []seed{
		{"track", encPlain, []byte(orderCompleted)},
		{"t", encGzip, []byte(`{"event":"E","userId":"u","writeKey":"` + webKey + `"}`)},
		{"identify", encPlain, []byte(`{"userId":"u","traits":{"plan":"pro"},"type":null,"writeKey":null}`)},
		{"group", encPlain, []byte(`{"userId":"u","groupId":7,"writeKey":7}`)},
		{"alias", encPlain, []byte(`{"userId":"u","previousId":"p","writeKey":"a","writeKey":"` + webKey + `"}`)},
		{"batch", encPlain, []byte(merging)},
		{"b", encGzip, []byte(merging)},
		{"import", encGzipClaim, gzipped([]byte(merging))},
		// Keys written with escapes are the keys they decode to.
		{"batch", encPlain, []byte(`{"write\u004bey":"` + webKey + `","con\u0074ext":{"a\u0062":1,"c":2},"batch":[{"context":{"ab":3,"\u0063":4},"write\u004Bey":"x"}]}`)},
		// Invalid UTF-8 in keys and values; \xff and \xfe both decode to U+FFFD.
		{"batch", encPlain, []byte("{\"context\":{\"\xff\":1,\"ok\":\"\xc3\"},\"batch\":[{\"\xfe\":\"\xed\xa0\x80\",\"context\":{\"\xfe\":2},\"writeKey\xff\":\"" + webKey + "\"}]}")},
		{"track", encPlain, []byte(`{"event":"\ud800","userId":"u","properties":{"\udfff":"\u0000"}}`)},
		{"batch", encPlain, []byte(`{"batch":[],"context":{},"integrations":null,"sentAt":"x","writeKey":""}`)},
		{"batch", encPlain, []byte(`{"batch":{},"context":[]}`)},
		{"batch", encPlain, []byte(`{"batch":[1,"x",null]}`)},
		{"batch", encPlain, []byte(` {"batch" : [ { } , {"a":[ ]} ] } `)},
		{"track", encPlain, []byte(`[{"event":"E"}]`)},
		{"track", encPlain, []byte(`{"event":`)},
		{"track", encPlain, nil},
		// The limits: 2,500 calls and 2,501.
		{"batch", encPlain, []byte(batchOf(slices.Repeat([]string{`{}`}, MaxBatchCalls)...))},
		{"batch", encGzip, []byte(batchOf(slices.Repeat([]string{`{"event":"E"}`}, MaxBatchCalls+1)...))},
		// A call of 32 KB exactly, and one byte over.
		{"track", encPlain, []byte(`{"p":"` + strings.Repeat("x", MaxCallBytes-8) + `"}`)},
		{"track", encPlain, []byte(`{"p":"` + strings.Repeat("x", MaxCallBytes-7) + `"}`)},
		// A batch context of 32 KB, merged into calls until they pass 8 MB.
		{"batch", encGzip, []byte(`{"context":{"p":"` + strings.Repeat("x", MaxCallBytes-10) + `"},"batch":[` + strings.Repeat(`{"context":{}},`, 300) + `{}]}`)},
		{"batch", encGzip, []byte(`{"context":{"p":"` + strings.Repeat("x", MaxCallBytes) + `"},"batch":[{}]}`)},
		// A wide context merged into a wide context.
		{"batch", encGzip, []byte(`{"context":{` + members("s", 100) + `},"integrations":{` + members("i", 100) + `},"batch":[{"context":{` + members("", 400) + `},"integrations":{` + members("i", 50) + `}}]}`)},
		// Nesting at encoding/json's limit of 10,000, and past it.
		{"track", encGzip, []byte(`{"properties":` + nested(9998, "[", "]") + `}`)},
		{"track", encGzip, []byte(`{"properties":` + nested(10_000, "[", "]") + `}`)},
		{"batch", encGzip, []byte(`{"batch":[{"properties":` + nested(100_000, "[", "]") + `}]}`)},
		{"batch", encGzip, []byte(`{"context":` + nested(20_000, `{"a":`, "}") + `,"batch":[]}`)},
		// Gzip: a bomb, a stream cut short, a stream with garbage after it, no stream at all.
		{"batch", encGzipClaim, gzipped(make([]byte, 4<<20))},
		{"track", encGzipClaim, gzipped([]byte(orderCompleted))[:20]},
		{"track", encGzipClaim, append(gzipped([]byte(orderCompleted)), "garbage"...)},
		{"track", encGzipClaim, []byte(orderCompleted)},
	}
	// A large body is seeded gzipped, as the same body decoded, so that the
	// fuzzer's inputs stay small: minimizing one of 32 KB took it a minute.
	for i, s := range seeds {
		if s.enc != encGzipClaim && len(s.body) > 4<<10 {
			seeds[i].enc, seeds[i].body = encGzipClaim, gzipped(s.body)
		}
	}
	return seeds
}

// FuzzRequest runs the tracking API's request handling short of publishing
// (serve's readBody, split and authenticate) on any endpoint, encoding and
// body. The handling must refuse with a 400 or give calls within §4a's limits,
// each one JSON object with no writeKey, the batch's context, integrations and
// sentAt merged in as encoding/json reads them, the call's own keys winning.
// Publishing itself needs NATS; the table tests cover it.
func FuzzRequest(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(uint8(slices.Index(postedNames, s.name)), s.enc, s.body)
	}
	api := &API{}
	api.sources.Store(NewSources("track", map[string]string{"web": webKey, "ios": iosKey}, ""))
	f.Fuzz(func(t *testing.T, endpoint, enc uint8, body []byte) {
		name := postedNames[int(endpoint)%len(postedNames)]
		ep := endpoints[name]
		enc %= encodings
		sent := body
		if enc == encGzip {
			sent = gzipped(body)
		}
		r := httptest.NewRequest(http.MethodPost, "/v1/"+name, bytes.NewReader(sent))
		if enc != encPlain {
			r.Header.Set("Content-Encoding", "gzip")
		}
		limit, what := MaxCallBytes, "a call"
		if ep.batch {
			limit, what = MaxBatchBytes, "a batch request"
		}

		decoded, err := readBody(r, limit, what)
		if err != nil {
			requireBadRequest(t, err)
			if enc != encGzipClaim && len(body) <= limit && len(sent) <= limit {
				t.Fatalf("%d bytes (%d sent) refused under the limit of %d: %v", len(body), len(sent), limit, err)
			}
			return
		}
		if len(decoded) > limit {
			t.Fatalf("read %d bytes, over the limit of %d", len(decoded), limit)
		}
		if enc != encGzipClaim && !bytes.Equal(decoded, body) {
			t.Fatalf("read %q, sent %q", decoded, body)
		}

		req, err := split(decoded, ep)
		if err != nil {
			requireBadRequest(t, err)
			return
		}
		// What encoding/json reads from the body is the reference.
		var env map[string]json.RawMessage
		var raws []json.RawMessage
		if !ep.batch {
			raws = []json.RawMessage{decoded}
		} else {
			if err := json.Unmarshal(decoded, &env); err != nil {
				t.Fatalf("split took a body encoding/json refuses: %v", err)
			}
			if err := json.Unmarshal(env["batch"], &raws); err != nil {
				t.Fatalf("split took a batch encoding/json refuses: %v", err)
			}
			if n := len(req.list); n > MaxBatchCalls {
				t.Fatalf("a batch of %d calls, over the limit of %d", n, MaxBatchCalls)
			}
		}
		if len(req.list) != len(raws) {
			t.Fatalf("%d calls from /v1/%s, want %d", len(req.list), name, len(raws))
		}
		// What the calls hold is bounded by the merged limit, with the call
		// that passed it and the body they were taken from.
		total := 0
		for _, c := range req.list {
			total += len(c.body)
		}
		if bound := maxMergedBytes + MaxCallBytes + 2*limit; total > bound {
			t.Fatalf("the calls hold %d bytes, over %d", total, bound)
		}
		for i, c := range req.list {
			checkCall(t, i, c, raws[i], env, ep.typ)
		}

		// Every call is authenticated with the key encoding/json reads from
		// it, or else from its batch; one call without a known key, or an
		// empty batch without one, refuses the request.
		authErr := api.authenticate(req, "", false)
		var batchKey string
		_ = json.Unmarshal(env["writeKey"], &batchKey)
		known := len(req.list) > 0 || api.sources.Load().lookup(batchKey) != nil
		for i, c := range req.list {
			key := cmp.Or(c.key, batchKey)
			src := api.sources.Load().lookup(key)
			known = known && src != nil
			if authErr == nil && c.src != src {
				t.Fatalf("call %d with key %q authenticated as %v", i, key, c.src)
			}
		}
		if known != (authErr == nil) {
			t.Fatalf("every key known: %v, but authenticate says %v", known, authErr)
		}
	})
}

func requireBadRequest(t *testing.T, err error) {
	t.Helper()
	var bad badRequest
	if !errors.As(err, &bad) || bad == "" {
		t.Fatalf("error %#v is not a 400 with a message", err)
	}
}

// checkCall compares call i as split with what encoding/json reads from the
// call as sent (raw) and from its batch (env, nil for a single call); typ is
// the type its endpoint gives.
func checkCall(t *testing.T, i int, c call, raw json.RawMessage, env map[string]json.RawMessage, typ string) {
	t.Helper()
	var own, pub map[string]json.RawMessage
	if err := json.Unmarshal(raw, &own); err != nil {
		t.Fatalf("call %d: split took a call encoding/json refuses: %v", i, err)
	}
	if err := json.Unmarshal(c.body, &pub); err != nil || c.body[0] != '{' {
		t.Fatalf("call %d is not a JSON object (%v): %q", i, err, c.body)
	}
	if _, ok := pub["writeKey"]; ok {
		t.Fatalf("call %d kept its writeKey: %q", i, c.body)
	}
	var key string
	if v := own["writeKey"]; !nullOrAbsent(v) {
		_ = json.Unmarshal(v, &key)
	}
	if c.size != len(raw) || c.key != key {
		t.Fatalf("call %d: size %d and key %q, want %d and %q", i, c.size, c.key, len(raw), key)
	}

	shared := func(name string) json.RawMessage {
		if v := env[name]; !nullOrAbsent(v) {
			return v
		}
		return nil
	}
	want := map[string]json.RawMessage{}
	for k, v := range own {
		if k != "writeKey" {
			want[k] = v
		}
	}
	rewritten := map[string]bool{} // the keys the merge writes once, in place of the call's
	if typ != "" && nullOrAbsent(own["type"]) {
		want["type"], rewritten["type"] = json.RawMessage(strconv.Quote(typ)), true
	}
	if v := shared("sentAt"); v != nil && nullOrAbsent(own["sentAt"]) {
		want["sentAt"], rewritten["sentAt"] = v, true
	}
	// The batch's context and integrations fill what the call's lack; a
	// call's own that is not an object is kept, for the router to refuse.
	wantObj := map[string]map[string]json.RawMessage{}
	for _, name := range []string{"context", "integrations"} {
		v := shared(name)
		rewritten[name] = v != nil
		switch {
		case v == nil:
		case nullOrAbsent(own[name]):
			want[name] = v
		case own[name][0] == '{':
			var o, s map[string]json.RawMessage
			if json.Unmarshal(own[name], &o) != nil || json.Unmarshal(v, &s) != nil {
				t.Fatalf("call %d: objects encoding/json refuses: %s, %s", i, own[name], v)
			}
			for k, sv := range s {
				if _, ok := o[k]; !ok {
					o[k] = sv
				}
			}
			wantObj[name] = o
		}
	}
	if len(pub) != len(want) {
		t.Fatalf("call %d has keys %q, want %q: %q", i, slices.Sorted(maps.Keys(pub)), slices.Sorted(maps.Keys(want)), c.body)
	}
	// A key the merge wrote is written once; the others as often as sent.
	sentCount, pubCount := memberCounts(raw), memberCounts(c.body)
	for k, n := range pubCount {
		if rewritten[k] && n != 1 || !rewritten[k] && n != sentCount[k] {
			t.Fatalf("call %d has %q %d times, sent %d times: %q", i, k, n, sentCount[k], c.body)
		}
	}
	for k, w := range want {
		got, ok := pub[k]
		if !ok {
			t.Fatalf("call %d lacks %q: %q", i, k, c.body)
		}
		if o, ok := wantObj[k]; ok {
			var g map[string]json.RawMessage
			if err := json.Unmarshal(got, &g); err != nil {
				t.Fatalf("call %d: %s is %s, not an object", i, k, got)
			}
			if len(g) != len(o) {
				t.Fatalf("call %d: %s has keys %q, want %q", i, k, slices.Sorted(maps.Keys(g)), slices.Sorted(maps.Keys(o)))
			}
			for ok, ov := range o {
				if !bytes.Equal(g[ok], ov) {
					t.Fatalf("call %d: %s.%s is %s, want %s", i, k, ok, g[ok], ov)
				}
			}
			continue
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("call %d: %s is %s, want %s", i, k, got, w)
		}
	}
}

// memberCounts counts the members of the JSON object b by their names.
func memberCounts(b []byte) map[string]int {
	counts := map[string]int{}
	dec := json.NewDecoder(bytes.NewReader(b))
	_, _ = dec.Token()
	for dec.More() {
		k, _ := dec.Token()
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			break
		}
		counts[k.(string)]++
	}
	return counts
}

func nullOrAbsent(v json.RawMessage) bool { return v == nil || string(v) == "null" }
