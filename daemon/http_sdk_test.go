package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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

// nodeSDKs are the npm packages TestHTTPFromNodeSDKs installs.
var nodeSDKs = []string{"@segment/analytics-node@3.1.0", "@customerio/cdp-analytics-node@0.5.9"}

// sdkCalls are the calls every SDK makes, as the Node SDKs' methods take them.
// The identify call is not a track event: the router dead-letters it.
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
	{"identify", map[string]any{"userId": "u1", "traits": map[string]any{"email": "u1@example.com"}}},
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

	var tracks, identifies, allOff []string
	for _, c := range delivered {
		id, _ := c.Event["messageId"].(string)
		if id == "" {
			t.Fatalf("%s built a call with no messageId: %v", c.SDK, c.Event)
		}
		if sdkCalls[c.Call].Type == "identify" {
			identifies = append(identifies, id)
			continue
		}
		tracks = append(tracks, id)
		if all, ok := c.Event["integrations"].(map[string]any)["All"]; ok && all == false {
			allOff = append(allOff, id)
		}
		ev := waitHookEvent(t, d.hook, id)
		checkSDKTrack(t, ev, sdkCalls[c.Call].Args, c.SDK)
		// What the SDK built, its context.library and timestamp included, arrived as it was.
		checkSentSubset(t, c.SDK+" "+id, c.Event, ev)
		// analytics-node sends sentAt with the batch; the Customer.io fork sends none.
		if _, has := ev["sentAt"]; has != (c.SDK == "@segment/analytics-node") {
			t.Errorf("%s %s: sentAt = %v", c.SDK, id, ev["sentAt"])
		}
	}
	d.checkRouted(t, tracks, allOff)
	checkSDKDeadLetters(t, d.daemon, identifies)
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
		analytics.Identify{UserId: "u1", Traits: analytics.NewTraits().SetEmail("u1@example.com")},
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

	var tracks, identifies, allOff []string
	for _, m := range succeeded {
		switch m := m.(type) {
		case analytics.Identify:
			identifies = append(identifies, m.MessageId)
		case analytics.Track:
			tracks = append(tracks, m.MessageId)
			// DisableAll sets "all", lower-cased, which trackd must read as All.
			if m.Integrations["all"] == false {
				allOff = append(allOff, m.MessageId)
			}
			// The call arrived as analytics-go serialized it, with the
			// messageId and timestamp it gave it (not the batch's messageId).
			ev := waitHookEvent(t, d.hook, m.MessageId)
			checkSDKTrack(t, ev, asJSONObject(t, m), "analytics-go")
			// The batch's sentAt was given to each call.
			if s, _ := ev["sentAt"].(string); s == "" {
				t.Errorf("%s: the batch's sentAt is not in the call: %v", m.MessageId, ev)
			}
		default:
			t.Fatalf("analytics-go reported a call it was not given: %#v", m)
		}
	}
	d.checkRouted(t, tracks, allOff)
	checkSDKDeadLetters(t, d.daemon, identifies)
	checkSDKMetrics(t, d.daemon, len(calls))
}

// sdkDaemon is trackd serving the tracking API at baseURL, with two webhook
// destinations: hook ("Webhook"), which every track call reaches, and other
// ("Other"), which the calls whose integrations turn All off do not.
type sdkDaemon struct {
	*daemon
	baseURL     string
	hook, other *hook
}

