// Package dlq writes dead letters: events that failed validation, and events a
// destination dropped or kept failing, each with the reason in its headers.
package dlq

import (
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
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
	subject := bus.DLQInvalid
	if l.Destination != "" {
		subject = bus.DLQPrefix + l.Destination
	}
	m := nats.NewMsg(subject)
	m.Data = l.Body
	m.Header.Set(bus.HeaderError, l.Reason)
	m.Header.Set(bus.HeaderStage, l.Stage)
	m.Header.Set(bus.HeaderAttempts, strconv.Itoa(l.Attempts))
	if l.Destination != "" {
		m.Header.Set(bus.HeaderDestination, l.Destination)
	}
	return js.PublishMsgAsync(m)
}
