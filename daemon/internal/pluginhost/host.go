// Package pluginhost runs one destination's plugin process: it starts and
// configures it, hands it batches, and starts it again when it dies, since
// go-plugin itself never restarts a plugin.
package pluginhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/host"
)

// Spec is what runs a destination's plugin.
type Spec struct {
	ID   string
	Path string // the plugin binary
	// Dir is where the plugin runs, so that relative paths in its settings
	// mean the same as in the config.
	Dir      string
	Settings map[string]any
	// Types, when not empty, are the call types the destination is to take
	// (its types key), which its plugin must take.
	Types []string
	// SHA256, when not nil, is the checksum the binary must have to run.
	SHA256 []byte
}

// Host owns one destination's plugin process.
type Host struct {
	Spec
	log      *slog.Logger
	restarts prometheus.Counter
	// redact masks secret settings; it holds nil when there are none. It
	// grows the settings a plugin declares secret once it has started.
	redact atomic.Pointer[strings.Replacer]

	mu     sync.Mutex
	client *host.Client
	closed bool          // Close was called: no plugin starts again
	ready  atomic.Bool   // a configured plugin is running
	takes  atomic.Uint32 // the types routed to the plugin, a bit each (typeBit); 0 until it is configured
}

// Ready reports whether the plugin is running and configured.
func (h *Host) Ready() bool { return h.ready.Load() }

// New prepares a host; nothing runs until Start or Deliver. restarts, when
// not nil, counts the times a failed plugin is replaced.
func New(spec Spec, log *slog.Logger, restarts prometheus.Counter) *Host {
	h := &Host{Spec: spec, log: log.With("destination", spec.ID), restarts: restarts}
	h.redact.Store(secretsReplacer(spec.Settings, nil))
	return h
}

// mask hides secret settings in text a plugin produced.
func (h *Host) mask(s string) string {
	if r := h.redact.Load(); r != nil {
		return r.Replace(s)
	}
	return s
}

// Takes reports whether calls of type typ are for this destination: of its
// types key, or of those its plugin takes. Until the plugin has said, every
// type of the types key is, or every type when the key is not set; Deliver
// answers for the plugin those it turns out not to take.
func (h *Host) Takes(typ string) bool {
	if bits := h.takes.Load(); bits != 0 {
		return bits&typeBit(typ) != 0
	}
	return len(h.Types) == 0 || slices.Contains(h.Types, typ)
}

// callTypes are the call types in the order of their bits in Host.takes.
var callTypes = sdk.AllTypes()

// typeBit is typ's bit in Host.takes; 0 for what is not a call type. No type
// is a track call, as on the ingest stream.
func typeBit(typ string) uint32 {
	if typ == "" {
		typ = sdk.TypeTrack
	}
	if i := slices.Index(callTypes, typ); i >= 0 {
		return 1 << i
	}
	return 0
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
	if bits := h.takes.Load(); !takesAll(bits, batch) {
		// Routed before the plugin said what it takes: those it does not take
		// were never its to have.
		return h.deliverTaken(ctx, c, batch, bits)
	}
	return h.deliver(ctx, c, batch)
}

func takesAll(bits uint32, batch []sdk.Event) bool {
	for i := range batch {
		if bits&typeBit(batch[i].Type) == 0 {
			return false
		}
	}
	return true
}

// deliverTaken delivers the events of batch whose type has a bit in bits,
// and answers OK for the others.
func (h *Host) deliverTaken(ctx context.Context, c *host.Client, batch []sdk.Event, bits uint32) ([]sdk.Result, error) {
	results := make([]sdk.Result, len(batch))
	var taken []int
	var sub []sdk.Event
	for i := range batch {
		results[i] = sdk.OK()
		if bits&typeBit(batch[i].Type) != 0 {
			taken = append(taken, i)
			sub = append(sub, batch[i])
		}
	}
	h.log.Warn("calls of types the plugin does not take were routed to it before it started; they are skipped", "calls", len(batch)-len(taken))
	if len(sub) == 0 {
		return results, nil
	}
	got, err := h.deliver(ctx, c, sub)
	if err != nil {
		return nil, err
	}
	for k, i := range taken {
		results[i] = got[k]
	}
	return results, nil
}

