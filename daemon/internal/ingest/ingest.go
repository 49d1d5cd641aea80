// Package ingest is the router stage: it reads producers' events from the
// ingest stream, validates and normalizes them, drops repeats, decides their
// destinations and hands each one on to the routed stream before acking it.
package ingest

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/route"
	"trackd.dev/trackd/daemon/internal/tap"
)

// How long one batch may take to hand on before its messages are nak'ed;
// it also bounds how long a stopping daemon waits for the batch in hand.
const batchTimeout = 30 * time.Second

// Router runs the ingest stage.
type Router struct {
	JS        jetstream.JetStream
	Consumer  jetstream.Consumer
	Claimer   *dedupe.Claimer
	Normalize normalize.Options
	Metrics   *metrics.Metrics
	Log       *slog.Logger
	BatchSize int
	// Tap, when not nil, hears about each decision while a `trackd tap` listens.
	Tap *tap.Publisher

	routes atomic.Pointer[route.Table]
}

// SetRoutes replaces the routing table; events in flight keep the old one.
func (r *Router) SetRoutes(t *route.Table) { r.routes.Store(t) }

// Run routes events until ctx is done.
func (r *Router) Run(ctx context.Context) error {
	return bus.ConsumeBatches(ctx, r.Consumer, r.BatchSize, func(msgs []jetstream.Msg) {
		// A batch in hand is finished even when the daemon is stopping.
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), batchTimeout)
		defer cancel()
		r.handle(bctx, msgs)
	})
}

type item struct {
	msg   jetstream.Msg
	seq   uint64
	at    time.Time // when JetStream stored the ingest message
	event normalize.Event
	dests []string
	fut   jetstream.PubAckFuture
}

func (r *Router) handle(ctx context.Context, msgs []jetstream.Msg) {
	items := make([]item, 0, len(msgs))
	var pending []item // items whose ack waits on a publish
	for _, m := range msgs {
		r.Metrics.Received.Inc()
		md, err := m.Metadata()
		if err != nil {
			r.Log.Error("ingest message without JetStream metadata", "err", err)
			_ = m.Term()
			continue
		}
		ev, err := normalize.Normalize(m.Data(), md.Timestamp, r.Normalize)
		if err != nil {
			field := "body"
			if ne, ok := err.(*normalize.Error); ok && ne.Field != "" {
				field = ne.Field
			}
			fut, perr := dlq.PublishAsync(r.JS, dlq.Letter{
				Body: m.Data(), Stage: dlq.StageValidate, Attempts: int(md.NumDelivered), Reason: err.Error(),
			})
			if perr != nil {
				r.Log.Error("cannot publish an invalid event to the dead-letter stream", "err", perr)
				_ = m.NakWithDelay(time.Second)
				continue
			}
			r.Metrics.Invalid.WithLabelValues(field).Inc()
			r.tapInvalid(md.Timestamp, err)
			pending = append(pending, item{msg: m, fut: fut})
			continue
		}
		items = append(items, item{msg: m, seq: md.Sequence.Stream, at: md.Timestamp, event: ev})
	}

	claims := make([]dedupe.Claim, len(items))
	for i, it := range items {
		claims[i] = dedupe.Claim{MessageID: it.event.MessageID, Seq: it.seq}
	}
	first, err := r.Claimer.ClaimAll(ctx, claims)
	if err != nil {
		r.Log.Error("dedupe failed; the batch will be retried", "err", err)
		for _, it := range items {
			_ = it.msg.NakWithDelay(time.Second)
		}
		items = nil
	}

	if len(items) > 0 {
		crashAfterClaim()
	}
	routes := r.routes.Load()
	for i := range items {
		it := &items[i]
		if !first[i] {
			r.tapEvent(it.at, &it.event, tap.Duplicate, routes)
			r.Metrics.Deduplicated.Inc()
			_ = it.msg.Ack()
			continue
		}
		it.dests = routes.Route(nil, it.event.Name, it.event.Integrations)
		if len(it.dests) == 0 {
			r.tapEvent(it.at, &it.event, tap.Unrouted, routes)
			r.Metrics.Unrouted.Inc()
			_ = it.msg.Ack()
			continue
		}
		fut, err := r.JS.PublishMsgAsync(routedMsg(it))
		if err != nil {
			r.Log.Error("cannot publish to the routed stream", "err", err)
			_ = it.msg.NakWithDelay(time.Second)
			continue
		}
		it.fut = fut
		pending = append(pending, *it)
		r.tapEvent(it.at, &it.event, tap.Routed, routes)
	}

	for _, it := range pending {
		select {
		case <-it.fut.Ok():
			_ = it.msg.Ack()
			for _, d := range it.dests {
				r.Metrics.Routed.WithLabelValues(d).Inc()
			}
		case err := <-it.fut.Err():
			r.Log.Error("hand-off failed; the event will be retried", "messageId", it.event.MessageID, "err", err)
			_ = it.msg.NakWithDelay(time.Second)
		case <-ctx.Done():
			_ = it.msg.Nak()
		}
	}
}

func routedMsg(it *item) *nats.Msg {
	m := nats.NewMsg(bus.RoutedSubject)
	m.Data = it.event.JSON
	m.Header.Set(bus.HeaderDestinations, strings.Join(it.dests, ","))
	// Keyed by the ingest message, not the messageId: a redelivered router step
	// is absorbed even when it assigned a fresh messageId, while the same
	// messageId accepted again after the dedupe window is not. The store time
	// tells apart the messages of a stream that was deleted and made again.
	m.Header.Set(jetstream.MsgIDHeader, strconv.FormatUint(it.seq, 10)+"@"+strconv.FormatInt(it.at.UnixNano(), 10))
	return m
}
