// Package fleet keeps the running destinations in step with the configuration:
// it starts a deliverer and plugin for each enabled destination, and on a
// reload starts the added ones, restarts the changed ones and drains and
// removes the ones that are gone.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/daemon/internal/route"
)

// Fleet is the set of running destinations.
type Fleet struct {
	bus     *bus.Bus
	topo    *bus.Topology
	metrics *metrics.Metrics
	log     *slog.Logger

	mu      sync.Mutex
	members map[string]*member
	// running is members' deliverers by id, for Deliverer to read without mu,
	// which a reload holds while plugins start.
	running atomic.Pointer[map[string]*deliver.Deliverer]
}

// Deliverer returns the running deliverer of a destination, or nil.
func (f *Fleet) Deliverer(id string) *deliver.Deliverer {
	if m := f.running.Load(); m != nil {
		return (*m)[id]
	}
	return nil
}

// publish makes Deliverer see the members; f.mu is held.
func (f *Fleet) publish() {
	m := make(map[string]*deliver.Deliverer, len(f.members))
	for id, mb := range f.members {
		m[id] = mb.deliverer
	}
	f.running.Store(&m)
}

type member struct {
	dest      config.Destination
	retry     config.Retry
	host      *pluginhost.Host
	deliverer *deliver.Deliverer
	cancel    context.CancelFunc
	done      chan struct{}
}

// New returns an empty fleet.
func New(b *bus.Bus, topo *bus.Topology, m *metrics.Metrics, log *slog.Logger) *Fleet {
	return &Fleet{bus: b, topo: topo, metrics: m, log: log, members: map[string]*member{}}
}

// Start runs every destination enabled in cfg. A plugin that cannot start
// holds up only its own destination, which keeps trying; setRoutes is called
// once every consumer exists.
func (f *Fleet) Start(ctx context.Context, cfg *config.Config, setRoutes func(*route.Table)) error {
	if err := f.apply(ctx, cfg, setRoutes, false, 0); err != nil {
		return err
	}
	f.warnLeftOver(ctx)
	return nil
}

// warnLeftOver logs each destination consumer on the routed stream whose
// destination this daemon does not run: one removed from the file while no
// daemon ran (a reload deletes it), whose events wait there for nothing. It
// is only reported, since another daemon on the same NATS, with another
// file, may still deliver from it.
func (f *Fleet) warnLeftOver(ctx context.Context) {
	for ci := range f.topo.Routed.ListConsumers(ctx).Info() {
		if id, ok := bus.DestinationOf(ci.Name); ok && f.Deliverer(id) == nil {
			f.log.Warn("a destination's consumer is left on "+bus.RoutedStream+" with no such destination enabled here; "+
				"its events wait there until the destination is back or the consumer is deleted (nats consumer rm "+bus.RoutedStream+" "+ci.Name+")",
				"destination", id, "waiting", ci.NumPending+uint64(ci.NumAckPending))
		}
	}
}

// Reload makes the running destinations those enabled in cfg: added ones
// start, changed ones restart their plugin, removed ones deliver what they
// have queued (for up to drainTimeout) and lose their consumer. Every new
// plugin is started and configured first; if one fails, nothing changes and
// the error says why. setRoutes is called once the new destinations'
// consumers exist and before the removed ones stop, so no event is routed to
// a consumer that is not there.
func (f *Fleet) Reload(ctx context.Context, cfg *config.Config, setRoutes func(*route.Table), drainTimeout time.Duration) error {
	return f.apply(ctx, cfg, setRoutes, true, drainTimeout)
}

func (f *Fleet) apply(ctx context.Context, cfg *config.Config, setRoutes func(*route.Table), strict bool, drainTimeout time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := map[string]*config.Destination{}
	enabled := cfg.Enabled()
	for _, d := range enabled {
		want[d.ID] = d
	}
	// Prepare every added or changed destination before touching a running one.
	var (
		next []*member
		errs []error
	)
	for _, id := range slices.Sorted(maps.Keys(want)) {
		d, retry := want[id], cfg.RetryFor(want[id])
		if old := f.members[id]; old != nil && samePlugin(old, d, retry) {
			continue
		}
		m, err := f.prepare(ctx, cfg, d, retry, strict)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		next = append(next, m)
	}
	if len(errs) > 0 {
		for _, m := range next {
			m.host.Close()
		}
		return errors.Join(errs...)
	}
	for _, m := range next {
		if old := f.members[m.dest.ID]; old != nil {
			f.log.Info("destination changed: restarting its plugin; queued events wait in its consumer", "destination", m.dest.ID)
			old.stop()
		}
		f.members[m.dest.ID] = m
		m.run(ctx, f)
	}
	f.publish()
	routes := make([]route.Destination, len(enabled))
	for i, d := range enabled {
		routes[i] = route.Destination{
			ID: d.ID, Name: d.Name, Aliases: d.Aliases, Events: d.Events, ExcludeEvents: d.ExcludeEvents,
			Takes: f.members[d.ID].host.Takes,
		}
	}
	setRoutes(route.NewTable(routes))
	for _, id := range slices.Sorted(maps.Keys(f.members)) {
		if _, ok := want[id]; ok {
			continue
		}
		m := f.members[id]
		delete(f.members, id)
		f.publish()
		f.remove(id, m, drainTimeout)
	}
	return nil
}

