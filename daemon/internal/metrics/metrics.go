// Package metrics holds the daemon's Prometheus counters and histograms.
package metrics

import (
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"trackd.dev/trackd/sdk"
)

// Metrics is every instrument the daemon updates, registered on Registry.
type Metrics struct {
	Registry *prometheus.Registry

	Received     *prometheus.CounterVec
	Invalid      *prometheus.CounterVec
	Deduplicated prometheus.Counter
	Unrouted     prometheus.Counter

	Routed         *prometheus.CounterVec
	Queued         *prometheus.CounterVec
	Delivered      *prometheus.CounterVec
	Retried        *prometheus.CounterVec
	DeadLettered   *prometheus.CounterVec
	PluginRestarts *prometheus.CounterVec
	BatchSeconds   *prometheus.HistogramVec
	DelaySeconds   *prometheus.HistogramVec

	DedupeKeys    *prometheus.GaugeVec
	DedupeWindow  *prometheus.GaugeVec
	DedupeEvicted *prometheus.CounterVec

	NATSConnected  prometheus.Gauge
	NATSReconnects prometheus.Counter

	HTTPRequests          *prometheus.CounterVec
	HTTPCalls             *prometheus.CounterVec
	HTTPCallsDeadLettered *prometheus.CounterVec
}

// New creates and registers the instruments on a fresh registry.
func New() *Metrics {
	perDest := []string{"destination"}
	perDestType := []string{"destination", "type"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_received_total", Help: "Events read from the ingest stream, by call type (empty for an invalid event).",
		}, []string{"type"}),
		Invalid: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_invalid_total", Help: "Events that failed validation and went to the dead-letter stream, by the field at fault.",
		}, []string{"field"}),
		Deduplicated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackd_events_deduplicated_total", Help: "Events dropped as repeats of a messageId seen within the dedupe window.",
		}),
		Unrouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackd_events_unrouted_total", Help: "Valid events that no destination wanted.",
		}),
		Routed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_routed_total", Help: "Events routed to a destination, by call type.",
		}, perDestType),
		Queued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_queued_total", Help: "Routed events that went to the destination's consumer on the routed stream, not the direct path.",
		}, perDest),
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_delivered_total", Help: "Events a destination accepted, by call type.",
		}, perDestType),
		Retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_retried_total", Help: "Deliveries a destination asked to retry.",
		}, perDest),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_events_dead_lettered_total", Help: "Events a destination dropped or finally failed, by call type.",
		}, perDestType),
		PluginRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_plugin_restarts_total", Help: "Times a destination's plugin process was started again after failing.",
		}, perDest),
		BatchSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "trackd_batch_duration_seconds", Help: "Time a plugin took to deliver one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 9),
		}, perDest),
		DelaySeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "trackd_delivery_delay_seconds", Help: "Time from an event's receivedAt to its destination accepting it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 4, 10),
		}, perDest),
		DedupeKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trackd_dedupe_keys", Help: "MessageIds a dedupe bucket holds: each costs the NATS server memory per replica.",
		}, []string{"bucket"}),
		DedupeWindow: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "trackd_dedupe_window_seconds", Help: "Age of a dedupe bucket's oldest claim: the window repeats are caught in, shorter than dedupe.window once the bucket is full.",
		}, []string{"bucket"}),
		DedupeEvicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_dedupe_evicted_total", Help: "Claims a full dedupe bucket dropped before their window ended (dedupe.max_keys), estimated; every daemon counts the whole bucket, so take the max across daemons, not the sum.",
		}, []string{"bucket"}),
		NATSConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "trackd_nats_connected", Help: "1 while the daemon is connected to NATS, 0 while it reconnects.",
		}),
		NATSReconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "trackd_nats_reconnects_total", Help: "Times the daemon reconnected to NATS after losing its connection.",
		}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_http_requests_total", Help: "Requests to the tracking API, by the source of their write key and the status answered.",
		}, []string{"source", "code"}),
		HTTPCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_http_calls_total", Help: "Calls in requests to the tracking API, by source and the status their request was answered.",
		}, []string{"source", "code"}),
		HTTPCallsDeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "trackd_http_calls_dead_lettered_total", Help: "Calls over 32 KB in an accepted batch, sent to the dead-letter stream.",
		}, []string{"source"}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Received, m.Invalid, m.Deduplicated, m.Unrouted,
		m.Routed, m.Queued, m.Delivered, m.Retried, m.DeadLettered, m.PluginRestarts, m.BatchSeconds, m.DelaySeconds,
		m.DedupeKeys, m.DedupeWindow, m.DedupeEvicted,
		m.NATSConnected, m.NATSReconnects,
		m.HTTPRequests, m.HTTPCalls, m.HTTPCallsDeadLettered,
	)
	return m
}

