package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"trackd.dev/trackd/daemon/internal/config"
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
	fs := newFlagSet("validate", "[--config FILE]",
		"Parses the configuration, starts every enabled plugin, hands it its settings, and prints\n"+
			"one line per destination (and one for the tracking API when [http] turns it on).\n"+
			"Exits 0 only if all are ok. Sends no NATS traffic.",
		"trackd validate --config config.toml", stderr)
	configPath := fs.String("config", "config.toml", "the configuration `file`")
	if err := fs.Parse(args); err != nil {
		return err
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
		fmt.Fprintf(stdout, "%s: ok\n", d.ID)
	}
	if cfg.HTTP.Listen != "" {
		fmt.Fprintf(stdout, "http: ok, the tracking API on %s for sources %s\n", cfg.HTTP.Listen, strings.Join(slices.Sorted(maps.Keys(cfg.HTTP.WriteKeys)), ", "))
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
	host, err := pluginhost.New(d.ID, d.PluginPath, cfg.Dir(), d.Settings, log, nil)
	if err != nil {
		return err
	}
	defer host.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return host.Start(ctx)
}
