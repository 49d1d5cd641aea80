package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

// hook is an httptest server playing a webhook destination; it records the
// events it received by messageId.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	events map[string]map[string]any
}

func newHook(t *testing.T) *hook {
	h := &hook{events: map[string]map[string]any{}}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev map[string]any
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.events[ev["messageId"].(string)] = ev
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) ids() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.events))
}

func (h *hook) event(id string) map[string]any {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.events[id]
}

// daemon is a trackd process started from the real binary, on a config and a
// NATS store that survive restarts.
type daemon struct {
	bin      string
	config   string
	header   string   // the config's NATS, admin and log tables
	dests    string   // its destination tables
	args     []string // more flags for trackd run
	natsURL  string
	adminURL string
	apiURL   string // the tracking API's, set by serveHTTP; read it after start, which may move it
	cmd      *exec.Cmd
	exited   chan struct{}
	logs     *lockedBuffer
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newDaemon writes a config with the given destination tables; nothing runs yet.
func newDaemon(t *testing.T, bin, destinations string) *daemon {
	t.Helper()
	dir := t.TempDir()
	natsAddr, adminAddr := freePort(t), freePort(t)
	// The streams' limits are below the defaults, which the server reserves
	// storage for: a test machine's disk may not have 9 GiB free.
	header := fmt.Sprintf(`
[nats.embedded]
listen = %q
store_dir = "nats"
[ingest]
max_bytes = "512MiB"
[dlq]
max_bytes = "64MiB"
[admin]
listen = %q
[log]
level = "debug"
`, natsAddr, adminAddr)
	d := &daemon{bin: bin, config: filepath.Join(dir, "config.toml"), header: header,
		natsURL: "nats://" + natsAddr, adminURL: "http://" + adminAddr, logs: &lockedBuffer{}}
	d.writeConfig(t, destinations)
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs.String())
		}
	})
	return d
}

// testWriteKey is the write key of source "web" when a test daemon serves the tracking API.
const testWriteKey = "test-write-key"

// serveHTTP turns on the tracking API on a free port, with source "web" whose
// key is testWriteKey; its base URL is d.apiURL. Call it before start.
func (d *daemon) serveHTTP(t *testing.T) {
	t.Helper()
	addr := freePort(t)
	d.header += fmt.Sprintf("[http]\nlisten = %q\n[http.write_keys]\nweb = %q\n", addr, testWriteKey)
	d.apiURL = "http://" + addr
	d.writeConfig(t, d.dests)
}

// writeConfig replaces the config's destination tables. The file is written
// beside the config and renamed over it, so that a daemon reading it (run
// --watch polls it) sees the old file or the new one, never a half-written one.
func (d *daemon) writeConfig(t *testing.T, destinations string) {
	t.Helper()
	d.dests = destinations
	f, err := os.CreateTemp(filepath.Dir(d.config), "config-*.toml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(d.header + destinations)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), d.config)
	}
	if err != nil {
		_ = os.Remove(f.Name())
		t.Fatal(err)
	}
}

// startDaemon runs trackd from the real binary and waits until it is ready.
func startDaemon(t *testing.T, destinations string) *daemon {
	t.Helper()
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), destinations)
	d.start(t, "/readyz")
	return d
}

// startAttempts bounds how many times start moves the daemon to fresh ports.
const startAttempts = 3

// start runs the daemon with extra environment variables and waits until
// the admin endpoint path answers 200. A daemon that exits first fails the
// test at once with what it wrote to stderr; except that a port from
// freePort may have been taken by another process (another package's test)
// before the daemon could listen on it, and then start moves that listener
// to a fresh port and runs the daemon again.
func (d *daemon) start(t *testing.T, path string, env ...string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		from := len(d.logs.String())
		if d.run(t, path, env) {
			return
		}
		stderr := d.logs.String()[from:]
		if attempt == startAttempts || !d.movePortsInUse(t, stderr) {
			t.Fatalf("the daemon exited (%v) before %s answered 200; its stderr:\n%s", d.cmd.ProcessState, path, stderr)
		}
	}
}

