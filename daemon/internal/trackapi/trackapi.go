// Package trackapi serves the Segment HTTP tracking API (/v1/track, /v1/batch
// and the other calls), so that the analytics SDKs teams already use can send
// to trackd with only their host changed, and the settings the browser SDKs
// load before they send (settings.go), so that a web page needs only its
// SDK's CDN URL changed. Calls are published to the ingest stream, and a
// request is answered 200 only once JetStream has acknowledged every call in
// it.
package trackapi

import (
	"cmp"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
)

// What the answers to a request JetStream could not take tell the SDK: retry
// after this long.
const retryAfterSeconds = "2"

// The window of publishes awaiting their acknowledgement, shared by all
// requests: a publish waits up to stallWait for room in it, then its request is
// answered 429; a request whose calls are not all acknowledged within
// ackTimeout is answered 503. 8192 calls of 1 KB keep JetStream busy on
// loopback without holding more than a few MB in flight. The timeout is the
// request's, not each publish's: jetstream's per-publish timeout starts a
// timer for every call, which cost a quarter of the API's CPU.
const (
	window     = 8192
	stallWait  = time.Second
	ackTimeout = 10 * time.Second
)

// stallOpt is made once: a publish option is a closure, and this is per call.
var stallOpt = jetstream.WithStallWait(stallWait)

// API is the HTTP handler of the tracking API.
type API struct {
	js         jetstream.JetStream
	ackTimeout time.Duration
	sources    atomic.Pointer[Sources]
	metrics    *metrics.Metrics
	log        *slog.Logger
}

// New returns the API publishing through nc.
func New(nc *nats.Conn, sources *Sources, m *metrics.Metrics, log *slog.Logger) (*API, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return nil, err
	}
	a := &API{js: js, ackTimeout: ackTimeout, metrics: m, log: log}
	a.sources.Store(sources)
	return a, nil
}

// SetSources replaces the write keys, as a reload does.
func (a *API) SetSources(s *Sources) { a.sources.Store(s) }

// endpoint is what a path does: the type it gives calls that have none, or a
// batch, or nothing.
type endpoint struct {
	typ   string
	batch bool
	drop  bool // answered 200, its body unread and nothing published
}

var endpoints = map[string]endpoint{
	"track": {typ: "track"}, "identify": {typ: "identify"}, "page": {typ: "page"},
	"screen": {typ: "screen"}, "group": {typ: "group"}, "alias": {typ: "alias"},
	"batch": {batch: true}, "import": {batch: true},
	// analytics.js and analytics-next post to these short forms.
	"t": {typ: "track"}, "i": {typ: "identify"}, "p": {typ: "page"},
	"s": {typ: "screen"}, "g": {typ: "group"}, "a": {typ: "alias"}, "b": {batch: true},
	// The browser SDKs' usage counters, meant for their vendor.
	"m": {drop: true},
}

// answer is the outcome of one request.
type answer struct {
	status  int
	message string // for the body of a failure
	source  string // the source of the request's first call, "" before it is known
	calls   int
	body    []byte // the body of a 200 that is not {"success":true}
	allow   string // the methods a 405 names, when not POST
}

// The headers a browser's preflight is told it may send: the SDKs' own
// (analytics-next sends Basic auth from 1.84 and X-Retry-Count on retries).
const allowHeaders = "Authorization, Content-Type, Content-Encoding, X-Retry-Count"

