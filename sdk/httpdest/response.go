package httpdest

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"trackd.dev/trackd/sdk"
)

// Response is what DoResponse read of an HTTP response.
type Response struct {
	StatusCode int
	Header     http.Header
	// Body is the start of the response body: at most the limit given to
	// DoResponse.
	Body []byte
}

// DoResponse is Do for APIs that answer a batch with per-event outcomes in
// the response body, such as the indexes of the events they rejected. It
// classifies the outcome exactly as Do does and also returns the response,
// with up to limit bytes of its body; the response is nil when none was
// received (connection refused, timeout, ...). The caller decides which
// events the result applies to.
func (c *Client) DoResponse(req *http.Request, limit int) (sdk.Result, *Response) {
	req, err := c.prepare(req)
	if err != nil {
		return sdk.Drop(fmt.Sprintf("%s %s: %v", req.Method, redact(req.URL), err)), nil
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return sdk.Retry(0, fmt.Sprintf("%s %s: %v", req.Method, redact(req.URL), err)), nil
	}
	defer resp.Body.Close()
	// A body cut short by a read error is returned as read, as Do does; a
	// caller parsing it finds out.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, int64(max(limit, maxReasonBody))))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	out := &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: body[:min(len(body), max(limit, 0))]}

	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return sdk.OK(), out
	}
	reason := fmt.Sprintf("%s %s: %s", req.Method, redact(req.URL), resp.Status)
	if loc, err := resp.Location(); err == nil {
		reason += " to " + redact(loc)
	}
	if s := snippet(body[:min(len(body), maxReasonBody)]); s != "" {
		reason += ": " + s
	}
	if code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500 {
		return sdk.Retry(retryAfter(resp.Header.Get("Retry-After"), time.Now()), reason), out
	}
	return sdk.Drop(reason), out
}

// Worst is the result of a call that took several requests, from theirs: a
// retry if any asks for one (the longest wait), else a drop if any is one,
// else ok. A zero Result stands for a request the call did not need.
func Worst(results ...sdk.Result) sdk.Result {
	rank := func(s sdk.Status) int {
		switch s {
		case sdk.StatusRetry:
			return 3
		case sdk.StatusDrop:
			return 2
		case sdk.StatusOK:
			return 1
		}
		return 0
	}
	w := sdk.OK()
	for _, r := range results {
		if rank(r.Status) > rank(w.Status) || r.Status == sdk.StatusRetry && r.RetryAfter > w.RetryAfter {
			w = r
		}
	}
	return w
}
