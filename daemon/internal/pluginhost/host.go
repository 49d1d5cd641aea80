// Package pluginhost runs one destination's plugin process: it starts and
// configures it, hands it batches, and starts it again when it dies, since
// go-plugin itself never restarts a plugin.
package pluginhost

import (
	"time"

	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"trackd.dev/trackd/sdk"
)

// Host owns one destination's plugin process.
type Host struct {
	id       string
	path     string
	dir      string
	settings sdk.Settings
	log      *slog.Logger
	restarts prometheus.Counter
	redact   *strings.Replacer // masks secret settings; nil when there are none

	mu     sync.Mutex
	client *sdk.Client
	closed bool        // Close was called: no plugin starts again
	ready  atomic.Bool // a configured plugin is running
}

// Ready reports whether the plugin is running and configured.
func (h *Host) Ready() bool { return h.ready.Load() }

// New prepares a host; nothing runs until Start or Deliver. restarts, when
// not nil, counts the times a failed plugin is replaced.
// The plugin runs in dir, so relative paths in its settings mean the same as in the config.
func New(id, path, dir string, settings map[string]any, log *slog.Logger, restarts prometheus.Counter) (*Host, error) {
	s, err := sdk.NewSettings(settings)
	if err != nil {
		return nil, fmt.Errorf("destinations.%s.settings: %w", id, err)
	}
	return &Host{
		id: id, path: path, dir: dir, settings: s, log: log.With("destination", id),
		restarts: restarts, redact: secretsReplacer(settings),
	}, nil
}

// mask hides secret settings in text a plugin produced.
func (h *Host) mask(s string) string {
	if h.redact == nil {
		return s
	}
	return h.redact.Replace(s)
}

// StartTimeout bounds a plugin's start, handshake and Configure, where a caller
// waits for it (validate, a reload): long enough for a cold binary on a busy
// machine, short enough that a plugin that hangs is reported.
const StartTimeout = 30 * time.Second

// Start launches and configures the plugin unless it is already running.
func (h *Host) Start(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := h.running(ctx)
	return err
}

// Deliver hands a batch to the plugin, starting it first if it is not running.
// Calls may be under way together. An error means the batch was not
// delivered and the plugin has been stopped.
func (h *Host) Deliver(ctx context.Context, batch []sdk.Event) ([]sdk.Result, error) {
	h.mu.Lock()
	c, err := h.running(ctx)
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	results, err := c.Deliver(ctx, batch)
	if err != nil {
		// Whether it died or hung, the process is of no more use: the next
		// batch starts a fresh one. A call that failed with a process already
		// replaced (another call's failure, or Close) leaves the new one be.
		h.mu.Lock()
		if h.client == c {
			h.log.Warn("plugin failed during a batch; it will be started again", "err", h.mask(err.Error()), "exited", c.Exited())
			h.stop()
			h.countRestart()
		}
		h.mu.Unlock()
		return nil, fmt.Errorf("destination %s: plugin failed: %s", h.id, h.mask(err.Error()))
	}
	// Reasons end up in logs and dead-letter headers.
	for i := range results {
		results[i].Reason = h.mask(results[i].Reason)
	}
	return results, nil
}

// running returns a live client, starting one when needed; h.mu is held.
func (h *Host) running(ctx context.Context) (*sdk.Client, error) {
	if h.closed {
		return nil, fmt.Errorf("destination %s is stopping", h.id)
	}
	if h.client != nil && !h.client.Exited() {
		return h.client, nil
	}
	if h.client != nil {
		h.log.Warn("plugin exited; starting it again")
		h.stop()
		h.countRestart()
	}
	cmd := exec.Command(h.path)
	cmd.Dir = h.dir
	// A plugin spends its time waiting for its API, and concurrent calls need
	// goroutines, not cores; a Go process with a scheduler thread per core
	// spends CPU waking and parking them on every call: with one, the plugins
	// of the end-to-end benchmark used about a fifth less CPU and trackd's
	// rate rose by about as much (BENCHMARKS.md). go-plugin appends trackd's
	// own environment after cmd.Env and the last value wins, so GOMAXPROCS set
	// for trackd applies to its plugins; a plugin that needs more cores can
	// also set runtime.GOMAXPROCS itself.
	//
	// GOGC=200 likewise: a plugin's live heap is a few MB, and each call
	// brings a batch of up to a few MB, so with Go's default the collector
	// runs every few calls. At 200 the no-op plugin spent 20-27% less CPU per
	// event (batches of 100 and 512) for 5-6 MB more peak RSS (BENCHMARKS.md).
	cmd.Env = []string{"GOMAXPROCS=1", "GOGC=200"}
	dieWithParent(cmd)
	c, err := sdk.Start(cmd, &lineLogger{log: h.log, mask: h.mask})
	if err != nil {
		return nil, fmt.Errorf("destinations.%s.plugin: %s", h.id, h.mask(err.Error()))
	}
	if err := c.Configure(ctx, h.settings); err != nil {
		c.Kill()
		return nil, fmt.Errorf("destinations.%s.settings: %s", h.id, h.mask(err.Error()))
	}
	h.log.Info("plugin started", "plugin", h.path)
	h.client = c
	h.ready.Store(true)
	return c, nil
}

func (h *Host) countRestart() {
	if h.restarts != nil {
		h.restarts.Inc()
	}
}

// stop kills the plugin process; h.mu is held.
func (h *Host) stop() {
	if h.client != nil {
		h.client.Kill()
		h.client = nil
	}
	h.ready.Store(false)
}

// Close stops the plugin process for good.
func (h *Host) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	h.stop()
}

// lineLogger logs each line a plugin writes to stderr, tagged with its destination.
type lineLogger struct {
	log  *slog.Logger
	mask func(string) string
	mu   sync.Mutex
	buf  []byte
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		if line := bytes.TrimSpace(w.buf[:i]); len(line) > 0 {
			w.log.Info("plugin: " + w.mask(string(line)))
		}
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}