// run starts the daemon and waits until path answers 200 (true) or the
// daemon exits (false).
func (d *daemon) run(t *testing.T, path string, env []string) bool {
	t.Helper()
	d.cmd = exec.Command(d.bin, append([]string{"run", "--config", d.config}, d.args...)...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(d.cmd, d.exited)
	// Each poll has a limit, so that another process holding the admin port
	// and never answering does not keep start from seeing the daemon exit.
	client := &http.Client{Timeout: 10 * time.Second}
	ready := false
	waitFor(t, "the daemon to answer "+path, func() bool {
		select {
		case <-d.exited:
			return true
		default:
		}
		resp, err := client.Get(d.adminURL + path)
		if err != nil {
			return false
		}
		resp.Body.Close()
		ready = resp.StatusCode == http.StatusOK
		return ready
	})
	return ready
}

// localAddr matches the addresses freePort returns.
var localAddr = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// movePortsInUse gives a fresh port to each listener of the config that the
// daemon's stderr says was in use, and says whether there was any. (The
// embedded NATS server logs nothing; the daemon says it did not start and
// asks whether the port is in use.)
func (d *daemon) movePortsInUse(t *testing.T, stderr string) bool {
	t.Helper()
	moved := false
	for line := range strings.Lines(stderr) {
		if !strings.Contains(line, "address already in use") && !strings.Contains(line, "is the port in use?") {
			continue
		}
		for _, addr := range localAddr.FindAllString(line, -1) {
			quoted := strconv.Quote(addr)
			if !strings.Contains(d.header, "listen = "+quoted) {
				continue // not one of ours, or moved already
			}
			fresh := freePort(t)
			d.header = strings.ReplaceAll(d.header, quoted, strconv.Quote(fresh))
			for _, u := range []*string{&d.natsURL, &d.adminURL, &d.apiURL} {
				if strings.HasSuffix(*u, "://"+addr) {
					*u = strings.TrimSuffix(*u, addr) + fresh
				}
			}
			t.Logf("%s was in use; running the daemon again with %s instead", addr, fresh)
			moved = true
		}
	}
	if moved {
		d.writeConfig(t, d.dests)
	}
	return moved
}

// kill9 kills the daemon with SIGKILL and waits for it to be gone.
func (d *daemon) kill9(t *testing.T) {
	t.Helper()
	_ = d.cmd.Process.Kill()
	<-d.exited
	t.Logf("killed the daemon (kill -9)")
}

// stop sends SIGTERM and returns the exit code; it is a no-op when the daemon is not running.
func (d *daemon) stop(t *testing.T) int {
	t.Helper()
	if d.cmd == nil {
		return 0
	}
	terminate(t, d.cmd, d.exited)
	code := d.cmd.ProcessState.ExitCode()
	d.cmd = nil
	return code
}

// terminate sends a daemon SIGTERM and waits for exited, killing it if it
// has not exited 2 minutes later.
func terminate(t testing.TB, cmd *exec.Cmd, exited <-chan struct{}) {
	t.Helper()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-exited
		t.Error("the daemon did not stop within 2 minutes of SIGTERM")
	}
}

// connectJS connects to NATS for the rest of the test.
func connectJS(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// metric reads one unlabelled or labelled sample from /metrics, 0 if absent.
func (d *daemon) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, _ := d.metricOK(t, name)
	return v
}

// metricOK reads one sample from /metrics and says whether it was there.
func (d *daemon) metricOK(t *testing.T, name string) (float64, bool) {
	t.Helper()
	return scrapeMetric(t, d.adminURL, name)
}

