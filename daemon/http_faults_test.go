package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"trackd.dev/trackd/sdk/destinationtest"
)

// The shape of the load the tracking API tests put on the daemon: a few SDKs
// flushing batches of the size analytics-node sends.
const (
	httpSenders   = 4
	httpBatchSize = 50
	// Bounds each sender, so a test whose stop never comes still ends.
	httpMaxBatches = 60
)

// httpDaemon is a daemon serving the tracking API whose one destination is a
// webhook posting to a counter; nothing runs yet. The API's URL is d.apiURL
// once it has started.
func httpDaemon(t *testing.T) (d *daemon, hook *counter) {
	t.Helper()
	hook = newCounter(t, false)
	d = newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), fmt.Sprintf(`
[destinations.hook]
plugin = %q
[destinations.hook.settings]
url = %q
`, destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), hook.URL))
	d.serveHTTP(t)
	return d, hook
}

// batchRequest is a /v1/batch body of one valid track call per messageId.
func batchRequest(ids []string) []byte {
	var b bytes.Buffer
	b.WriteString(`{"batch":[`)
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"track","event":"Order Completed","userId":"user-%d","messageId":%q,"properties":{"revenue":%d.99,"currency":"EUR"}}`, i, id, i)
	}
	fmt.Fprintf(&b, `],"sentAt":%q}`, time.Now().UTC().Format(time.RFC3339Nano))
	return b.Bytes()
}

// newBatchRequest is a POST of body to api's /v1/batch, authenticated as the
// SDKs do it: the write key as the Basic username, the password empty.
func newBatchRequest(api string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, api+"/v1/batch", body)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(testWriteKey, "")
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// senders are concurrent SDK-like clients of the tracking API. Each posts
// batches of fresh messageIds and, like the SDKs, retries a batch that failed
// (no connection, a reset, 429, 503) after a short sleep, until it is
// answered 200 or the senders are stopped. Only the messageIds of batches
// answered 200 are acknowledged: those are the ones trackd promised.
type senders struct {
	t      *testing.T
	api    string
	client *http.Client
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup

	mu       sync.Mutex
	acked    []string
	failures map[string]int // by kind: "connection refused", "status 503", …
}

func startSenders(t *testing.T, api, prefix string) *senders {
	s := &senders{
		t:   t,
		api: api,
		// The timeout only ends a request to a daemon that never answers.
		client:   &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: httpSenders}},
		stop:     make(chan struct{}),
		failures: map[string]int{},
	}
	for c := range httpSenders {
		s.wg.Add(1)
		go s.run(fmt.Sprintf("%s-c%d", prefix, c))
	}
	// A test that fails before it stops them must not leave them posting.
	t.Cleanup(s.finish)
	return s
}

func (s *senders) run(prefix string) {
	defer s.wg.Done()
	for b := range httpMaxBatches {
		ids := make([]string, httpBatchSize)
		for i := range ids {
			ids[i] = fmt.Sprintf("%s-b%03d-%02d", prefix, b, i)
		}
		body := batchRequest(ids)
		for !s.post(body) {
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		s.mu.Lock()
		s.acked = append(s.acked, ids...)
		s.mu.Unlock()
		select {
		case <-s.stop:
			return
		default:
		}
	}
}

// post sends one batch and says whether it was answered 200; a failure is
// counted by its kind.
func (s *senders) post(body []byte) bool {
	req, err := newBatchRequest(s.api, bytes.NewReader(body))
	if err != nil {
		s.t.Errorf("cannot make a batch request: %v", err)
		s.failed("no request")
		return false
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.failed(failureKind(err))
		return false
	}
	answer, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		// Not a 200 the client saw: it retries, as an SDK would.
		s.failed(failureKind(err))
		return false
	case resp.StatusCode == http.StatusOK:
		if !bytes.Equal(answer, []byte(`{"success":true}`)) {
			s.t.Errorf("200 answered with %s, want {\"success\":true}", answer)
		}
		return true
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		if resp.Header.Get("Retry-After") == "" {
			s.t.Errorf("%d without Retry-After: %s", resp.StatusCode, answer)
		}
	default:
		// A 400 or 401 is the test's own bug: SDKs drop such a batch.
		s.t.Errorf("batch answered %d: %s", resp.StatusCode, answer)
	}
	s.failed(fmt.Sprintf("status %d", resp.StatusCode))
	return false
}

func (s *senders) failed(kind string) {
	s.mu.Lock()
	s.failures[kind]++
	s.mu.Unlock()
}

// failureKind names a transport error the way the failure counts report it.
func failureKind(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's error for a kept-alive connection the server closed as the
		// request went out is not exported.
		strings.Contains(err.Error(), "server closed idle connection"):
		return "connection reset or closed"
	}
	var uerr *url.Error
	if errors.As(err, &uerr) && uerr.Timeout() {
		return "timeout"
	}
	return "other: " + err.Error()
}

func (s *senders) ackedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acked)
}

func (s *senders) failureCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.failures {
		n += c
	}
	return n
}

// finish stops the senders and waits for them.
func (s *senders) finish() {
	s.once.Do(func() {
		close(s.stop)
		s.wg.Wait()
		s.client.CloseIdleConnections()
	})
}

// results returns the messageIds answered 200 and the failures by kind.
func (s *senders) results() (acked []string, failures map[string]int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	failures = make(map[string]int, len(s.failures))
	for k, v := range s.failures {
		failures[k] = v
	}
	return append([]string(nil), s.acked...), failures
}

// waitAllDelivered waits until every messageId in ids reached hook; when it
// gives up it names some that did not.
func waitAllDelivered(t *testing.T, hook *counter, ids []string) {
	t.Helper()
	var missing []string
	defer func() {
		if len(missing) > 0 {
			t.Logf("%d of %d calls answered 200 were never delivered, e.g. %v", len(missing), len(ids), missing[:min(5, len(missing))])
		}
	}()
	waitForLong(t, fmt.Sprintf("the %d calls answered 200 to be delivered", len(ids)), func() bool {
		missing = hook.missing(ids)
		return len(missing) == 0
	})
}

// A 200 is a promise: kill -9 while SDKs post batches, restart, and every
// call that was answered 200 is delivered.
func TestHTTPKillNine(t *testing.T) {
	d, hook := httpDaemon(t)
	d.start(t, "/readyz")
	s := startSenders(t, d.apiURL, "k9")

	// Killed with thousands of calls stored, many of them not yet delivered,
	// and with batches in flight.
	waitForLong(t, "2,500 calls answered 200", func() bool { return s.ackedCount() >= 2500 })
	atKill := s.ackedCount()
	d.kill9(t)
	// The senders keep trying the dead daemon, as SDKs do; it is down, so
	// every sender fails at least once before the restart.
	failuresBefore := s.failureCount()
	waitFor(t, "the senders to fail against the dead daemon", func() bool {
		return s.failureCount() >= failuresBefore+httpSenders
	})
	d.start(t, "/readyz")
	waitForLong(t, "1,500 more calls answered 200 after the restart", func() bool {
		return s.ackedCount() >= atKill+1500
	})
	s.finish()
	acked, failures := s.results()

	waitAllDelivered(t, hook, acked)
	unique, dups := hook.counts()
	t.Logf("%d calls answered 200 (%d before the kill -9), all delivered; the destination saw %d distinct messageIds and %d repeats; failed requests by kind: %v",
		len(acked), atKill, unique, dups, failures)
}

// gatedBody is a request body whose first Read closes reading and then waits
// for release. With Expect: 100-continue the client sends the body only once
// the daemon's handler asks for it, so when reading is closed the request is
// in the handler, which is blocked reading the body until release.
type gatedBody struct {
	r       io.Reader
	once    sync.Once
	reading chan struct{}
	release chan struct{}
}

func (g *gatedBody) Read(p []byte) (int, error) {
	g.once.Do(func() {
		close(g.reading)
		<-g.release
	})
	return g.r.Read(p)
}

// refused says whether a new connection to the tracking API is refused.
func refused(t *testing.T, api string) bool {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(api, "http://"), 5*time.Second)
	switch {
	case err == nil:
		conn.Close()
		return false
	case errors.Is(err, syscall.ECONNREFUSED):
		return true
	case errors.Is(err, syscall.ECONNRESET):
		// The listener closed while this connection waited to be accepted:
		// the next one is refused.
		return false
	}
	t.Fatalf("dialling the tracking API: %v, want connection refused or a connection", err)
	return false
}

// SIGTERM while SDKs post: the listener stops taking connections, requests
// already in hand are answered, the daemon exits 0, and every call answered
// 200, before or during the shutdown, is delivered.
func TestHTTPGracefulShutdown(t *testing.T) {
	d, hook := httpDaemon(t)
	d.start(t, "/readyz")
	api := d.apiURL
	s := startSenders(t, api, "term")
	waitForLong(t, "1,000 calls answered 200", func() bool { return s.ackedCount() >= 1000 })

	// One request whose body the daemon is reading when SIGTERM arrives, held
	// there until the listener is shown closed: deterministically in flight.
	heldIDs := make([]string, httpBatchSize)
	for i := range heldIDs {
		heldIDs[i] = fmt.Sprintf("term-held-%02d", i)
	}
	held := batchRequest(heldIDs)
	gate := &gatedBody{r: bytes.NewReader(held), reading: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		// A test that fails before it lets the body go must not leak its request.
		select {
		case <-gate.release:
		default:
			close(gate.release)
		}
	}()
	req, err := newBatchRequest(api, gate)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(held))
	req.Header.Set("Expect", "100-continue")
	heldClient := &http.Client{Timeout: time.Minute, Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	defer heldClient.CloseIdleConnections()
	type answer struct {
		status int
		body   string
		err    error
	}
	heldAnswer := make(chan answer, 1)
	go func() {
		resp, err := heldClient.Do(req)
		if err != nil {
			heldAnswer <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		heldAnswer <- answer{status: resp.StatusCode, body: string(b), err: err}
	}()
	select {
	case <-gate.reading:
	case a := <-heldAnswer:
		t.Fatalf("the held request was answered before its body was sent: %+v", a)
	case <-time.After(time.Minute):
		t.Fatal("the daemon never read the held request's body")
	}

	atTerm := s.ackedCount()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "new connections to the tracking API to be refused after SIGTERM", func() bool { return refused(t, api) })
	select {
	case <-d.exited:
		t.Fatal("the daemon exited with a request still in hand")
	default:
	}
	close(gate.release)
	var a answer
	select {
	case a = <-heldAnswer:
	case <-time.After(time.Minute):
		t.Fatal("the request in flight at SIGTERM was never answered")
	}
	if a.err != nil || a.status != http.StatusOK || a.body != `{"success":true}` {
		t.Fatalf("the request in flight at SIGTERM: status %d, body %q, err %v; want 200 {\"success\":true}", a.status, a.body, a.err)
	}

	select {
	case <-d.exited:
	case <-time.After(time.Minute):
		t.Fatal("the daemon did not exit within a minute of SIGTERM")
	}
	// d.stop sends a second SIGTERM to a process already gone, which does
	// nothing, and returns its exit code.
	if code := d.stop(t); code != 0 {
		t.Errorf("after SIGTERM: exit code %d, want 0", code)
	}
	s.finish()
	acked, failures := s.results()
	afterTerm := len(acked) - atTerm
	acked = append(acked, heldIDs...)
	beforeRestart, _ := hook.counts()

	d.start(t, "/readyz")
	waitAllDelivered(t, hook, acked)
	unique, dups := hook.counts()
	t.Logf("%d calls answered 200 (%d of them by senders after SIGTERM, and the held batch of %d), all delivered: %d before the restart; the destination saw %d distinct messageIds and %d repeats; failed requests by kind: %v",
		len(acked), afterTerm, len(heldIDs), beforeRestart, unique, dups, failures)
}
