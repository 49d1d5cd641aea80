package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/segmentio/analytics-go/v3"

	"trackd.dev/trackd/sdk/destinationtest"
)

// These tests send through the client SDKs themselves, at the versions the
// tracking API was checked against, so that what they really put on the wire
// (batch envelopes, auth, the fields each sets) is what trackd is tested with.
// Each SDK makes every call of the Segment spec it has a method for, and each
// call must reach the destinations that take its type, once, and no other.

// nodeSDKs are the npm packages TestHTTPFromNodeSDKs installs.
var nodeSDKs = []string{"@segment/analytics-node@3.1.0", "@customerio/cdp-analytics-node@0.5.9"}

// sdkCalls are the calls every Node SDK makes, as their methods take them.
// Both SDKs have a method for each of the six call types, screen included.
var sdkCalls = []struct {
	Type string         `json:"type"`
	Args map[string]any `json:"args"`
}{
	{"track", map[string]any{
		"event": "Order Completed", "userId": "u1",
		"properties": map[string]any{"revenue": 18.9, "currency": "EUR", "order_id": "o-1"},
	}},
	{"track", map[string]any{
		"event": "Signed Up", "anonymousId": "a1",
		"properties":   map[string]any{"plan": "pro"},
		"integrations": map[string]any{"All": false, "Webhook": true},
		"context":      map[string]any{"ip": "10.0.0.1"},
	}},
	{"track", map[string]any{
		"event": "Product Viewed", "userId": "u1", "anonymousId": "a1",
		"properties": map[string]any{"sku": "s-1", "price": 4.5},
	}},
	{"identify", map[string]any{"userId": "u1", "traits": map[string]any{"email": "u1@example.com", "plan": "pro"}}},
	{"page", map[string]any{
		"userId": "u1", "category": "Docs", "name": "Pricing",
		"properties": map[string]any{"path": "/pricing", "referrer": "https://example.com/"},
	}},
	// A page with neither name nor properties.
	{"page", map[string]any{"anonymousId": "a1"}},
	{"screen", map[string]any{"userId": "u1", "name": "Home"}},
	{"group", map[string]any{"userId": "u1", "groupId": "g1", "traits": map[string]any{"name": "Acme", "employees": 42.0}}},
	{"alias", map[string]any{"previousId": "a1", "userId": "u1"}},
}

// sdkScript sends the calls of TRACKD_CALLS through each Node SDK and prints,
// as a JSON array, every call an SDK reported delivered with the event as the
// SDK built it. It exits 1 when a call failed or its SDK never reported on it.
const sdkScript = `'use strict';
const sdks = {
  '@segment/analytics-node': require('@segment/analytics-node').Analytics,
  '@customerio/cdp-analytics-node': require('@customerio/cdp-analytics-node').Analytics,
};
const calls = JSON.parse(process.env.TRACKD_CALLS);
const delivered = [];
const failures = [];

async function send(sdk, Analytics) {
  const analytics = new Analytics({
    writeKey: process.env.TRACKD_WRITE_KEY,
    host: process.env.TRACKD_HOST,
    path: '/v1/batch',
    // A request not answered 2xx fails its calls at once: a retry would hide it.
    maxRetries: 0,
  });
  // The callbacks report failed deliveries; this catches the other errors.
  analytics.on('error', (err) => {
    if (err.code !== 'delivery_failure') failures.push(sdk + ': ' + err.code + ': ' + err.reason);
  });
  const answered = new Set();
  calls.forEach((call, i) => {
    if (typeof analytics[call.type] !== 'function') {
      failures.push(sdk + ' has no ' + call.type + ' method');
      answered.add(i);
      return;
    }
    // The SDKs write their library into the context object they are given:
    // each gets its own copy.
    analytics[call.type](structuredClone(call.args), (err, ctx) => {
      answered.add(i);
      if (err) failures.push(sdk + ': ' + call.type + ' #' + i + ': ' + err);
      else delivered.push({ sdk, call: i, event: ctx.event });
    });
  });
  // closeAndFlush gives up silently at its timeout, hence the count of answers.
  await analytics.closeAndFlush({ timeout: 60000 });
  if (answered.size !== calls.length) {
    failures.push(sdk + ': ' + (calls.length - answered.size) + ' of ' + calls.length + ' calls never answered');
  }
}

(async () => {
  for (const [sdk, Analytics] of Object.entries(sdks)) await send(sdk, Analytics);
  process.stdout.write(JSON.stringify(delivered));
  if (failures.length) {
    console.error(failures.join('\n'));
    process.exit(1);
  }
  // Exit even if an SDK left a timer or socket behind.
  process.exit(0);
})().catch((err) => { console.error(err); process.exit(1); });
`