// scrapeMetric reads a sample from a daemon's /metrics: name is a metric's
// name with some of its labels or none (trackd_events_delivered_total{destination="a"}),
// and the samples that have those labels are summed (over every type, say).
func scrapeMetric(t testing.TB, adminURL, name string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(adminURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	metric, labels, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	var want []string
	if labels != "" {
		want = strings.Split(labels, ",")
	}
	var sum float64
	found := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		sample, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(sample, "#") {
			continue
		}
		m, l, _ := strings.Cut(strings.TrimSuffix(sample, "}"), "{")
		if m != metric {
			continue
		}
		have := strings.Split(l, ",")
		if !allIn(want, have) {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, false
		}
		sum += v
		found = true
	}
	return sum, found
}

func allIn(want, have []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds; the generous limit only stops a broken
// test from hanging, it asserts nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitWithin(t, time.Minute, what, cond)
}

func waitWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEndToEnd(t *testing.T) {
	fileBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/file")
	hookBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	mixpanel, webhook := newHook(t), newHook(t)
	jsonl := filepath.Join(t.TempDir(), "events.jsonl")
	d := startDaemon(t, fmt.Sprintf(`
[destinations.file]
plugin = %q
name = "File"
[destinations.file.settings]
path = %q

[destinations.mixpanel]
plugin = %q
name = "Mixpanel"
[destinations.mixpanel.settings]
url = %q

[destinations.hook]
plugin = %q
name = "Webhook"
aliases = ["My Hook"]
events = ["Order *", "Signed Up"]
[destinations.hook.settings]
url = %q
`, fileBin, jsonl, hookBin, mixpanel.URL, hookBin, webhook.URL))

	nc, js := connectJS(t, d.natsURL)
	ctx := t.Context()
	publish := func(subject, body string) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, []byte(body)); err != nil {
			t.Fatalf("publish to %s: %v", subject, err)
		}
	}

	publish("track", `{"event":"Order Completed","userId":"u1","messageId":"only-mixpanel",
		"integrations":{"All":false,"mixpanel":true},"properties":{"revenue":18.9,"currency":"USD"}}`)
	publish("track.web", `{"event":"Signed Up","anonymousId":"a1","messageId":"everyone",
		"properties":{"plan":"pro"},"context":{"ip":"10.0.0.1"},"custom":{"kept":true}}`)
	publish("track", `{"event":"Signed Up","anonymousId":"a1","messageId":"everyone","properties":{"again":1}}`)
	publish("track", `{"event":"Order Completed","messageId":"no-user"}`)
	publish("track.ios", `{"event":"Order Completed","userId":42,"messageId":"not-hook",
		"integrations":{"my hook":false}}`)
	publish("track", `{"event":"Page Scrolled","userId":"u2","messageId":"globbed-out"}`)
	// A core NATS publish lands in the stream too.
	if err := nc.Publish("track", []byte(`{"event":"Order Completed","userId":"u3","messageId":"core-publish"}`)); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "every delivery", func() bool {
		return len(mixpanel.ids()) == 5 && len(webhook.ids()) == 2 && len(fileLines(t, jsonl)) == 4
	})
	if got, want := mixpanel.ids(), []string{"core-publish", "everyone", "globbed-out", "not-hook", "only-mixpanel"}; !slices.Equal(got, want) {
		t.Errorf("mixpanel got %v, want %v", got, want)
	}
	// "only-mixpanel" (All:false) is not here; "my hook" (an alias) turned the webhook off for "not-hook".
	if got, want := webhook.ids(), []string{"core-publish", "everyone"}; !slices.Equal(got, want) {
		t.Errorf("webhook got %v, want %v", got, want)
	}
	var fileIDs []string
	for _, l := range fileLines(t, jsonl) {
		fileIDs = append(fileIDs, l["messageId"].(string))
	}
	slices.Sort(fileIDs)
	if want := []string{"core-publish", "everyone", "globbed-out", "not-hook"}; !slices.Equal(fileIDs, want) {
		t.Errorf("file got %v, want %v", fileIDs, want)
	}

	// The first "everyone" was delivered, normalized; its repeat was dropped.
	ev := webhook.event("everyone")
	if ev["properties"].(map[string]any)["plan"] != "pro" {
		t.Errorf("the repeat replaced the original: %v", ev)
	}
	if ev["type"] != "track" || ev["version"] != float64(2) || ev["receivedAt"] == nil || ev["timestamp"] == nil {
		t.Errorf("event not normalized: %v", ev)
	}
	if ev["custom"].(map[string]any)["kept"] != true || ev["context"].(map[string]any)["ip"] != "10.0.0.1" {
		t.Errorf("unknown fields or context not passed through: %v", ev)
	}
	if got := mixpanel.event("not-hook")["userId"]; got != "42" {
		t.Errorf("numeric userId became %v, want \"42\"", got)
	}
	waitFor(t, "the repeat to be counted", func() bool { return d.metric(t, "trackd_events_deduplicated_total") == 1 })

	// The invalid event is in the dead-letter stream, original bytes and reason.
	cons, err := js.OrderedConsumer(ctx, "TRACK_DLQ", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"trackd.dlq.invalid"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("no dead letter for the invalid event: %v", err)
	}
	if !bytes.Contains(msg.Data(), []byte(`"messageId":"no-user"`)) {
		t.Errorf("dead letter body is not the original event: %s", msg.Data())
	}
	if reason := msg.Headers().Get("Trackd-Error"); !strings.Contains(reason, "userId") {
		t.Errorf("Trackd-Error %q does not name userId", reason)
	}
	if stage := msg.Headers().Get("Trackd-Stage"); stage != "validate" {
		t.Errorf("Trackd-Stage = %q, want validate", stage)
	}
	if got := d.metric(t, `trackd_events_invalid_total{field="userId"}`); got != 1 {
		t.Errorf("trackd_events_invalid_total{field=\"userId\"} = %v, want 1", got)
	}
	// Each is counted a little after the delivery the test saw: the router's
	// once its hand-offs are done, a destination's once its plugin has
	// answered (the file plugin's after its fsync), and the backlog gauge
	// once it is first sampled.
	for _, name := range []string{
		`trackd_events_received_total`,
		`trackd_events_routed_total{destination="hook"}`,
		`trackd_events_delivered_total{destination="mixpanel"}`,
		`trackd_delivery_delay_seconds_count{destination="file"}`,
		`trackd_batch_duration_seconds_count{destination="file"}`,
	} {
		waitFor(t, name+" in /metrics", func() bool { return d.metric(t, name) > 0 })
	}
	waitFor(t, "a backlog gauge for dest_hook in /metrics", func() bool {
		_, ok := d.metricOK(t, `trackd_consumer_backlog{consumer="dest_hook"}`)
		return ok
	})
}

