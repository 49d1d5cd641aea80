package bus

import (
	"strings"
	"time"
)

// Names of the daemon's own streams and subjects.
const (
	RoutedStream  = "TRACK_ROUTED"
	RoutedSubject = "trackd.routed"
	// RouterConsumer is the durable consumer every daemon shares on the ingest stream.
	RouterConsumer = "router"
)

// ConsumerName is the durable consumer of a destination on the routed stream.
func ConsumerName(destinationID string) string { return destinationPrefix + destinationID }

// DestinationOf is the destination whose consumer is named consumer, if it is
// a destination's.
func DestinationOf(consumer string) (id string, ok bool) {
	return strings.CutPrefix(consumer, destinationPrefix)
}

const destinationPrefix = "dest_"

// RoutedSubjectFor is the routed stream's subject for one destination's events.
// (Messages on RoutedSubject itself, from earlier versions, name their
// destinations in a header; deliver reads and writes routed messages.)
func RoutedSubjectFor(destinationID string) string { return RoutedSubject + "." + destinationID }

// AckWait is how long a fetched message may go unacked before NATS hands it to
// another worker; long batches report progress to keep it.
const AckWait = 30 * time.Second

// RouterAckWait is the router's AckWait. A router batch is handed on in well
// under a second, so it is short, and so is the routed stream's duplicate
// window, which must outlast it.
const RouterAckWait = 10 * time.Second