func TestHTTPFromNodeSDKs(t *testing.T) {
	modules := npmInstall(t, nodeSDKs...)
	d := startSDKDaemon(t)

	calls, err := json.Marshal(sdkCalls)
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "send.js")
	if err := os.WriteFile(script, []byte(sdkScript), 0o644); err != nil {
		t.Fatal(err)
	}
	// The limit only stops a hung run; it says nothing about speed.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules, "TRACKD_HOST="+d.baseURL,
		"TRACKD_WRITE_KEY="+testWriteKey, "TRACKD_CALLS="+string(calls))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node %s: %v\n%s", script, err, stderr.String())
	}
	var delivered []struct {
		SDK   string         `json:"sdk"`
		Call  int            `json:"call"`
		Event map[string]any `json:"event"`
	}
	if err := json.Unmarshal(out, &delivered); err != nil {
		t.Fatalf("the script printed %q: %v", out, err)
	}
	if want := len(nodeSDKs) * len(sdkCalls); len(delivered) != want {
		t.Fatalf("the SDKs delivered %d calls, want %d: %s", len(delivered), want, out)
	}

	var sent []sdkSentCall
	for _, c := range delivered {
		call := sdkCalls[c.Call]
		id, _ := c.Event["messageId"].(string)
		if id == "" {
			t.Fatalf("%s built a call with no messageId: %v", c.SDK, c.Event)
		}
		if c.Event["type"] != call.Type {
			t.Fatalf("%s built a %v call for its %s method: %v", c.SDK, c.Event["type"], call.Type, c.Event)
		}
		integrations, _ := c.Event["integrations"].(map[string]any)
		all, ok := integrations["All"]
		sent = append(sent, sdkSentCall{library: c.SDK, typ: call.Type, id: id, sent: c.Event, allOff: ok && all == false})

		ev := d.hook.waitEvent(t, id)
		// What the SDK built, its context.library and timestamp included,
		// arrived as it was, and so did what it was given.
		checkSDKCall(t, ev, c.Event, c.SDK)
		checkSentSubset(t, c.SDK+" "+call.Type+" "+id, call.Args, ev)
		// analytics-node sends sentAt with the batch; the Customer.io fork sends none.
		if _, has := ev["sentAt"]; has != (c.SDK == "@segment/analytics-node") {
			t.Errorf("%s %s: sentAt = %v", c.SDK, id, ev["sentAt"])
		}
	}
	d.checkRouted(t, sent)
	checkSDKMetrics(t, d.daemon, len(delivered))
}

