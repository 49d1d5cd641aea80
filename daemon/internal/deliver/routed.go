package deliver

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
)

// The routed message: a normalized event queued on the routed stream for one
// destination. It is written and read here only.
const (
	// HeaderDestinations names the destinations a routed message is for.
	// (Messages on bus.RoutedSubject itself, from earlier versions, name
	// several; those on a destination's own subject name it alone.)
	HeaderDestinations = "Trackd-Destinations"
	// HeaderRetryAt, on a routed message, says its destination already had
	// one attempt (on the direct path) and when to try again.
	HeaderRetryAt = "Trackd-Retry-At"
)

// RoutedMsg queues body, a normalized event, for destination dest alone.
// msgID absorbs a repeat of the same hand-off within the routed stream's
// duplicate window.
func RoutedMsg(dest string, body []byte, msgID string) *nats.Msg {
	return routedMsg(dest, body, msgID, time.Time{})
}

// routedMsg is RoutedMsg for an event the direct path tried: retryAt, when
// not zero, is when to try it again.
func routedMsg(dest string, body []byte, msgID string, retryAt time.Time) *nats.Msg {
	h := nats.Header{HeaderDestinations: {dest}, jetstream.MsgIDHeader: {msgID}}
	if !retryAt.IsZero() {
		h[HeaderRetryAt] = []string{retryAt.UTC().Format(time.RFC3339Nano)}
	}
	return &nats.Msg{Subject: bus.RoutedSubjectFor(dest), Data: body, Header: h}
}

// handOffID keys a routed message by its ingest message, not its messageId: a
// redelivered router step is absorbed even when it assigned a fresh messageId,
// while the same messageId accepted again after the dedupe window is not. The
// store time tells apart the messages of a stream that was deleted and made
// again.
func handOffID(ev *Routed, dest string) string {
	return strconv.FormatUint(ev.Seq, 10) + "@" + strconv.FormatInt(ev.Received.UnixNano(), 10) + "/" + dest
}

func addressedTo(m jetstream.Msg, id string) bool {
	header := m.Headers().Get(HeaderDestinations)
	for header != "" {
		var d string
		d, header, _ = strings.Cut(header, ",")
		if d == id {
			return true
		}
	}
	return false
}

// standsForDirectTry says whether delivery m stands for the attempt the
// direct path made: the first delivery of a message it tried and was asked to
// retry. Such a delivery is nak'ed until retry time, wait (0 once that has
// passed), so that JetStream's count of deliveries counts the direct attempt
// whether or not its retry time has come when the consumer reads it.
func standsForDirectTry(m jetstream.Msg) (wait time.Duration, ok bool) {
	h := m.Headers().Get(HeaderRetryAt)
	if h == "" {
		return 0, false
	}
	md, err := m.Metadata()
	if err != nil || md.NumDelivered > 1 {
		return 0, false
	}
	at, err := time.Parse(time.RFC3339Nano, h)
	if err != nil {
		return 0, true
	}
	return max(time.Until(at), 0), true
}
