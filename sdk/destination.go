// Package sdk is what a trackd destination plugin is built from, and what the
// trackd daemon uses to run one.
//
// A plugin implements [Destination] and calls [Serve] from its main function:
//
//	//go:embed sample.toml
//	var sampleConfig string
//
//	func main() { sdk.Serve(&Webhook{}, sampleConfig) }
//
// The daemon starts the binary with [Start] and talks to it through the
// returned [Client]. Both sides speak hashicorp/go-plugin over gRPC with the
// service in package destinationpb; neither has to know about it.
package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// Destination is what a plugin implements.
//
// The host calls Configure once, before any Deliver. Deliver may be called
// concurrently from several goroutines of the host.
type Destination interface {
	// Configure receives the destination's [destinations.<id>.settings]
	// table. It validates the settings and prepares clients; it makes no
	// network calls, so that `trackd validate` works offline. An error
	// should name the setting at fault.
	Configure(ctx context.Context, settings Settings) error

	// Deliver sends a batch and returns exactly one Result per event, in the
	// order of batch.
	Deliver(ctx context.Context, batch []Event) []Result
}

// The form of the times the daemon writes (receivedAt, and a timestamp it
// computes): UTC with milliseconds, so that they sort as strings and every
// destination sees the same precision.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// MaxMessageIDRunes is the longest messageId the daemon accepts.
const MaxMessageIDRunes = 100

// Event is a normalized track event and the fields every plugin needs. It is
// the one definition of what crosses to plugins: the daemon's router and
// delivery stages pass it as it is.
//
// In a plugin, the JSON of a batch's events are slices of one block: each is
// capped, so appending to it copies, and stays valid after Deliver returns,
// but its bytes are not to be changed.
type Event struct {
	JSON        []byte // the normalized event, as the daemon produced it
	MessageID   string
	Name        string // the "event" field
	UserID      string
	AnonymousID string
	Timestamp   time.Time // the normalized timestamp; zero if unknown
}

// Properties decodes the event's "properties" object, each value left as
// the raw JSON the producer sent, for a plugin to translate. An event without
// properties, or with null, has an empty map; the map is the caller's to
// change. The error, "event JSON is invalid: ...", is fit to be the reason of
// a Drop.
func (e Event) Properties() (map[string]json.RawMessage, error) {
	var ev struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(e.JSON, &ev); err != nil {
		return nil, fmt.Errorf("event JSON is invalid: %w", err)
	}
	if ev.Properties == nil {
		ev.Properties = make(map[string]json.RawMessage)
	}
	return ev.Properties, nil
}

// Status is the outcome of delivering one event. Its zero value is not a
// valid status: a plugin must say what happened.
type Status int

const (
	StatusOK    Status = iota + 1 // delivered
	StatusRetry                   // failed, try again later
	StatusDrop                    // failed for good: send to the dead-letter stream
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusRetry:
		return "retry"
	case StatusDrop:
		return "drop"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Result is the outcome of delivering one event.
type Result struct {
	Status Status
	// Reason says why an event is retried or dropped, in one sentence. It
	// ends up in logs and in the dead-letter message's Trackd-Error header.
	Reason string
	// RetryAfter is the earliest time to try again when Status is
	// StatusRetry; zero leaves it to the host's backoff.
	RetryAfter time.Duration
}

// OK reports an event as delivered.
func OK() Result { return Result{Status: StatusOK} }

// Retry asks the host to deliver the event again, not before after (zero: the
// host's backoff decides).
func Retry(after time.Duration, reason string) Result {
	return Result{Status: StatusRetry, Reason: reason, RetryAfter: max(after, 0)}
}

// Drop gives up on the event; the host dead-letters it with reason.
func Drop(reason string) Result { return Result{Status: StatusDrop, Reason: reason} }