func TestHTTPFromAnalyticsGo(t *testing.T) {
	d := startSDKDaemon(t)

	var cb goSDKCallback
	client, err := analytics.NewWithConfig(testWriteKey, analytics.Config{
		Endpoint: d.baseURL,
		Callback: &cb,
		Logger:   goSDKLogger{t},
	})
	if err != nil {
		t.Fatal(err)
	}
	calls := []analytics.Message{
		analytics.Track{Event: "Order Completed", UserId: "u1",
			Properties: analytics.NewProperties().SetRevenue(18.9).SetCurrency("EUR").Set("order_id", "o-1")},
		analytics.Track{Event: "Signed Up", AnonymousId: "a1",
			Properties:   analytics.NewProperties().Set("plan", "pro"),
			Integrations: analytics.NewIntegrations().DisableAll().Enable("Webhook"),
			// The call's own context gets the batch's library merged in.
			Context: &analytics.Context{IP: net.ParseIP("10.0.0.1")}},
		analytics.Track{Event: "Product Viewed", UserId: "u1", AnonymousId: "a1",
			Properties: analytics.NewProperties().Set("sku", "s-1").Set("price", 4.5)},
		analytics.Identify{UserId: "u1", Traits: analytics.NewTraits().SetEmail("u1@example.com").Set("plan", "pro")},
		analytics.Page{UserId: "u1", Name: "Pricing",
			Properties: analytics.NewProperties().SetPath("/pricing").SetReferrer("https://example.com/")},
		// analytics-go leaves out empty properties and traits: trackd makes them {}.
		analytics.Screen{AnonymousId: "a1", Name: "Home"},
		analytics.Group{UserId: "u1", GroupId: "g1", Traits: analytics.NewTraits().SetName("Acme").Set("employees", 42)},
		analytics.Group{AnonymousId: "a1", GroupId: "g2"},
		analytics.Alias{PreviousId: "a1", UserId: "u1"},
	}
	for _, m := range calls {
		if err := client.Enqueue(m); err != nil {
			t.Fatalf("enqueue %#v: %v", m, err)
		}
	}
	// Close flushes the queue and returns once every call's callback has run.
	if err := client.Close(); err != nil {
		t.Fatal(err)
	}
	succeeded, failed := cb.results()
	if len(failed) > 0 {
		t.Fatalf("analytics-go failed to send: %v", failed)
	}
	if len(succeeded) != len(calls) {
		t.Fatalf("analytics-go reported %d of %d calls sent", len(succeeded), len(calls))
	}

	var sent []sdkSentCall
	for _, m := range succeeded {
		switch m.(type) {
		case analytics.Track, analytics.Identify, analytics.Page, analytics.Screen, analytics.Group, analytics.Alias:
		default:
			t.Fatalf("analytics-go reported a call it was not given: %#v", m)
		}
		// The call as analytics-go serialized it, with the type, messageId
		// and timestamp it gave it (not the batch's messageId).
		obj := asJSONObject(t, m)
		typ, _ := obj["type"].(string)
		id, _ := obj["messageId"].(string)
		if id == "" {
			t.Fatalf("analytics-go sent a call with no messageId: %#v", m)
		}
		// DisableAll sets "all", lower-cased, which trackd must read as All.
		integrations, _ := obj["integrations"].(map[string]any)
		all, ok := integrations["all"]
		sent = append(sent, sdkSentCall{library: "analytics-go", typ: typ, id: id, sent: obj, allOff: ok && all == false})

		ev := d.hook.waitEvent(t, id)
		checkSDKCall(t, ev, obj, "analytics-go")
		// The batch's sentAt was given to each call.
		if s, _ := ev["sentAt"].(string); s == "" {
			t.Errorf("%s %s: the batch's sentAt is not in the call: %v", typ, id, ev)
		}
	}
	d.checkRouted(t, sent)
	checkSDKMetrics(t, d.daemon, len(calls))
}

// sdkSentCall is one call an SDK reported sent.
type sdkSentCall struct {
	library string         // the SDK, as context.library.name says
	typ     string         // the call type
	id      string         // its messageId
	sent    map[string]any // the call as the SDK sent it
	allOff  bool           // its integrations turn All off, leaving only Webhook
}

// sdkCallTypes are the six call types of the Segment spec; every SDK here makes
// each of them.
var sdkCallTypes = []string{"track", "identify", "page", "screen", "group", "alias"}

// sdkDaemon is trackd serving the tracking API at baseURL, with three
// destinations: hook ("Webhook", the webhook plugin), which every call
// reaches; other ("Other", the webhook plugin too), which the calls whose
// integrations turn All off do not; and mixpanel ("Mixpanel", the mixpanel
// plugin against a local server), which takes only track calls and gets
// those of them that do not turn All off.
type sdkDaemon struct {
	*daemon
	baseURL     string
	hook, other *sdkHook
	mixpanel    *sdkMixpanel
}