func startSDKDaemon(t *testing.T) *sdkDaemon {
	t.Helper()
	webhook := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	s := &sdkDaemon{hook: newHook(t), other: newHook(t)}
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
`, webhook, s.hook.URL, webhook, s.other.URL))
	s.baseURL = s.serveHTTP(t)
	s.start(t, "/readyz")
	return s
}

// checkRouted checks, once every track call has reached hook, that hook got
// nothing else and that other got all of them but those whose integrations
// turned All off.
func (s *sdkDaemon) checkRouted(t *testing.T, tracks, allOff []string) {
	t.Helper()
	if got := s.hook.ids(); len(got) != len(tracks) {
		t.Errorf("Webhook got %d events, want the %d track calls: %v", len(got), len(tracks), got)
	}
	if len(allOff) == 0 {
		t.Fatal("no call turned All off")
	}
	want := len(tracks) - len(allOff)
	routed := func(dest string) int {
		return int(s.metric(t, fmt.Sprintf("trackd_events_routed_total{destination=%q}", dest)))
	}
	// The router counts an event once its hand-offs are done, which may be
	// after the direct path delivered it.
	waitFor(t, "every track call to be routed", func() bool {
		return routed("hook") == len(tracks) && routed("other") >= want
	})
	if got := routed("other"); got != want {
		t.Errorf("%d calls were routed to Other, want %d", got, want)
	}
	waitFor(t, "Other to get its events", func() bool { return len(s.other.ids()) >= want })
	for _, id := range allOff {
		if s.other.event(id) != nil {
			t.Errorf("%s reached Other although its integrations turned All off", id)
		}
	}
}

func waitHookEvent(t *testing.T, h *hook, id string) map[string]any {
	t.Helper()
	waitFor(t, "the webhook to get "+id, func() bool { return h.event(id) != nil })
	return h.event(id)
}

// checkSDKTrack checks that a track call sent with the fields of sent reached
// the webhook normalized, with the library that sent it and no write key.
func checkSDKTrack(t *testing.T, ev, sent map[string]any, library string) {
	t.Helper()
	id := ev["messageId"]
	checkSentSubset(t, fmt.Sprint(library, " ", id), sent, ev)
	if ev["type"] != "track" || ev["version"] != float64(2) {
		t.Errorf("%s %s: type %v, version %v; want track, 2", library, id, ev["type"], ev["version"])
	}
	for _, f := range []string{"receivedAt", "timestamp"} {
		if s, _ := ev[f].(string); s == "" {
			t.Errorf("%s %s: %s is %v", library, id, f, ev[f])
		}
	}
	lib, _ := ev["context"].(map[string]any)["library"].(map[string]any)
	if lib["name"] != library {
		t.Errorf("%s %s: context.library = %v, want name %q", library, id, lib, library)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("writeKey")) || bytes.Contains(b, []byte(testWriteKey)) {
		t.Errorf("%s %s: the write key reached the destination: %s", library, id, b)
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

// checkSDKDeadLetters checks that the calls with these messageIds, which are not
// track calls, were dead-lettered as invalid for their type, without their key.
func checkSDKDeadLetters(t *testing.T, d *daemon, ids []string) {
	t.Helper()
	if len(ids) == 0 {
		t.Fatal("no identify call was sent")
	}
	_, js := connectJS(t, d.natsURL)
	cons, err := js.OrderedConsumer(t.Context(), "TRACK_DLQ", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"trackd.dlq.invalid"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range ids {
		// The wait only stops a missing letter from hanging the test.
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Minute))
		if err != nil {
			t.Fatalf("dead letters %v, want %v: %v", got, ids, err)
		}
		var body struct {
			MessageID string `json:"messageId"`
		}
		if err := json.Unmarshal(msg.Data(), &body); err != nil {
			t.Fatalf("dead letter %q: %v", msg.Data(), err)
		}
		got[body.MessageID] = true
		if reason := msg.Headers().Get("Trackd-Error"); !strings.Contains(reason, "type") {
			t.Errorf("dead letter %s: Trackd-Error %q does not name the type", body.MessageID, reason)
		}
		if bytes.Contains(msg.Data(), []byte("writeKey")) {
			t.Errorf("dead letter %s kept the write key: %s", body.MessageID, msg.Data())
		}
	}
	for _, id := range ids {
		if !got[id] {
			t.Errorf("identify %s is not in trackd.dlq.invalid; got %v", id, got)
		}
	}
	if got := d.metric(t, `trackd_events_invalid_total{field="type"}`); got != float64(len(ids)) {
		t.Errorf(`trackd_events_invalid_total{field="type"} = %v, want %d`, got, len(ids))
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
