package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"trackd.dev/trackd/daemon/internal/admin"
	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/fleet"
	"trackd.dev/trackd/daemon/internal/metrics"
	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/router"
	"trackd.dev/trackd/daemon/internal/tap"
	"trackd.dev/trackd/daemon/internal/trackapi"
)

// How often the dedupe buckets' keys and effective window are read for /metrics.
const dedupeWatchEvery = 5 * time.Second

var runCmd = command{
	name:    "run",
	summary: "run the daemon until SIGINT or SIGTERM",
	run:     runCommand,
}

func runCommand(args []string, _, stderr io.Writer) error {
	fs := newFlagSet("run", "[--config FILE] [--watch]",
		"Runs the daemon until SIGINT or SIGTERM, then finishes the batches in hand and exits.\n"+
			"SIGHUP (or, with --watch, saving the file) reloads the configuration: added\n"+
			"destinations start, removed ones drain and stop, changed ones restart their plugin.\n"+
			"A configuration that does not validate is refused and the running one kept.",
		"trackd run --config config.toml --watch", stderr)
	configPath := fs.String("config", "config.toml", "the configuration `file`")
	watch := fs.Bool("watch", false, "reload the configuration when the file changes (once it has stayed unchanged for a second), as on SIGHUP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := newLogger(level, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	defer signal.Stop(reload)
	if *watch {
		go watchFile(ctx, cfg.Path, reload)
	}
	return run(ctx, cfg, log, level, reload)
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger, level *slog.LevelVar, reload <-chan os.Signal) error {
	m := metrics.New()
	b, err := bus.Open(cfg, bus.Watch{Log: log, Connected: m.NATSConnected, Reconnects: m.NATSReconnects})
	if err != nil {
		return err
	}
	defer b.Close()
	topo, err := b.Setup(ctx, cfg)
	if err != nil {
		return err
	}

	m.Registry.MustRegister(metrics.Backlog(ctx, topo.Backlog), metrics.Streams(ctx, topo.Streams))
	claimer, err := dedupe.Open(ctx, b.JS, cfg.Dedupe, cfg.NATS.Replicas)
	if err != nil {
		return err
	}
	go claimer.Watch(ctx, dedupeWatchEvery, m, log)
	routerCons, err := topo.Router(ctx, router.MaxAckPending)
	if err != nil {
		return err
	}
	taps, err := tap.NewPublisher(b.Conn)
	if err != nil {
		return err
	}
	defer taps.Close()
	dests := fleet.New(b, topo, m, log)
	// serving is true from when everything below runs until the stop begins;
	// /readyz answers 503 outside it.
	var serving atomic.Bool
	rt := router.New(b.JS, routerCons, claimer,
		deliver.NewHandOff(b.JS, dests.Deliverer, m, log),
		router.WithMetrics(m), router.WithLogger(log), router.WithTap(taps),
		router.WithNormalize(normalize.Options{MaxEventBytes: cfg.Ingest.MaxEventBytes}))
	if cfg.Admin.Listen != "" {
		srv, err := admin.Start(cfg.Admin, m.Registry, func() error { return readiness(&serving, b, dests) })
		if err != nil {
			return err
		}
		defer func() { _ = srv.Close(context.Background()) }()
		log.Info("admin listening", "addr", srv.Addr())
	}
	var api *trackapi.API
	if cfg.HTTP.Listen != "" {
		api, err = trackapi.New(b.Conn, trackapi.NewSources(cfg.HTTP.SubjectPrefix, cfg.HTTP.WriteKeys, cfg.HTTP.PublicURL), m, log)
		if err != nil {
			return err
		}
	}
	// Destination consumers exist before the router publishes: the routed
	// stream keeps a message only for consumers that exist when it arrives.
	if err := dests.Start(ctx, cfg, rt.SetRoutes); err != nil {
		return err
	}
	var front *trackapi.Listener
	if api != nil {
		if front, err = trackapi.Listen(cfg.HTTP.Listen, api, tlsFiles(cfg.HTTP.TLS)); err != nil {
			return err
		}
		log.Info("tracking API listening", "addr", front.Addr(), "sources", len(cfg.HTTP.WriteKeys))
	}
	routerDone := make(chan struct{})
	go func() {
		defer close(routerDone)
		if err := rt.Run(ctx); err != nil {
			log.Error("router stopped", "err", err)
		}
	}()

	serving.Store(true)
	log.Info("trackd running", "nats", natsWhere(cfg), "stream", cfg.Ingest.Stream,
		"subjects", cfg.Ingest.Subjects, "destinations", len(cfg.Enabled()))

	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-reload:
			cfg = reloadConfig(ctx, cfg, dests, rt, api, front, level, log)
		}
	}

	serving.Store(false)
	timeout := cfg.Shutdown.Timeout
	log.Info("stopping: finishing the batches in hand", "timeout", timeout.String())
	deadline := time.After(timeout)
	if front != nil {
		// Requests in flight are answered once JetStream has their calls; the
		// connection stays open until run returns.
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		if err := front.Shutdown(sctx); err != nil {
			log.Warn("tracking API requests still in flight at shutdown.timeout", "err", err)
		}
		cancel()
	}
	select {
	case <-routerDone:
	case <-deadline:
	}
	if !dests.Wait(timeout) {
		// Unacked messages are redelivered after the ack wait: nothing is lost.
		log.Warn("shutdown.timeout passed with batches still in hand; they will be redelivered")
		return nil
	}
	log.Info("stopped")
	return nil
}

