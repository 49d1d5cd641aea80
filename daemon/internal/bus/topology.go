package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
)

// Topology is what Setup created.
type Topology struct {
	Ingest jetstream.Stream
	Routed jetstream.Stream
	DLQ    jetstream.Stream
}

// Setup creates or updates the streams, each with [nats] replicas.
func (b *Bus) Setup(ctx context.Context, cfg *config.Config) (*Topology, error) {
	var t Topology
	var err error
	replicas := cfg.NATS.Replicas
	t.Ingest, err = b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Ingest.Stream,
		Description: "track events from producers",
		Subjects:    cfg.Ingest.Subjects,
		Storage:     jetstream.FileStorage,
		// Every daemon shares one consumer, so a message is done once it is routed.
		Retention: jetstream.WorkQueuePolicy,
		Replicas:  replicas,
		// Full, the stream refuses new events (producers see a failed
		// publish, the tracking API answers 503) rather than dropping any.
		MaxBytes: int64(cfg.Ingest.MaxBytes),
		Discard:  jetstream.DiscardNew,
	})
	if err != nil {
		return nil, streamError(cfg.Ingest.Stream, "ingest.stream", "ingest.max_bytes", cfg.Ingest.MaxBytes, err)
	}
	// The routed stream's duplicate window absorbs a router step that published
	// and then crashed before acking, which is redelivered after RouterAckWait.
	// The server keeps every id of the window in memory (about 90 bytes each),
	// so the window is kept just past RouterAckWait.
	dup := RouterAckWait + 10*time.Second
	t.Routed, err = b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        RoutedStream,
		Description: "normalized events waiting for their destinations",
		Subjects:    []string{RoutedSubject, RoutedSubject + ".>"},
		Storage:     jetstream.FileStorage,
		// A message lives until every destination consumer has acked it.
		Retention:  jetstream.InterestPolicy,
		Duplicates: dup,
		Replicas:   replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot create stream %s: %w", RoutedStream, err)
	}
	t.DLQ, err = b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        dlq.Stream,
		Description: "invalid events and events a destination finally failed",
		Subjects:    []string{dlq.Subjects},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		// A flood of invalid events must not fill the disk: the oldest
		// letters go first.
		MaxAge:   cfg.DLQ.MaxAge,
		MaxBytes: int64(cfg.DLQ.MaxBytes),
		Discard:  jetstream.DiscardOld,
	})
	if err != nil {
		return nil, streamError(dlq.Stream, "", "dlq.max_bytes", cfg.DLQ.MaxBytes, err)
	}
	return &t, nil
}

// The server's error codes for a stream it has no room for (nats-server's
// JSInsufficientResourcesErr and JSStorageResourcesExceededErr).
const (
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeStorageExceeded       jetstream.ErrorCode = 10047
)

// streamError says why a stream could not be made: when the server cannot
// hold its limit, which key to lower.
func streamError(name, nameKey, limitKey string, limit config.Bytes, err error) error {
	if nameKey != "" {
		name += " (" + nameKey + ")"
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeInsufficientResources || apiErr.ErrorCode == errCodeStorageExceeded) {
		return fmt.Errorf("cannot create stream %s: the NATS server cannot store %s (%s): %w; lower %s or give the server more storage (max_file_store)",
			name, limit, limitKey, err, limitKey)
	}
	return fmt.Errorf("cannot create stream %s: %w", name, err)
}

// Router creates or updates the durable consumer every daemon shares on the ingest stream.
func (t *Topology) Router(ctx context.Context, maxAckPending int) (jetstream.Consumer, error) {
	c, err := t.Ingest.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       RouterConsumer,
		Description:   "trackd router: validate, dedupe, route",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       RouterAckWait,
		MaxDeliver:    -1,
		MaxAckPending: maxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot create consumer %s on stream %s: %w", RouterConsumer, t.Ingest.CachedInfo().Config.Name, err)
	}
	return c, nil
}

// Destination creates or updates a destination's durable consumer on the routed stream.
// A destination added later starts with events routed from then on.
func (t *Topology) Destination(ctx context.Context, id string, maxAckPending int) (jetstream.Consumer, error) {
	name := ConsumerName(id)
	c, err := t.Routed.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:        name,
		Description:    "trackd destination " + id,
		FilterSubjects: []string{RoutedSubject, RoutedSubjectFor(id)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        AckWait,
		MaxDeliver:     -1,
		MaxAckPending:  maxAckPending,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot create consumer %s on stream %s: %w", name, RoutedStream, err)
	}
	return c, nil
}

// Streams reports the state and byte limit of each stream trackd keeps
// events in; a stream whose info cannot be read now is left out.
func (t *Topology) Streams(ctx context.Context) []metrics.StreamState {
	var out []metrics.StreamState
	for _, s := range []jetstream.Stream{t.Ingest, t.Routed, t.DLQ} {
		if info, err := s.Info(ctx); err == nil {
			out = append(out, metrics.StreamState{Name: info.Config.Name, Bytes: info.State.Bytes, Messages: info.State.Msgs, MaxBytes: info.Config.MaxBytes})
		}
	}
	return out
}

// Backlog returns, per consumer of the ingest and routed streams, how many
// messages wait: not yet delivered plus delivered and unacked.
func (t *Topology) Backlog(ctx context.Context) map[string]float64 {
	out := map[string]float64{}
	for _, s := range []jetstream.Stream{t.Ingest, t.Routed} {
		list := s.ListConsumers(ctx)
		for ci := range list.Info() {
			out[ci.Name] = float64(ci.NumPending) + float64(ci.NumAckPending)
		}
	}
	return out
}