// fileLines reads the JSON Lines a plugin has written to path so far. The
// last line may be partly written (the plugin is still at it): the lines
// before it are returned, and a caller waiting for more polls again.
func fileLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []map[string]any
	dec := json.NewDecoder(f)
	for {
		var m map[string]any
		if err := dec.Decode(&m); err == io.EOF || err == io.ErrUnexpectedEOF {
			return out
		} else if err != nil {
			t.Fatalf("%s is not JSON Lines: %v", path, err)
		}
		out = append(out, m)
	}
}

// The daemon's commands answer --help and refuse bad input with one sentence.
func TestCommandLine(t *testing.T) {
	var out, errb bytes.Buffer
	if code := dispatch([]string{"run", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "-config file") {
		t.Errorf("run --help: code %d, output %q", code, errb.String())
	}
	errb.Reset()
	if code := dispatch([]string{"frobnicate"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "frobnicate"`) {
		t.Errorf("unknown command: code %d, output %q", code, errb.String())
	}
	errb.Reset()
	missing := filepath.Join(t.TempDir(), "nope.toml")
	if code := dispatch([]string{"run", "--config", missing}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "nope.toml") {
		t.Errorf("missing config: code %d, output %q", code, errb.String())
	}
}

func jsonDecode(r *http.Request, v any) error { return json.NewDecoder(r.Body).Decode(v) }
