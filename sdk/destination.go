// Package sdk is what a trackd destination plugin is built from: a plugin
// implements [Destination] and calls [Serve] from its main function.
//
//	//go:embed sample.toml
//	var sampleConfig string
//
//	func main() {
//		sdk.Serve(&Webhook{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"secret"}})
//	}
//
// A plugin grows by optional interfaces, found by type assertion: a
// [Typer] takes other calls than track, a [Closer] is told before it is
// stopped. A plugin that implements neither takes track calls and is simply
// stopped.
//
// The daemon side of the boundary is package sdk/host; plugin authors do not
// need it. To test a plugin binary, use package sdk/destinationtest.
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
	// order of batch. A panic, a missing Result or one with no Status drops
	// the events concerned with a reason saying so; the plugin stays up.
	Deliver(ctx context.Context, batch []Event) []Result
}

// Typer is implemented by a Destination that takes other call types than
// track. Types is called once, after Configure, so the answer may depend on
// the settings; the host routes to the destination only calls of these types.
type Typer interface {
	Types() []string
}

// Closer is implemented by a Destination that holds something to finish
// before it stops, such as a buffer to flush. The host calls Close once, after
// the last Deliver has returned, and stops the plugin when Close returns or
// ctx is done.
type Closer interface {
	Close(ctx context.Context) error
}

// The call types of the Segment spec, as Event.Type holds them.
const (
	TypeTrack    = "track"
	TypeIdentify = "identify"
	TypePage     = "page"
	TypeScreen   = "screen"
	TypeGroup    = "group"
	TypeAlias    = "alias"
)

// AllTypes returns every call type, for a [Typer] that takes them all.
func AllTypes() []string {
	return []string{TypeTrack, TypeIdentify, TypePage, TypeScreen, TypeGroup, TypeAlias}
}

// The form of the times the daemon writes (receivedAt, and a timestamp it
// computes): UTC with milliseconds, so that they sort as strings and every
// destination sees the same precision.
const TimeLayout = "2006-01-02T15:04:05.000Z"

// MaxMessageIDRunes is the longest messageId the daemon accepts.
const MaxMessageIDRunes = 100

// Event is one normalized call and the fields every plugin needs. It is the
// one definition of what crosses to plugins: the daemon's router and
// delivery stages pass it as it is.
//
// In a plugin, the JSON of a batch's events are slices of one block: each is
// capped, so appending to it copies, and stays valid after Deliver returns,
// but its bytes are not to be changed.
type Event struct {
	JSON      []byte // the normalized call, as the daemon produced it
	MessageID string
	Type      string // TypeTrack, TypeIdentify, TypePage, ...
	// Name is a track call's "event", or a page or screen call's "name" ("" when it has none).
	Name        string
	UserID      string
	AnonymousID string
	GroupID     string    // a group call's groupId
	PreviousID  string    // an alias call's previousId
	Timestamp   time.Time // the normalized timestamp; zero if unknown
}

// Properties decodes the call's "properties" object (track, page and
// screen calls), each value left as the raw JSON the producer sent, for a
// plugin to translate. A call without properties, or with null, has an empty
// map; the map is the caller's to change. The error, "event JSON is invalid:
// ...", is fit to be the reason of a Drop.
func (e Event) Properties() (map[string]json.RawMessage, error) {
	var ev struct {
		Object map[string]json.RawMessage `json:"properties"`
	}
	err := decodeObject(e.JSON, &ev, &ev.Object)
	return ev.Object, err
}

// Traits decodes the call's "traits" object (identify and group calls) as
// Properties decodes properties.
func (e Event) Traits() (map[string]json.RawMessage, error) {
	var ev struct {
		Object map[string]json.RawMessage `json:"traits"`
	}
	err := decodeObject(e.JSON, &ev, &ev.Object)
	return ev.Object, err
}

// decodeObject decodes event into v, a struct whose one field is *object,
// and makes a nil object an empty map.
func decodeObject(event []byte, v any, object *map[string]json.RawMessage) error {
	if err := json.Unmarshal(event, v); err != nil {
		*object = nil
		return fmt.Errorf("event JSON is invalid: %w", err)
	}
	if *object == nil {
		*object = make(map[string]json.RawMessage)
	}
	return nil
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