func startSDKDaemon(t *testing.T) *sdkDaemon {
	t.Helper()
	webhook := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	mixpanel := destinationtest.Build(t, "trackd.dev/trackd/plugins/mixpanel")
	s := &sdkDaemon{hook: newSDKHook(t), other: newSDKHook(t), mixpanel: newSDKMixpanel(t)}
	// The mixpanel plugin takes all six types; types = ["track"] narrows this
	// destination to track calls, so that the test sees every other call type
	// left out of a destination without being dead-lettered.
	s.daemon = newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(`
[destinations.hook]
plugin = %q
name = "Webhook"
[destinations.hook.settings]
url = %q

[destinations.other]
plugin = %q
name = "Other"
[destinations.other.settings]
url = %q

[destinations.mixpanel]
plugin = %q
name = "Mixpanel"
types = ["track"]
[destinations.mixpanel.settings]
token = "test-token"
api_secret = "test-secret"
endpoint = %q
gzip = false
`, webhook, s.hook.URL, webhook, s.other.URL, mixpanel, s.mixpanel.URL))
	s.serveHTTP(t)
	s.start(t, "/readyz")
	s.baseURL = s.apiURL
	return s
}

// checkRouted checks, once every call has reached hook, that each reached
// each destination that takes it exactly once and no other: hook got every
// call; other every call but those whose integrations turned All off;
// mixpanel, which takes only track calls, those track calls; and nothing was
// dead-lettered. /metrics must count them all by type.
func (s *sdkDaemon) checkRouted(t *testing.T, calls []sdkSentCall) {
	t.Helper()
	// What each destination should get, and how many of each type.
	var all, toOther, toMixpanel []string
	sent := map[string]int{}      // calls of each type
	sentOther := map[string]int{} // calls of each type that do not turn All off
	for _, c := range calls {
		all = append(all, c.id)
		sent[c.typ]++
		if c.allOff {
			continue
		}
		toOther = append(toOther, c.id)
		sentOther[c.typ]++
		if c.typ == "track" {
			toMixpanel = append(toMixpanel, c.id)
		}
	}
	for _, typ := range sdkCallTypes {
		if sent[typ] == 0 {
			t.Fatalf("no %s call was sent", typ)
		}
	}
	if len(toOther) == len(all) {
		t.Fatal("no call turned All off")
	}

	metric := func(name, dest, typ string) int {
		labels := []string{}
		if dest != "" {
			labels = append(labels, fmt.Sprintf("destination=%q", dest))
		}
		if typ != "" {
			labels = append(labels, fmt.Sprintf("type=%q", typ))
		}
		return int(s.metric(t, name+"{"+strings.Join(labels, ",")+"}"))
	}
	// The router counts an event once its hand-offs are done, which may be
	// after the direct path delivered it; a destination counts an event
	// delivered once its plugin said so, after the request was answered.
	waitFor(t, "every call to be routed and delivered", func() bool {
		for _, typ := range sdkCallTypes {
			if metric("trackd_events_routed_total", "hook", typ) < sent[typ] ||
				metric("trackd_events_delivered_total", "hook", typ) < sent[typ] ||
				metric("trackd_events_routed_total", "other", typ) < sentOther[typ] ||
				metric("trackd_events_delivered_total", "other", typ) < sentOther[typ] {
				return false
			}
		}
		return metric("trackd_events_routed_total", "mixpanel", "track") >= sentOther["track"] &&
			metric("trackd_events_delivered_total", "mixpanel", "track") >= sentOther["track"]
	})
	for _, typ := range sdkCallTypes {
		if got := metric("trackd_events_received_total", "", typ); got != sent[typ] {
			t.Errorf(`trackd_events_received_total{type=%q} = %d, want %d`, typ, got, sent[typ])
		}
		for _, dest := range []struct {
			id   string
			want int
		}{{"hook", sent[typ]}, {"other", sentOther[typ]}, {"mixpanel", 0}} {
			if dest.id == "mixpanel" && typ == "track" {
				dest.want = sentOther[typ]
			}
			for _, name := range []string{"trackd_events_routed_total", "trackd_events_delivered_total"} {
				if got := metric(name, dest.id, typ); got != dest.want {
					t.Errorf(`%s{destination=%q,type=%q} = %d, want %d`, name, dest.id, typ, got, dest.want)
				}
			}
		}
	}

	s.hook.checkOnce(t, "Webhook", all)
	s.other.checkOnce(t, "Other", toOther)
	s.mixpanel.checkImported(t, toMixpanel)
	checkNoDeadLetters(t, s.daemon, all)
}

