package dedupe

import (
	"context"
	"log/slog"
	"time"

	"trackd.dev/trackd/daemon/internal/metrics"
)

// Watch reports the state of the buckets every interval until ctx is done:
// the keys each holds and its effective window (the age of its oldest claim)
// as gauges. With dedupe.max_keys set, a bucket that is full drops its oldest claim
// for every new one: Watch logs that once per episode and counts the claims
// dropped (estimated from the claims made since its last look and the room
// the bucket had then). Every daemon watches every bucket, so each reports
// the same numbers.
func (c *Claimer) Watch(ctx context.Context, interval time.Duration, m *metrics.Metrics, log *slog.Logger) {
	maxKeys := c.maxKeys
	type state struct {
		seen          bool
		full          bool
		lastSeq, msgs uint64
	}
	states := make([]state, len(c.buckets))
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		for i, b := range c.buckets {
			name := b.kv.Bucket()
			sctx, cancel := context.WithTimeout(ctx, interval)
			s, err := c.js.Stream(sctx, streamName(name))
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					log.Debug("dedupe bucket state unknown", "bucket", name, "err", err)
				}
				continue
			}
			st := s.CachedInfo().State
			m.DedupeKeys.WithLabelValues(name).Set(float64(st.Msgs))
			window := 0.0
			if st.Msgs > 0 {
				window = time.Since(st.FirstTime).Seconds()
			}
			m.DedupeWindow.WithLabelValues(name).Set(window)

			full := maxKeys > 0 && st.Msgs >= uint64(maxKeys)
			prev := &states[i]
			if st.LastSeq < prev.lastSeq {
				// The bucket's stream was made anew since the last look.
				*prev = state{}
			}
			if full && prev.seen {
				// Each claim made since the last look pushed one out, once the
				// room the bucket had then was used up.
				added, room := st.LastSeq-prev.lastSeq, uint64(0)
				if prev.msgs < uint64(maxKeys) {
					room = uint64(maxKeys) - prev.msgs
				}
				if added > room {
					m.DedupeEvicted.WithLabelValues(name).Add(float64(added - room))
				}
			}
			switch {
			case full && !prev.full:
				log.Warn("dedupe bucket is full (dedupe.max_keys): each new messageId drops the oldest, so repeats are caught only within the effective window",
					"bucket", name, "max_keys", maxKeys, "effective_window", time.Duration(window*float64(time.Second)).Round(time.Second).String())
			case !full && prev.full:
				log.Info("dedupe bucket has room again", "bucket", name, "keys", st.Msgs, "max_keys", maxKeys)
			}
			*prev = state{seen: true, full: full, lastSeq: st.LastSeq, msgs: st.Msgs}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
