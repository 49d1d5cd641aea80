// Package tap lets an operator watch routing decisions live. A running
// `trackd tap` says hello on a core NATS subject every few seconds; while
// hellos keep coming, every daemon on that NATS publishes one Decision per
// event, and stops again once they do not, so an unwatched daemon pays
// nothing per event.
package tap

import (
	"encoding/json"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"trackd.dev/trackd/daemon/internal/route"
)

// Subjects of the tap protocol.
const (
	HelloSubject     = "trackd.tap.hello"
	DecisionsSubject = "trackd.tap.decisions"
	// HelloEvery is how often a tap says hello; a daemon stops publishing
	// three missed hellos after the last one.
	HelloEvery = 2 * time.Second
)

// Outcomes of an event.
const (
	Routed    = "routed"    // handed to at least one destination
	Unrouted  = "unrouted"  // valid, but no destination wanted it
	Duplicate = "duplicate" // a repeat of a messageId inside the dedupe window
	Invalid   = "invalid"   // failed validation; dead-lettered
)

// Decision is what the router did with one event.
type Decision struct {
	Time         time.Time       `json:"time"`
	Type         string          `json:"type,omitempty"`  // the call's type; "" for an invalid event
	Event        string          `json:"event,omitempty"` // a track call's event, a page or screen call's name
	MessageID    string          `json:"messageId,omitempty"`
	Outcome      string          `json:"outcome"`
	Error        string          `json:"error,omitempty"`
	Destinations []route.Verdict `json:"destinations,omitempty"`
}

// Publisher is the daemon side: it publishes decisions while a tap listens.
type Publisher struct {
	nc    *nats.Conn
	sub   *nats.Subscription
	until atomic.Int64 // unix nanoseconds until which a tap is listening
}

// NewPublisher starts listening for taps' hellos.
func NewPublisher(nc *nats.Conn) (*Publisher, error) {
	p := &Publisher{nc: nc}
	sub, err := nc.Subscribe(HelloSubject, func(m *nats.Msg) {
		p.until.Store(time.Now().Add(3 * HelloEvery).UnixNano())
		// A tap's first hello is a request, so it knows a daemon listens
		// before it says it is tapping.
		if m.Reply != "" {
			_ = m.Respond(nil)
		}
	})
	if err != nil {
		return nil, err
	}
	p.sub = sub
	return p, nil
}

// Active reports whether a tap is listening; nil is a publisher nobody hears.
func (p *Publisher) Active() bool {
	return p != nil && time.Now().UnixNano() < p.until.Load()
}

// Publish sends a decision to the listening taps; a tap is best effort.
func (p *Publisher) Publish(d Decision) {
	b, err := json.Marshal(d)
	if err != nil {
		return
	}
	_ = p.nc.Publish(DecisionsSubject, b)
}

// Close stops listening for hellos.
func (p *Publisher) Close() { _ = p.sub.Unsubscribe() }