// callTypes are the values of the type label, in the order of ByType's counts.
var callTypes = append(sdk.AllTypes(), "")

// ByType counts events by call type, so that a batch adds to each labelled
// counter once rather than looking one up per event.
type ByType [7]float64

// Add counts one event of type callType; what is not a call type ("" for an
// event that could not be read) is counted under "".
func (c *ByType) Add(callType string) {
	i := slices.Index(callTypes[:len(callTypes)-1], callType)
	if i < 0 {
		i = len(callTypes) - 1
	}
	c[i]++
}

// AddTo adds the counts to v's counters, labelled with labels and the type.
func (c *ByType) AddTo(v *prometheus.CounterVec, labels ...string) {
	for i, n := range c {
		if n > 0 {
			v.WithLabelValues(append(labels, callTypes[i])...).Add(n)
		}
	}
}

// Backlog reports, at each scrape, how many messages wait in each consumer
// (pending plus delivered but not yet acked), as trackd_consumer_backlog,
// from what read returns; each read is bounded by ctx and scrapeTimeout.
func Backlog(ctx context.Context, read func(context.Context) map[string]float64) prometheus.Collector {
	return backlog{ctx, read}
}

type backlog struct {
	ctx  context.Context
	read func(context.Context) map[string]float64
}

// scrapeTimeout bounds what Backlog and Streams ask NATS at a scrape.
const scrapeTimeout = 5 * time.Second

func scrape[T any](ctx context.Context, read func(context.Context) T) T {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	return read(ctx)
}

var backlogDesc = prometheus.NewDesc("trackd_consumer_backlog",
	"Messages waiting in a consumer: not yet delivered plus delivered and unacked.", []string{"consumer"}, nil)

// Describe implements prometheus.Collector.
func (b backlog) Describe(ch chan<- *prometheus.Desc) { ch <- backlogDesc }

// Collect implements prometheus.Collector.
func (b backlog) Collect(ch chan<- prometheus.Metric) {
	for name, v := range scrape(b.ctx, b.read) {
		ch <- prometheus.MustNewConstMetric(backlogDesc, prometheus.GaugeValue, v, name)
	}
}

// StreamState is what /metrics shows of a stream.
type StreamState struct {
	Name     string
	Bytes    uint64
	Messages uint64
	MaxBytes int64 // -1: no limit
}

// Streams reports, at each scrape, each stream's size against its limit, as
// trackd_stream_bytes, trackd_stream_messages and trackd_stream_max_bytes,
// from what read returns; each read is bounded by ctx and scrapeTimeout.
func Streams(ctx context.Context, read func(context.Context) []StreamState) prometheus.Collector {
	return streams{ctx, read}
}

type streams struct {
	ctx  context.Context
	read func(context.Context) []StreamState
}

var (
	streamBytesDesc = prometheus.NewDesc("trackd_stream_bytes",
		"Bytes a stream holds.", []string{"stream"}, nil)
	streamMessagesDesc = prometheus.NewDesc("trackd_stream_messages",
		"Messages a stream holds.", []string{"stream"}, nil)
	streamMaxBytesDesc = prometheus.NewDesc("trackd_stream_max_bytes",
		"A stream's byte limit (ingest.max_bytes, dlq.max_bytes); -1 for none.", []string{"stream"}, nil)
)

// Describe implements prometheus.Collector.
func (s streams) Describe(ch chan<- *prometheus.Desc) {
	ch <- streamBytesDesc
	ch <- streamMessagesDesc
	ch <- streamMaxBytesDesc
}

// Collect implements prometheus.Collector.
func (s streams) Collect(ch chan<- prometheus.Metric) {
	for _, st := range scrape(s.ctx, s.read) {
		ch <- prometheus.MustNewConstMetric(streamBytesDesc, prometheus.GaugeValue, float64(st.Bytes), st.Name)
		ch <- prometheus.MustNewConstMetric(streamMessagesDesc, prometheus.GaugeValue, float64(st.Messages), st.Name)
		ch <- prometheus.MustNewConstMetric(streamMaxBytesDesc, prometheus.GaugeValue, float64(st.MaxBytes), st.Name)
	}
}