// checkSDKCall checks that a call that the SDK library sent as sent reached
// the webhook normalized, with its type's own fields, the library that sent
// it and no write key.
func checkSDKCall(t *testing.T, ev, sent map[string]any, library string) {
	t.Helper()
	typ, _ := sent["type"].(string)
	what := fmt.Sprint(library, " ", typ, " ", ev["messageId"])
	checkSentSubset(t, what, sent, ev)
	if ev["type"] != typ || ev["version"] != float64(2) {
		t.Errorf("%s: type %v, version %v; want %s, 2", what, ev["type"], ev["version"], typ)
	}
	for _, f := range []string{"receivedAt", "timestamp"} {
		if s, _ := ev[f].(string); s == "" {
			t.Errorf("%s: %s is %v", what, f, ev[f])
		}
	}
	checkSDKCallFields(t, what, typ, ev, sent)
	lib, _ := ev["context"].(map[string]any)["library"].(map[string]any)
	if lib["name"] != library {
		t.Errorf("%s: context.library = %v, want name %q", what, lib, library)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("writeKey")) || bytes.Contains(b, []byte(testWriteKey)) {
		t.Errorf("%s: the write key reached the destination: %s", what, b)
	}
}

// sdkCallFields are the fields of each call type of its own.
var sdkCallFields = map[string][]string{
	"track":    {"event", "properties"},
	"identify": {"traits"},
	"page":     {"name", "properties"},
	"screen":   {"name", "properties"},
	"group":    {"groupId", "traits"},
	"alias":    {"previousId", "userId"},
}

// checkSDKCallFields checks that ev, a call of type typ, has its type's own
// fields exactly as sent, properties and traits {} when they were not sent,
// and a name only when one was sent.
func checkSDKCallFields(t *testing.T, what, typ string, ev, sent map[string]any) {
	t.Helper()
	fields, ok := sdkCallFields[typ]
	if !ok {
		t.Errorf("%s: %q is not a call type", what, typ)
		return
	}
	for _, f := range fields {
		want, wasSent := sent[f]
		got, has := ev[f]
		switch {
		case wasSent:
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s: %s = %#v, want %#v as sent", what, f, got, want)
			}
		case f == "properties" || f == "traits":
			if m, ok := got.(map[string]any); !ok || len(m) != 0 {
				t.Errorf("%s: %s = %#v, want {} as none was sent", what, f, got)
			}
		case has:
			t.Errorf("%s: %s = %#v although none was sent", what, f, got)
		}
	}
}

// checkSentSubset checks that every member of want, at any depth, is in got
// with the same value.
func checkSentSubset(t *testing.T, what string, want, got map[string]any) {
	t.Helper()
	for _, path := range differingMembers("", want, got) {
		t.Errorf("%s: %s is not as sent: sent %v, arrived %v", what, path, want, got)
	}
}

// differingMembers returns the paths of the members of want that got lacks
// or has another value of.
func differingMembers(prefix string, want, got map[string]any) []string {
	var paths []string
	for k, w := range want {
		g, ok := got[k]
		wm, wIsObj := w.(map[string]any)
		gm, gIsObj := g.(map[string]any)
		switch {
		case wIsObj && gIsObj:
			paths = append(paths, differingMembers(prefix+k+".", wm, gm)...)
		case !ok || !reflect.DeepEqual(w, g):
			paths = append(paths, prefix+k)
		}
	}
	return paths
}

// asJSONObject is v as JSON decodes it into a map, so that it compares with
// what a destination received.
func asJSONObject(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// checkNoDeadLetters checks that the dead-letter stream holds none of the
// calls with these messageIds (nor anything else: every call here is valid
// and every destination accepts what it gets), and that /metrics counted none.
func checkNoDeadLetters(t *testing.T, d *daemon, ids []string) {
	t.Helper()
	for _, name := range []string{"trackd_events_invalid_total", "trackd_events_dead_lettered_total", "trackd_http_calls_dead_lettered_total"} {
		if got := d.metric(t, name); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
	_, js := connectJS(t, d.natsURL)
	stream, err := js.Stream(t.Context(), "TRACK_DLQ")
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	} else if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return
	}
	cons, err := js.OrderedConsumer(t.Context(), "TRACK_DLQ", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for range info.State.Msgs {
		// The wait only stops a letter gone in the meantime from hanging the test.
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("reading the %d dead letters: %v", info.State.Msgs, err)
		}
		var body struct {
			MessageID string `json:"messageId"`
			Type      string `json:"type"`
		}
		_ = json.Unmarshal(msg.Data(), &body)
		ours := ""
		if slices.Contains(ids, body.MessageID) {
			ours = ", one of the calls the SDK sent"
		}
		t.Errorf("dead letter on %s (%s %s%s): Trackd-Error %q, Trackd-Destination %q",
			msg.Subject(), body.Type, body.MessageID, ours, msg.Headers().Get("Trackd-Error"), msg.Headers().Get("Trackd-Destination"))
	}
}

