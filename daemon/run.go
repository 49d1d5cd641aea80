package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"trackd.dev/trackd/daemon/internal/admin"
	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/ingest"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/daemon/internal/route"
)

// The router takes events in batches of this many; the dedupe claims and
// hand-offs of a batch are pipelined.
const routerBatch = 512

var runCmd = command{
	name:    "run",
	summary: "run the daemon until SIGINT or SIGTERM",
	run:     runCommand,
}

func runCommand(args []string, _, stderr io.Writer) error {
	fs := newFlagSet("run", "[--config FILE]",
		"Runs the daemon until SIGINT or SIGTERM, then finishes the batches in hand and exits.",
		"trackd run --config config.toml", stderr)
	configPath := fs.String("config", "config.toml", "the configuration `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log.Level, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return run(ctx, cfg, log)
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	m := metrics.New()
	b, err := bus.Open(cfg)
	if err != nil {
		return err
	}
	defer b.Close()
	topo, err := b.Setup(ctx, cfg)
	if err != nil {
		return err
	}

	var (
		wg     sync.WaitGroup
		hosts  []*pluginhost.Host
		routes []route.Destination
	)
	defer func() {
		for _, h := range hosts {
			h.Close()
		}
	}()
	// Destination consumers exist before the router publishes: the routed
	// stream keeps a message only for consumers that exist when it arrives.
	for _, d := range cfg.Enabled() {
		cons, err := topo.Destination(ctx, d.ID, max(1000, 4*d.BatchSize))
		if err != nil {
			return err
		}
		host, err := pluginhost.New(d.ID, d.PluginPath, cfg.Dir(), d.Settings, log, m.PluginRestarts.WithLabelValues(d.ID))
		if err != nil {
			return err
		}
		hosts = append(hosts, host)
		dl := &deliver.Deliverer{
			ID: d.ID, JS: b.JS, Consumer: cons, Host: host, Retry: cfg.RetryFor(d),
			BatchSize: d.BatchSize, Metrics: m, Log: log,
		}
		wg.Go(func() {
			if err := dl.Run(ctx); err != nil {
				log.Error("destination stopped", "destination", d.ID, "err", err)
			}
		})
		routes = append(routes, route.Destination{
			ID: d.ID, Name: d.Name, Aliases: d.Aliases, Events: d.Events, ExcludeEvents: d.ExcludeEvents,
		})
	}

	routerCons, err := topo.Router(ctx, 4*routerBatch)
	if err != nil {
		return err
	}
	router := &ingest.Router{
		JS: b.JS, Consumer: routerCons, Claimer: dedupe.New(b.JS, topo.Dedupe),
		Normalize: normalize.Options{MaxEventBytes: cfg.Ingest.MaxEventBytes},
		Metrics:   m, Log: log, BatchSize: routerBatch,
	}
	router.SetRoutes(route.NewTable(routes))
	wg.Go(func() {
		if err := router.Run(ctx); err != nil {
			log.Error("router stopped", "err", err)
		}
	})

	if cfg.Admin.Listen != "" {
		srv, err := admin.Start(cfg.Admin.Listen, m.Registry, func() error { return readiness(b, hosts) })
		if err != nil {
			return err
		}
		defer func() { _ = srv.Close(context.Background()) }()
		log.Info("admin listening", "addr", srv.Addr())
	}
	log.Info("trackd running", "nats", natsWhere(cfg), "stream", cfg.Ingest.Stream,
		"subjects", cfg.Ingest.Subjects, "destinations", len(hosts))

	<-ctx.Done()
	log.Info("stopping: finishing the batches in hand", "timeout", cfg.Shutdown.Timeout.String())
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		log.Info("stopped")
	case <-time.After(cfg.Shutdown.Timeout.Duration):
		// Unacked messages are redelivered after the ack wait: nothing is lost.
		log.Warn("shutdown.timeout passed with batches still in hand; they will be redelivered")
	}
	return nil
}

func readiness(b *bus.Bus, hosts []*pluginhost.Host) error {
	if !b.Conn.IsConnected() {
		return errors.New("not connected to NATS")
	}
	for _, h := range hosts {
		if !h.Ready() {
			return errors.New("a destination's plugin is not running")
		}
	}
	return nil
}

func natsWhere(cfg *config.Config) string {
	if cfg.NATS.URL != "" {
		return cfg.NATS.URL
	}
	return "embedded on " + cfg.NATS.Embedded.Listen
}

// newLogger logs text to a terminal and JSON to anything else.
func newLogger(level string, w io.Writer) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