// deliver hands batch to the running plugin c.
func (h *Host) deliver(ctx context.Context, c *host.Client, batch []sdk.Event) ([]sdk.Result, error) {
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
		return nil, fmt.Errorf("destination %s: plugin failed: %s", h.ID, h.mask(err.Error()))
	}
	// Reasons end up in logs and dead-letter headers.
	for i := range results {
		results[i].Reason = h.mask(results[i].Reason)
	}
	return results, nil
}

// running returns a live client, starting one when needed; h.mu is held.
func (h *Host) running(ctx context.Context) (*host.Client, error) {
	if h.closed {
		return nil, fmt.Errorf("destination %s is stopping", h.ID)
	}
	if h.client != nil && !h.client.Exited() {
		return h.client, nil
	}
	if h.client != nil {
		h.log.Warn("plugin exited; starting it again")
		h.stop()
		h.countRestart()
	}
	cmd := exec.Command(h.Path)
	cmd.Dir = h.Dir
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
	var opts []host.Option
	if h.SHA256 != nil {
		opts = append(opts, host.WithChecksum(h.SHA256))
	}
	c, err := host.Start(cmd, lineLogger{log: h.log, mask: h.mask}, opts...)
	if errors.Is(err, host.ErrChecksum) {
		return nil, fmt.Errorf("destinations.%s.sha256: the plugin %s has SHA-256 %s, not the one pinned; check where the binary came from, then pin its checksum (trackd validate prints it)",
			h.ID, h.Path, FileSHA256(h.Path))
	}
	if err != nil {
		return nil, fmt.Errorf("destinations.%s.plugin: %s", h.ID, h.mask(err.Error()))
	}
	h.redact.Store(secretsReplacer(h.Settings, c.Secrets()))
	types, err := c.Configure(ctx, h.Settings)
	if err != nil {
		c.Kill()
		return nil, fmt.Errorf("destinations.%s.settings: %s", h.ID, h.mask(err.Error()))
	}
	var bits uint32
	for _, t := range types {
		if len(h.Types) == 0 || slices.Contains(h.Types, t) {
			bits |= typeBit(t)
		}
	}
	for _, t := range h.Types {
		if !slices.Contains(types, t) {
			c.Kill()
			return nil, fmt.Errorf("destinations.%s.types: the plugin %s does not take %q calls; it takes %s",
				h.ID, h.Path, t, strings.Join(types, ", "))
		}
	}
	h.takes.Store(bits)
	h.log.Info("plugin started", "plugin", h.Path, "types", strings.Join(types, ","))
	h.client = c
	h.ready.Store(true)
	return c, nil
}

// FileSHA256 is the hex SHA-256 of the file at path, or why it has none.
func FileSHA256(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return hex.EncodeToString(sum.Sum(nil))
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

// closeTimeout bounds a plugin's Close, its chance to flush what it holds.
const closeTimeout = 10 * time.Second

// Close stops the plugin process for good, once the plugin has finished what
// it holds (sdk.Closer). No Deliver may be under way.
func (h *Host) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	if h.client != nil && !h.client.Exited() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		if err := h.client.Close(ctx); err != nil {
			h.log.Warn("plugin failed to close; stopping it all the same", "err", h.mask(err.Error()))
		}
		cancel()
	}
	h.stop()
}

// lineLogger logs each line a plugin writes to stderr, tagged with its
// destination. host.Start splits the output into lines and hands over one
// complete line per Write, never two at once, so nothing is buffered here.
type lineLogger struct {
	log  *slog.Logger
	mask func(string) string
}

func (w lineLogger) Write(p []byte) (int, error) {
	if line := bytes.TrimSpace(p); len(line) > 0 {
		w.log.Info("plugin: " + w.mask(string(line)))
	}
	return len(p), nil
}