// checkSDKMetrics checks that /metrics counted the SDKs' requests and all
// their calls as answered 200 for source "web".
func checkSDKMetrics(t *testing.T, d *daemon, calls int) {
	t.Helper()
	if got := d.metric(t, `trackd_http_requests_total{code="200",source="web"}`); got <= 0 {
		t.Errorf(`trackd_http_requests_total{code="200",source="web"} = %v, want > 0`, got)
	}
	if got := d.metric(t, `trackd_http_calls_total{code="200",source="web"}`); got != float64(calls) {
		t.Errorf(`trackd_http_calls_total{code="200",source="web"} = %v, want %d`, got, calls)
	}
}

// sdkHook is an httptest server playing a webhook destination; it
// records the events it received by messageId, and how many times each came.
type sdkHook struct {
	*httptest.Server
	mu     sync.Mutex
	events map[string]map[string]any
	times  map[string]int
}

func newSDKHook(t *testing.T) *sdkHook {
	h := &sdkHook{events: map[string]map[string]any{}, times: map[string]int{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		id, _ := ev["messageId"].(string)
		h.mu.Lock()
		h.events[id] = ev
		h.times[id]++
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *sdkHook) event(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events[id]
}

func (h *sdkHook) waitEvent(t *testing.T, id string) map[string]any {
	t.Helper()
	waitFor(t, "the webhook to get "+id, func() bool { return h.event(id) != nil })
	return h.event(id)
}

// checkOnce checks that the hook got each of ids exactly once and nothing else.
func (h *sdkHook) checkOnce(t *testing.T, name string, ids []string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, id := range ids {
		if n := h.times[id]; n != 1 {
			t.Errorf("%s got %s %v %d times, want once", name, h.events[id]["type"], id, n)
		}
	}
	for id, ev := range h.events {
		if !slices.Contains(ids, id) {
			t.Errorf("%s got %v %s, which is not for it: %v", name, ev["type"], id, ev)
		}
	}
}

// sdkMixpanel plays Mixpanel's ingestion API for the mixpanel plugin: it
// records the events /import gets by $insert_id, answers /engage as Mixpanel
// does, and records any other request.
type sdkMixpanel struct {
	*httptest.Server
	mu       sync.Mutex
	imported map[string][]map[string]any // /import records by $insert_id
	other    []string                    // requests to any other path
}

func newSDKMixpanel(t *testing.T) *sdkMixpanel {
	m := &sdkMixpanel{imported: map[string][]map[string]any{}}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/import":
			var records []map[string]any
			if err := json.NewDecoder(r.Body).Decode(&records); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			m.mu.Lock()
			for _, rec := range records {
				id, _ := rec["properties"].(map[string]any)["$insert_id"].(string)
				m.imported[id] = append(m.imported[id], rec)
			}
			m.mu.Unlock()
			fmt.Fprintf(w, `{"code":200,"num_records_imported":%d,"status":"OK"}`, len(records))
		case "/engage":
			fmt.Fprint(w, `{"status":1,"error":null}`)
		default:
			m.mu.Lock()
			m.other = append(m.other, r.Method+" "+r.URL.Path)
			m.mu.Unlock()
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(m.Close)
	return m
}

// checkImported checks that /import got the track calls with these
// messageIds exactly once each, and nothing else.
func (m *sdkMixpanel) checkImported(t *testing.T, ids []string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	want := map[string]string{} // messageId by $insert_id
	for _, id := range ids {
		want[sdkMixpanelInsertID(id)] = id
		if n := len(m.imported[sdkMixpanelInsertID(id)]); n != 1 {
			t.Errorf("Mixpanel got track %s %d times, want once", id, n)
		}
	}
	for insertID, recs := range m.imported {
		if _, ok := want[insertID]; !ok {
			t.Errorf("Mixpanel got $insert_id %s, which is none of the track calls for it: %v", insertID, recs)
		}
	}
	if len(m.other) > 0 {
		t.Errorf("Mixpanel got requests other than /import and /engage: %v", m.other)
	}
}

// sdkMixpanelInsertID is the $insert_id the mixpanel plugin sends for a
// messageId, as its README says: the messageId when it is at most 36 letters,
// digits and '-', else the first 36 hex digits of its SHA-256.
func sdkMixpanelInsertID(messageID string) string {
	if len(messageID) <= 36 && sdkInsertIDRE.MatchString(messageID) {
		return messageID
	}
	sum := sha256.Sum256([]byte(messageID))
	return hex.EncodeToString(sum[:])[:36]
}

var sdkInsertIDRE = regexp.MustCompile(`^[A-Za-z0-9-]+$`)

// goSDKCallback collects what analytics-go reports of each call; it calls it
// from its own goroutines.
type goSDKCallback struct {
	mu        sync.Mutex
	succeeded []analytics.Message
	failed    []string
}

func (c *goSDKCallback) Success(m analytics.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.succeeded = append(c.succeeded, m)
}

func (c *goSDKCallback) Failure(m analytics.Message, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failed = append(c.failed, fmt.Sprintf("%#v: %v", m, err))
}

func (c *goSDKCallback) results() ([]analytics.Message, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.succeeded, c.failed
}

// goSDKLogger puts analytics-go's log in the test's.
type goSDKLogger struct{ t *testing.T }

func (l goSDKLogger) Logf(format string, args ...any)   { l.t.Logf("analytics-go: "+format, args...) }
func (l goSDKLogger) Errorf(format string, args ...any) { l.Logf("error: "+format, args...) }

// npmInstall installs the npm packages (each name@version) once per user, in
// the user's cache directory, and returns the node_modules directory for
// NODE_PATH. Without node and npm the test is skipped, except in CI.
func npmInstall(t *testing.T, pkgs ...string) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is not on PATH; CI must run the SDK tests", tool)
			}
			t.Skipf("%s is not on PATH: install Node.js 20 and npm to test with %s", tool, strings.Join(pkgs, ", "))
		}
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	parent := filepath.Join(cache, "trackd-test")
	sum := sha256.Sum256([]byte(strings.Join(pkgs, "\n")))
	dir := filepath.Join(parent, "npm-"+hex.EncodeToString(sum[:6]))
	modules := filepath.Join(dir, "node_modules")
	if npmInstalled(modules, pkgs) {
		return modules
	}
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	// Install beside dir and rename it into place, so that an install cut
	// short is never taken for a finished one.
	tmp, err := os.MkdirTemp(parent, "installing-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", append([]string{"install", "--no-audit", "--no-fund", "--prefix", tmp}, pkgs...)...)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm install %s: %v\n%s", strings.Join(pkgs, " "), err, out)
	}
	if !npmInstalled(filepath.Join(tmp, "node_modules"), pkgs) {
		t.Fatalf("npm install %s left some of them out of %s", strings.Join(pkgs, " "), tmp)
	}
	// A stale, incomplete dir from older code is replaced.
	if _, err := os.Stat(dir); err == nil && !npmInstalled(modules, pkgs) {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil && !npmInstalled(modules, pkgs) {
		// Only a concurrent run that put its install there first is fine.
		t.Fatal(err)
	}
	t.Logf("installed %s in %s", strings.Join(pkgs, " "), dir)
	return modules
}

// npmInstalled says whether every package (name@version) is in node_modules
// at its version.
func npmInstalled(modules string, pkgs []string) bool {
	for _, p := range pkgs {
		at := strings.LastIndex(p, "@")
		name, version := p[:at], p[at+1:]
		b, err := os.ReadFile(filepath.Join(modules, filepath.FromSlash(name), "package.json"))
		var meta struct{ Version string }
		if err != nil || json.Unmarshal(b, &meta) != nil || meta.Version != version {
			return false
		}
	}
	return true
}
