package deliver

import (
	"time"

	"trackd.dev/trackd/daemon/internal/bus"
)

// The fixed settings of the hand-off and the deliverers, each with the reason
// for its value. The two an operator would turn are per destination in the
// configuration instead: max_in_flight (WithMaxInFlight) and
// direct_timeout (WithDirectTimeout).
const (
	// deliverTimeout bounds one plugin call; plugins have their own, shorter,
	// request timeouts, so this only catches a plugin that hangs.
	deliverTimeout = 2 * time.Minute
	// progressEvery keeps a long batch's messages from passing bus.AckWait.
	progressEvery = bus.AckWait / 3
	// queueTimeout bounds the wait for JetStream to confirm a batch's events
	// queued on the routed stream: past the router's AckWait its ingest
	// messages would go to another worker anyway.
	queueTimeout = bus.RouterAckWait
	// directQueue is how many offers may wait for a destination's plugin; past
	// that, a batch's events for it take the routed stream. Four batches of
	// the router's 512 events keep a plugin busy for one router batch.
	directQueue = 4
	// directPatience is how long the router may wait for room in the queue of
	// a destination whose calls take no longer than that: a fast destination
	// then skips the routed stream, and a slow one is never waited for.
	directPatience = 20 * time.Millisecond
	// stopGrace is how long, once the daemon is stopping, a plugin call under
	// way may go on: a healthy call ends well within it, and a hung one is
	// then cancelled and its events handed back to the routed stream, so that
	// the restarted daemon, or another, delivers them at once rather than
	// after the ack wait. It must stay below shutdown.timeout's default (30s).
	stopGrace = 5 * time.Second
	// directPoll is how often a destination off the direct path looks whether
	// its consumer is empty, to take the direct path again: often enough that
	// a blip costs little, seldom enough that the consumer info costs nothing.
	directPoll = 500 * time.Millisecond
)
