// Package bus connects the daemon to NATS — an embedded server or an external
// one — and creates the JetStream streams, bucket and subjects the daemon uses.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dlq"
)

// Names of the daemon's own streams and subjects.
const (
	RoutedStream  = "TRACK_ROUTED"
	RoutedSubject = "trackd.routed"
	// RouterConsumer is the durable consumer every daemon shares on the ingest stream.
	RouterConsumer = "router"
)

// ConsumerName is the durable consumer of a destination on the routed stream.
func ConsumerName(destinationID string) string { return "dest_" + destinationID }

// RoutedSubjectFor is the routed stream's subject for one destination's events.
// (Messages on RoutedSubject itself, from earlier versions, name their
// destinations in a header; deliver reads and writes routed messages.)
func RoutedSubjectFor(destinationID string) string { return RoutedSubject + "." + destinationID }

// Bus is an open connection, and the embedded server when there is one.
type Bus struct {
	Conn   *nats.Conn
	JS     jetstream.JetStream
	server *server.Server
}

// Watch is told when the connection to NATS drops, comes back or closes: it
// logs each change and keeps the instruments, which may be nil.
type Watch struct {
	Log        *slog.Logger
	Connected  prometheus.Gauge   // 1 while connected, else 0
	Reconnects prometheus.Counter // reconnections after a drop
}

func (w Watch) options() []nats.Option {
	set := func(v float64) {
		if w.Connected != nil {
			w.Connected.Set(v)
		}
	}
	return []nats.Option{
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			set(0)
			if w.Log != nil {
				w.Log.Warn("lost the connection to NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			set(1)
			if w.Reconnects != nil {
				w.Reconnects.Inc()
			}
			if w.Log != nil {
				w.Log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			}
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			set(0)
			if w.Log != nil {
				w.Log.Info("connection to NATS closed")
			}
		}),
	}
}

// Open starts the embedded server when cfg.NATS.URL is empty, then connects,
// telling watch about the connection from then on.
func Open(cfg *config.Config, watch Watch) (*Bus, error) {
	b := &Bus{}
	opts := append([]nats.Option{
		nats.Name("trackd"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
	}, watch.options()...)
	url := cfg.NATS.URL
	if url == "" {
		srv, err := startEmbedded(cfg)
		if err != nil {
			return nil, err
		}
		b.server = srv
		opts = append(opts, nats.InProcessServer(srv))
	} else {
		auth, err := AuthOptions(cfg.NATS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, auth...)
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("cannot connect to NATS at %q (nats.url): %w", url, err)
	}
	b.Conn = nc
	if watch.Connected != nil {
		watch.Connected.Set(1)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, err
	}
	b.JS = js
	return b, nil
}

func startEmbedded(cfg *config.Config) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.NATS.Embedded.Listen)
	if err != nil {
		return nil, fmt.Errorf("nats.embedded.listen %q is not host:port: %w", cfg.NATS.Embedded.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats.embedded.listen %q has a bad port", cfg.NATS.Embedded.Listen)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "trackd",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.Resolve(cfg.NATS.Embedded.StoreDir),
		NoSigs:     true,
		NoLog:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot start the embedded NATS server (nats.embedded): %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("the embedded NATS server did not start listening on %s (nats.embedded.listen); is the port in use?", cfg.NATS.Embedded.Listen)
	}
	return srv, nil
}

// AuthOptions are the client options for the [nats] credentials and TLS settings.
func AuthOptions(c config.NATS) ([]nats.Option, error) {
	var opts []nats.Option
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.User != "" {
		opts = append(opts, nats.UserInfo(c.User, c.Password))
	}
	if c.Token != "" {
		opts = append(opts, nats.Token(c.Token))
	}
	if c.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
		opts = append(opts, nats.ClientCert(c.TLS.CertFile, c.TLS.KeyFile))
	}
	return opts, nil
}

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.Conn != nil {
		_ = b.Conn.Drain()
		for b.Conn.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if b.server != nil {
		b.server.Shutdown()
		b.server.WaitForShutdown()
	}
}

// Topology is what Setup created.
type Topology struct {
	Ingest jetstream.Stream
	Routed jetstream.Stream
	DLQ    jetstream.Stream
	// Dedupe holds the dedupe buckets, one per shard.
	Dedupe []jetstream.KeyValue
}

// Setup creates or updates the streams and the dedupe buckets, each with
// [nats] replicas.
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
	dup := min(RouterAckWait+10*time.Second, cfg.Dedupe.Window.Duration)
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
		MaxAge:   cfg.DLQ.MaxAge.Duration,
		MaxBytes: int64(cfg.DLQ.MaxBytes),
		Discard:  jetstream.DiscardOld,
	})
	if err != nil {
		return nil, streamError(dlq.Stream, "", "dlq.max_bytes", cfg.DLQ.MaxBytes, err)
	}
	for _, name := range cfg.Dedupe.Buckets() {
		kv, err := b.dedupeBucket(ctx, name, cfg)
		if err != nil {
			return nil, fmt.Errorf("cannot create key-value bucket %s (dedupe.bucket): %w", name, err)
		}
		t.Dedupe = append(t.Dedupe, kv)
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

// dedupeBucket creates or updates the stream of a dedupe bucket and binds to
// it. The stream is made here rather than by jetstream's CreateKeyValue, which
// always discards new messages when full: with dedupe.max_keys a full bucket
// must drop its oldest claims instead, never refuse a claim.
func (b *Bus) dedupeBucket(ctx context.Context, name string, cfg *config.Config) (jetstream.KeyValue, error) {
	maxMsgs := cfg.Dedupe.MaxKeys
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	window := cfg.Dedupe.Window.Duration
	_, err := b.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		// What jetstream's KeyValueConfig{History: 1, TTL: window} makes, but
		// for MaxMsgs and Discard.
		Name:              "KV_" + name,
		Description:       "messageIds seen within the dedupe window",
		Subjects:          []string{"$KV." + name + ".>"},
		MaxMsgsPerSubject: 1,
		MaxMsgs:           maxMsgs,
		Discard:           jetstream.DiscardOld,
		MaxBytes:          -1,
		MaxAge:            window,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          cfg.NATS.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		AllowDirect:       true,
		Duplicates:        min(2*time.Minute, window),
	})
	if err != nil {
		return nil, err
	}
	return b.JS.KeyValue(ctx, name)
}

// IsWrongLastSequence reports whether err is JetStream refusing a publish whose
// expected last subject sequence did not match: a key that already exists.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	// 10071 on a single server; 10164 is what replicated streams answer.
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// AckWait is how long a fetched message may go unacked before NATS hands it to
// another worker; long batches report progress to keep it.
const AckWait = 30 * time.Second

// RouterAckWait is the router's AckWait. A router batch is handed on in well
// under a second, so it is short, and so is the routed stream's duplicate
// window, which must outlast it.
const RouterAckWait = 10 * time.Second

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

// Backlog returns, per consumer of the ingest and routed streams, how many
// messages wait: not yet delivered plus delivered and unacked.
// Streams reports the state and byte limit of each stream trackd keeps
// events in; a stream whose info cannot be read now is left out.
func (t *Topology) Streams(ctx context.Context) []*jetstream.StreamInfo {
	var out []*jetstream.StreamInfo
	for _, s := range []jetstream.Stream{t.Ingest, t.Routed, t.DLQ} {
		if info, err := s.Info(ctx); err == nil {
			out = append(out, info)
		}
	}
	return out
}

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