func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if origin := r.Header.Get("Origin"); origin != "" {
		// The origin echoed with credentials allowed, so that an SDK told to
		// send cookies (fetch's credentials: "include") is not refused.
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Allow-Credentials", "true")
		h.Add("Vary", "Origin")
	} else {
		h.Set("Access-Control-Allow-Origin", "*")
	}
	// Without it a browser hides Retry-After from the SDK, which then backs
	// off on its own schedule instead of trackd's.
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		allow := allowHeaders
		if asked := r.Header.Get("Access-Control-Request-Headers"); asked != "" {
			// Headers an SDK was configured to add are allowed too.
			allow += ", " + asked
		}
		h.Set("Access-Control-Allow-Headers", allow)
		h.Add("Vary", "Access-Control-Request-Headers")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ans := a.serve(r)
	a.metrics.HTTPRequests.WithLabelValues(ans.source, strconv.Itoa(ans.status)).Inc()
	a.metrics.HTTPCalls.WithLabelValues(ans.source, strconv.Itoa(ans.status)).Add(float64(ans.calls))
	h.Set("Content-Type", "application/json")
	switch ans.status {
	case http.StatusOK:
		if ans.body != nil {
			_, _ = w.Write(ans.body)
			return
		}
		_, _ = w.Write([]byte(`{"success":true}`))
		return
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		h.Set("Retry-After", retryAfterSeconds)
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Basic realm="trackd"`)
	case http.StatusMethodNotAllowed:
		h.Set("Allow", cmp.Or(ans.allow, "POST, OPTIONS"))
	}
	w.WriteHeader(ans.status)
	body, _ := json.Marshal(struct {
		Success bool   `json:"success"`
		Message string `json:"message"`
	}{false, ans.message})
	_, _ = w.Write(body)
}

func (a *API) serve(r *http.Request) answer {
	// A host or CDN URL configured with a trailing slash makes SDKs ask for
	// //v1/batch or /customerio//v1/projects/….
	path := "/" + strings.Trim(r.URL.Path, "/")
	for strings.Contains(path, "//") {
		path = strings.ReplaceAll(path, "//", "/")
	}
	if sdk, key, ok := settingsRequest(path); ok {
		return a.settings(r, sdk, key)
	}
	name, ok := strings.CutPrefix(path, "/v1/")
	ep, known := endpoints[name]
	if !ok || !known {
		return answer{status: http.StatusNotFound, message: "no such endpoint: " + r.URL.Path + "; use /v1/track, /v1/batch or another call of the Segment tracking API"}
	}
	if r.Method != http.MethodPost {
		return answer{status: http.StatusMethodNotAllowed, message: r.Method + " is not allowed; send calls with POST"}
	}
	if ep.drop {
		return answer{status: http.StatusOK}
	}
	limit, what := MaxCallBytes, "a call"
	if ep.batch {
		limit, what = MaxBatchBytes, "a batch request"
	}
	body, err := readBody(r, limit, what)
	if err != nil {
		return answer{status: http.StatusBadRequest, message: err.Error()}
	}
	calls, err := split(body, ep)
	if err != nil {
		return answer{status: http.StatusBadRequest, message: err.Error()}
	}
	ans := answer{calls: len(calls.list)}
	headerKey, hasHeader := basicAuthKey(r)
	err = a.authenticate(calls, headerKey, hasHeader)
	if len(calls.list) > 0 && calls.list[0].src != nil {
		ans.source = calls.list[0].src.name
	}
	if err != nil {
		ans.status, ans.message = http.StatusUnauthorized, err.Error()
		return ans
	}
	ans.status, ans.message = a.publish(calls.list)
	return ans
}

// request is a request's calls with the envelope they were taken from.
type request struct {
	env  envelope
	list []call
}

// split turns a body into the calls to publish.
func split(body []byte, ep endpoint) (request, error) {
	var req request
	raws := [][]byte{body}
	if ep.batch {
		var err error
		if req.env, raws, err = parseBatch(body); err != nil {
			return req, err
		}
	}
	// What the batch merges into each call is copied into each: bounded, so
	// that a small body cannot make a large request.
	if shared := len(req.env.context) + len(req.env.integrations); shared > MaxCallBytes {
		return req, badf("the batch's context and integrations are %d bytes, over the limit of %d bytes per call they are merged into", shared, MaxCallBytes)
	}
	var arena []byte
	req.list = make([]call, len(raws))
	for i, raw := range raws {
		if len(arena) > maxMergedBytes {
			return req, badf("the batch's calls with its context and integrations merged in are over %d MB; send fewer calls a request", maxMergedBytes>>20)
		}
		c, err := parseCall(raw, &req.env, ep.typ, &arena)
		if err != nil {
			if ep.batch {
				return req, badf("batch[%d]: %v", i, err)
			}
			return req, err
		}
		req.list[i] = c
	}
	return req, nil
}

// authenticate finds the source of every call: the Basic auth username when
// given, else the call's own writeKey, else the batch's. Any call without a
// known key refuses the whole request, and so does a bad key on a batch
// without calls.
func (a *API) authenticate(req request, headerKey string, hasHeader bool) error {
	sources := a.sources.Load()
	var lastKey string
	var last *source
	check := func(own string) (*source, error) {
		key := headerKey
		if !hasHeader {
			key = cmp.Or(own, req.env.writeKey)
		}
		if key == "" {
			return nil, errors.New("no write key: send it as the Basic auth username (empty password) or as writeKey in the body")
		}
		// The calls of a batch nearly always share one key.
		if last == nil || key != lastKey {
			last, lastKey = sources.lookup(key), key
		}
		if last == nil {
			return nil, errors.New("the write key is not one of http.write_keys")
		}
		return last, nil
	}
	if len(req.list) == 0 {
		_, err := check("")
		return err
	}
	for i := range req.list {
		src, err := check(req.list[i].key)
		if err != nil {
			return err
		}
		req.list[i].src = src
	}
	return nil
}

// publish publishes every call and waits for all their acknowledgements
// together; it returns the status to answer with.
func (a *API) publish(calls []call) (int, string) {
	futures := make([]jetstream.PubAckFuture, 0, len(calls))
	status, message := http.StatusOK, ""
	for _, c := range calls {
		var f jetstream.PubAckFuture
		var err error
		if size := max(c.size, len(c.body)); size > MaxCallBytes {
			// Counted with what the batch merged into it: the router refuses
			// what is over its limit, and a 200 must not promise it.
			f, err = dlq.PublishAsync(a.js, dlq.Letter{
				Body: c.body, Stage: dlq.StageHTTP, Attempts: 0,
				Reason: "call is " + strconv.Itoa(size) + " bytes (with the batch's context and integrations), over the tracking API's limit of " + strconv.Itoa(MaxCallBytes) + " bytes per call",
			})
			a.metrics.HTTPCallsDeadLettered.WithLabelValues(c.src.name).Inc()
		} else {
			f, err = a.js.PublishMsgAsync(&nats.Msg{Subject: c.src.subject, Data: c.body}, stallOpt)
		}
		if err != nil {
			status, message = refusal(err)
			break
		}
		futures = append(futures, f)
	}
	timeout := time.NewTimer(a.ackTimeout)
	defer timeout.Stop()
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if status == http.StatusOK {
				status, message = refusal(err)
			}
		case <-timeout.C:
			// JetStream is connected but not answering. Every publish still
			// waiting is failed (other requests' too, which their clients
			// retry), so that none holds a slot of the window for ever; the
			// futures of this request then resolve at once.
			a.log.Error("http: JetStream did not acknowledge calls within the timeout; failing every publish still waiting", "timeout", a.ackTimeout.String())
			a.js.CleanupPublisher()
			if status == http.StatusOK {
				status, message = http.StatusServiceUnavailable, "JetStream did not acknowledge the calls within "+a.ackTimeout.String()+"; retry later"
			}
			select {
			case <-f.Ok():
			case <-f.Err():
			}
		}
	}
	if status != http.StatusOK {
		a.log.Warn("http: calls not stored; the client is told to retry", "calls", len(calls), "status", status, "err", message)
	}
	return status, message
}

// refusal is the answer when JetStream did not take a call: 429 when the
// window of acknowledgements is full (trackd is behind), 503 otherwise, with
// what to look at when the ingest stream is full.
func refusal(err error) (int, string) {
	switch {
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return http.StatusTooManyRequests, "trackd is taking calls slower than they arrive; retry later"
	case strings.Contains(err.Error(), streamFull):
		return http.StatusServiceUnavailable, "the ingest stream is full (ingest.max_bytes): trackd is not routing calls as fast as they come; retry later"
	}
	return http.StatusServiceUnavailable, "JetStream did not store the calls (" + err.Error() + "); retry later"
}

// streamFull is how JetStream refuses a message to a stream at its
// MaxBytes with DiscardNew (nats-server's ErrMaxBytes).
const streamFull = "maximum bytes exceeded"
