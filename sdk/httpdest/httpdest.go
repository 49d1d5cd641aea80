// Package httpdest is the common part of a destination plugin that calls an
// HTTP API: a timeout on every request, optional gzip, and the translation of
// a response into an sdk.Result.
package httpdest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"trackd.dev/trackd/sdk"
)

// DefaultTimeout bounds a request when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// Options configure a Client.
type Options struct {
	// Timeout bounds each request, from dialing to reading the response
	// body. Zero means DefaultTimeout.
	Timeout time.Duration
	// Gzip compresses request bodies and sets Content-Encoding: gzip; only
	// for APIs documented to accept it.
	Gzip bool
	// Concurrency is the most requests one Deliver call sends at once; zero
	// means DefaultConcurrency. The client keeps an idle connection to a host
	// for each request that may be under way there: Concurrency for every
	// Deliver call trackd may make at once (a destination's max_in_flight, at
	// most MaxCallsInFlight), so that a busy destination reuses its
	// connections instead of opening one per request.
	Concurrency int
	// Transport sends the requests; nil means a transport like
	// http.DefaultTransport that keeps the idle connections Concurrency asks for.
	Transport http.RoundTripper
}

// DefaultConcurrency is Options.Concurrency when it is zero.
const DefaultConcurrency = 8

// MaxCallsInFlight is the most Deliver calls trackd makes to one plugin at
// once: the largest max_in_flight a destination may have.
const MaxCallsInFlight = 64

// Client sends requests to a destination's API. It is safe for concurrent
// use.
type Client struct {
	http *http.Client
	gzip bool
}

// New returns a Client.
func New(o Options) *Client {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Transport == nil {
		// net/http's default keeps 2 idle connections per host: with more
		// requests than that under way, every other request opens (and
		// leaves in TIME_WAIT) a connection of its own.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = o.Concurrency * MaxCallsInFlight
		t.MaxIdleConns = 0 // no limit across hosts; each host's is above
		o.Transport = t
	}
	return &Client{
		http: &http.Client{Timeout: o.Timeout, Transport: o.Transport, CheckRedirect: checkRedirect},
		gzip: o.Gzip,
	}
}

// checkRedirect follows only the redirects that keep the method and body (307
// and 308). net/http turns a POST into a bodiless GET on 301, 302 and 303,
// which would report an event delivered that never was; those come back as
// the response, and so as a drop.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if code := req.Response.StatusCode; code != http.StatusTemporaryRedirect && code != http.StatusPermanentRedirect {
		return http.ErrUseLastResponse
	}
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	return nil
}

// Do sends req and classifies the outcome:
//
//   - 2xx: ok
//   - 408, 429 and 5xx: retry, after the response's Retry-After (seconds or
//     an HTTP date) if it has one
//   - any other status: drop; this includes redirects other than 307 and
//     308, which are followed
//   - no response (connection refused, timeout, ...): retry
//
// The reason of a retry or drop names the request and the status, followed
// by the start of the response body. Do always reads and closes the body.
func (c *Client) Do(req *http.Request) sdk.Result {
	res, _ := c.DoResponse(req, 0)
	return res
}

// prepare returns req, or a copy of it with its body compressed.
func (c *Client) prepare(req *http.Request) (*http.Request, error) {
	if !c.gzip || req.Body == nil || req.Body == http.NoBody {
		return req, nil
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		return req, fmt.Errorf("read request body: %w", err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(body) // writes to a bytes.Buffer do not fail
	_ = zw.Close()
	zipped := buf.Bytes()

	r := req.Clone(req.Context())
	r.Body = io.NopCloser(bytes.NewReader(zipped))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(zipped)), nil }
	r.ContentLength = int64(len(zipped))
	r.Header.Set("Content-Encoding", "gzip")
	return r, nil
}

// maxReasonBody is how much of a response body a reason quotes.
const maxReasonBody = 200

// OneLine makes a message from an API, such as the error text of a JSON
// response, fit a one-line reason, which ends up in logs and NATS headers:
// it drops invalid UTF-8 and folds each run of white space, line breaks
// included, into one space, trimming both ends.
func OneLine(s string) string {
	return strings.Join(strings.Fields(strings.ToValidUTF8(s, "")), " ")
}

// snippet makes the start of a response body fit a one-line reason; unlike
// OneLine it also blanks out control characters, which a body may hold
// anywhere.
func snippet(b []byte) string {
	s := strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(string(b), ""))
	return OneLine(s)
}

// redact drops the query and password of u: they often hold API keys.
func redact(u *url.URL) string {
	if u == nil {
		return ""
	}
	r := *u
	r.RawQuery, r.ForceQuery, r.Fragment = "", false, ""
	return r.Redacted()
}

// retryAfter parses a Retry-After value: seconds, or an HTTP date relative to
// now. Anything else, or a time in the past, is zero.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(time.Duration(1<<63-1)/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// Split cuts n items into consecutive batches of at most maxCount items and
// at most maxBytes bytes, where size(i) is the size of item i; a limit of 0
// or less is no limit. An item bigger than maxBytes gets a batch of its own.
// Each batch is returned as the half-open range [start, end).
func Split(n, maxCount, maxBytes int, size func(i int) int) [][2]int {
	var out [][2]int
	start, total := 0, 0
	for i := range n {
		s := 0
		if maxBytes > 0 {
			s = size(i)
		}
		full := (maxCount > 0 && i-start >= maxCount) || (maxBytes > 0 && total+s > maxBytes)
		if i > start && full {
			out = append(out, [2]int{start, i})
			start, total = i, 0
		}
		total += s
	}
	if start < n {
		out = append(out, [2]int{start, n})
	}
	return out
}