// reloadConfig applies the file's configuration, or keeps cur when it does not validate.
func reloadConfig(ctx context.Context, cur *config.Config, dests *fleet.Fleet, rt *router.Router, api *trackapi.API, front *trackapi.Listener, level *slog.LevelVar, log *slog.Logger) *config.Config {
	next, err := config.Load(cur.Path)
	if err != nil {
		log.Error("configuration reload refused; the running configuration stays", "err", err)
		return cur
	}
	for _, s := range config.RestartOnly(cur, next) {
		log.Warn("this change takes effect at the next restart, not on reload", "section", s)
	}
	if err := dests.Reload(ctx, next, rt.SetRoutes, next.Shutdown.Timeout); err != nil {
		log.Error("configuration reload refused; the running configuration stays", "err", err)
		return cur
	}
	if api != nil && next.HTTP.Listen != "" {
		api.SetSources(trackapi.NewSources(next.HTTP.SubjectPrefix, next.HTTP.WriteKeys, next.HTTP.PublicURL))
	}
	if certs := tlsFiles(next.HTTP.TLS); front != nil && certs != nil && tlsFiles(cur.HTTP.TLS) != nil {
		if err := front.ReloadTLS(*certs); err != nil {
			log.Error("the tracking API keeps its certificate; the new files do not load", "err", err)
		} else {
			log.Info("the tracking API's certificate was read again", "cert_file", certs.CertFile)
		}
	}
	_ = level.UnmarshalText([]byte(next.Log.Level))
	log.Info("configuration reloaded", "destinations", len(next.Enabled()))
	return next
}

// watchFile sends on reload once the file has changed and then stayed as it
// is for a second, so that an editor's save is read whole rather than while it
// is written.
func watchFile(ctx context.Context, path string, reload chan<- os.Signal) {
	applied := stamp(path)
	seen := applied
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			now := stamp(path)
			if now == seen && now != applied {
				applied = now
				select {
				case reload <- syscall.SIGHUP:
				default:
				}
			}
			seen = now
		}
	}
}

// fileStamp is what watchFile compares: a file's modification time and size.
type fileStamp struct {
	mod, size int64
}

func stamp(path string) fileStamp {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{st.ModTime().UnixNano(), st.Size()}
}

// tlsFiles is what [http.tls] says: nil for plain http.
func tlsFiles(t config.HTTPTLS) *trackapi.TLS {
	if t.CertFile == "" {
		return nil
	}
	return &trackapi.TLS{CertFile: t.CertFile, KeyFile: t.KeyFile}
}

func readiness(serving *atomic.Bool, b *bus.Bus, dests *fleet.Fleet) error {
	if !serving.Load() {
		return errors.New("starting or stopping")
	}
	if !b.Conn.IsConnected() {
		return errors.New("not connected to NATS")
	}
	return dests.Ready()
}

func natsWhere(cfg *config.Config) string {
	if cfg.NATS.URL != "" {
		return cfg.NATS.URL
	}
	return "embedded on " + cfg.NATS.Embedded.Listen
}

// newLogger logs text to a terminal and JSON to anything else.
func newLogger(level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(slog.NewTextHandler(w, opts))
		}
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
