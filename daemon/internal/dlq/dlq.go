// Package dlq owns dead letters: events that failed validation, and events a
// destination dropped or kept failing, each kept in the dead-letter stream
// with the reason in its headers. It names the stream, its subjects and
// headers, writes letters (the router, the tracking API and the deliverers
// call PublishAsync), and reads and replays them for `trackd dlq`.
package dlq

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream is the dead-letter stream; its subjects are Subject's.
const Stream = "TRACK_DLQ"

// Subjects is the filter of every dead letter.
const Subjects = subjectPrefix + ">"

const subjectPrefix = "trackd.dlq."

// Subject is the subject of a destination's dead letters, or of invalid
// events when destination is "" or "invalid".
func Subject(destination string) string {
	if destination == "" {
		destination = Invalid
	}
	return subjectPrefix + destination
}

// Invalid is what stands for the destination of events that failed
// validation, in subjects and in `trackd dlq --destination`.
const Invalid = "invalid"

// Header names of dead letters.
const (
	HeaderError       = "Trackd-Error"
	HeaderDestination = "Trackd-Destination"
	HeaderAttempts    = "Trackd-Attempts"
	HeaderStage       = "Trackd-Stage"
)

// Stages name where an event died.
const (
	StageValidate = "validate"
	StageDeliver  = "deliver"
	// StageHTTP is the tracking API refusing one call of a batch it accepted.
	StageHTTP = "http"
)

// Letter is one dead letter.
type Letter struct {
	Body        []byte // the original bytes for invalid events, else the normalized event
	Destination string // "" for invalid events
	Stage       string
	Attempts    int
	Reason      string
}

// PublishAsync publishes a dead letter; the caller must see the future succeed
// before acking the message the letter replaces.
func PublishAsync(js jetstream.JetStream, l Letter) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg(Subject(l.Destination))
	m.Data = l.Body
	m.Header.Set(HeaderError, l.Reason)
	m.Header.Set(HeaderStage, l.Stage)
	m.Header.Set(HeaderAttempts, strconv.Itoa(l.Attempts))
	if l.Destination != "" {
		m.Header.Set(HeaderDestination, l.Destination)
	}
	return js.PublishMsgAsync(m)
}
