package deliver

import (
	"fmt"
	"time"

	"trackd.dev/trackd/sdk"
)

// The outcome policy: what becomes of an event once its plugin call is over,
// the same on the direct path and from the destination's consumer.

type fate int

const (
	fateDelivered fate = iota
	fateRetry
	fateDeadLetter
)

// verdict is what becomes of one event.
type verdict struct {
	fate   fate
	after  time.Duration // fateRetry: how long to wait
	reason string        // fateDeadLetter: why, for its Trackd-Error header
}

// judge turns the plugin's result for an event (or the call's failure,
// callErr) into a verdict: ok is delivered, drop is dead-lettered, and retry
// (or a failed call) waits with backoff, or the destination's Retry-After,
// until max_attempts or max_age run out. attempt says, only when it is
// needed, which attempt this was (counting this one) and how long ago the
// event was stored.
func (d *Deliverer) judge(res sdk.Result, callErr error, attempt func() (n int, age time.Duration)) verdict {
	reason := res.Reason
	switch {
	case callErr != nil:
		reason = callErr.Error()
	case res.Status == sdk.StatusOK:
		return verdict{fate: fateDelivered}
	case res.Status != sdk.StatusRetry:
		return verdict{fate: fateDeadLetter, reason: "dropped by the destination: " + res.Reason}
	}
	attempts, age := attempt()
	if attempts >= d.retry.MaxAttempts {
		return verdict{fate: fateDeadLetter, reason: fmt.Sprintf("gave up after %d attempts: %s", attempts, reason)}
	}
	delay := max(backoff(d.retry, attempts), res.RetryAfter)
	if age+delay > d.retry.MaxAge {
		return verdict{fate: fateDeadLetter, reason: fmt.Sprintf("gave up after %s and %d attempts: %s", age.Round(time.Second), attempts, reason)}
	}
	return verdict{fate: fateRetry, after: delay}
}