// prepare creates a destination's consumer and plugin host; when
// startPlugin is set the plugin must also start and accept its settings.
func (f *Fleet) prepare(ctx context.Context, cfg *config.Config, d *config.Destination, retry config.Retry, startPlugin bool) (*member, error) {
	cons, err := f.topo.Destination(ctx, d.ID, max(1000, 4*d.BatchSize))
	if err != nil {
		return nil, err
	}
	host := pluginhost.New(pluginhost.Spec{ID: d.ID, Path: d.PluginPath, Dir: cfg.Dir(), Settings: d.Settings, Types: d.Types, SHA256: d.PluginSHA256},
		f.log, f.metrics.PluginRestarts.WithLabelValues(d.ID))
	if startPlugin {
		sctx, cancel := context.WithTimeout(ctx, pluginhost.StartTimeout)
		defer cancel()
		if err := host.Start(sctx); err != nil {
			host.Close()
			return nil, err
		}
	}
	dl := deliver.New(d.ID, f.bus.JS, cons, host,
		deliver.WithRetry(retry), deliver.WithBatchSize(d.BatchSize), deliver.WithMaxInFlight(d.MaxInFlight),
		deliver.WithDirectTimeout(d.DirectTimeout), deliver.WithMetrics(f.metrics), deliver.WithLogger(f.log))
	return &member{dest: *d, retry: retry, host: host, deliverer: dl, done: make(chan struct{})}, nil
}

// run starts the member's deliverer; ctx bounds its life.
func (m *member) run(ctx context.Context, f *Fleet) {
	mctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	go func() {
		defer close(m.done)
		if err := m.deliverer.Run(mctx); err != nil {
			f.log.Error("destination stopped", "destination", m.dest.ID, "err", err)
		}
	}()
}

// remove lets a destination that is no longer routed to deliver what it has
// queued, for up to timeout, then stops it and deletes its consumer.
func (f *Fleet) remove(id string, m *member, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cons := bus.ConsumerName(id)
	for {
		info, err := f.topo.Routed.Consumer(ctx, cons)
		if err != nil {
			break
		}
		ci, err := info.Info(ctx)
		if err != nil || ci.NumPending+uint64(ci.NumAckPending) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			f.log.Warn("destination removed before its queue drained; its remaining events are dropped",
				"destination", id, "pending", ci.NumPending+uint64(ci.NumAckPending))
		case <-time.After(100 * time.Millisecond):
			continue
		}
		break
	}
	m.stop()
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := f.topo.Routed.DeleteConsumer(dctx, cons); err != nil {
		f.log.Error("cannot delete the consumer of a removed destination", "destination", id, "consumer", cons, "err", err)
		return
	}
	f.log.Info("destination removed", "destination", id)
}

// stop ends the deliverer (it finishes the batch in hand) and the plugin.
func (m *member) stop() {
	m.cancel()
	<-m.done
	m.host.Close()
}

// Wait stops every destination, each finishing its batch in hand, and gives
// up after timeout: unacked events are redelivered later, so nothing is lost.
func (f *Fleet) Wait(timeout time.Duration) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	done := make(chan struct{})
	go func() {
		for _, m := range f.members {
			m.stop()
		}
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Ready reports the first destination whose plugin is not running.
func (f *Fleet) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range slices.Sorted(maps.Keys(f.members)) {
		if !f.members[id].host.Ready() {
			return fmt.Errorf("the plugin of destination %s is not running", id)
		}
	}
	return nil
}

// samePlugin reports whether a running member already runs d as configured.
// Routing fields (name, aliases, events) change the table, not the plugin;
// types are checked against what the plugin takes, so they restart it.
func samePlugin(m *member, d *config.Destination, retry config.Retry) bool {
	return m.dest.PluginPath == d.PluginPath && m.dest.BatchSize == d.BatchSize &&
		m.retry == retry && reflect.DeepEqual(m.dest.Settings, d.Settings) && slices.Equal(m.dest.Types, d.Types) &&
		m.dest.SHA256 == d.SHA256
}
