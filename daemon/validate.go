package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"

	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/dedupe"
	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/daemon/internal/pluginhost"
)

var validateCmd = command{
	name:    "validate",
	summary: "check a configuration and every enabled plugin's settings",
	run:     validateCommand,
}

// errInvalid makes validate exit non-zero after it has printed its report.
var errInvalid = errors.New("the configuration is not valid")

func validateCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", "[--config FILE] [--expected-rate N]",
		"Parses the configuration, starts every enabled plugin, hands it its settings, and prints\n"+
			"one line per destination (and one for the tracking API when [http] turns it on).\n"+
			"With --expected-rate, also what the dedupe window will hold at that rate, and a warning\n"+
			"when a bucket would pass a million messageIds. Exits 0 only if all are ok. Sends no\n"+
			"NATS traffic.",
		"trackd validate --config config.toml --expected-rate 2000", stderr)
	configPath := fs.String("config", "config.toml", "the configuration `file`")
	rate := fs.Float64("expected-rate", 0, "events per `second` you expect: warns when the dedupe window would hold over a million messageIds in a bucket")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate < 0 || math.IsNaN(*rate) || math.IsInf(*rate, 0) {
		return fmt.Errorf("--expected-rate %v is not a number of events per second", *rate)
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return err
	}
	name := filepath.Base(cfg.Path)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ok := true
	for _, d := range cfg.Enabled() {
		if err := checkPlugin(cfg, d, log); err != nil {
			ok = false
			fmt.Fprintf(stdout, "%s: %s: %v\n", d.ID, name, err)
			continue
		}
		pinned := "pin it with sha256"
		if d.SHA256 != "" {
			pinned = "pinned"
		}
		fmt.Fprintf(stdout, "%s: ok, plugin %s sha256 %s (%s)\n", d.ID, d.PluginPath, pluginhost.FileSHA256(d.PluginPath), pinned)
	}
	if cfg.HTTP.Listen != "" {
		fmt.Fprintf(stdout, "http: ok, the tracking API on %s for sources %s\n", cfg.HTTP.Listen, strings.Join(slices.Sorted(maps.Keys(cfg.HTTP.WriteKeys)), ", "))
	}
	fmt.Fprintf(stdout, "streams: %s holds at most %s (ingest.max_bytes; full, it refuses new events); %s at most %s and %s (dlq.max_bytes, dlq.max_age; the oldest letters go first)\n",
		cfg.Ingest.Stream, cfg.Ingest.MaxBytes, dlq.Stream, cfg.DLQ.MaxBytes, cfg.DLQ.MaxAge)
	if *rate > 0 {
		fmt.Fprintln(stdout, dedupe.Capacity(cfg.Dedupe, cfg.NATS.Replicas, *rate))
	}
	if len(cfg.Enabled()) == 0 {
		fmt.Fprintf(stdout, "%s: ok, but no destination is enabled\n", name)
	}
	if !ok {
		return errInvalid
	}
	return nil
}

// checkPlugin starts the destination's plugin, configures it and stops it.
func checkPlugin(cfg *config.Config, d *config.Destination, log *slog.Logger) error {
	host := pluginhost.New(pluginhost.Spec{ID: d.ID, Path: d.PluginPath, Dir: cfg.Dir(), Settings: d.Settings, Types: d.Types, SHA256: d.PluginSHA256}, log, nil)
	defer host.Close()
	ctx, cancel := context.WithTimeout(context.Background(), pluginhost.StartTimeout)
	defer cancel()
	return host.Start(ctx)
}
