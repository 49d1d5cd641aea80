// Command noopplugin is a destination plugin that accepts every event and
// sends it nowhere, for the daemon's benchmarks: what it costs is the
// daemon's and the plugin protocol's cost alone.
//
// For the latency benchmark it also records, for each event whose messageId
// is "lat-<unix nanoseconds>-<anything>", how long ago that time was and how
// long ago JetStream stored the event (its receivedAt, to the millisecond),
// in microseconds, and when the plugin got it, in Unix microseconds: three
// numbers a line. With answer = "retry" it plays a destination that is down.
package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"trackd.dev/trackd/sdk"
)

type settings struct {
	// LatencyOut is the file the latencies are appended to; "" records none.
	LatencyOut string `toml:"latency_out"`
	// Answer is "ok" (the default) or "retry": every event is retried after
	// RetryAfter, as when the destination's API is down.
	Answer     string        `toml:"answer"`
	RetryAfter time.Duration `toml:"retry_after"`
}

type noop struct {
	mu  sync.Mutex
	s   settings
	out *os.File
}

func (p *noop) Configure(_ context.Context, s sdk.Settings) error {
	cfg := settings{Answer: "ok", RetryAfter: time.Second}
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Answer != "ok" && cfg.Answer != "retry" {
		return errors.New(`answer must be "ok" or "retry"`)
	}
	var out *os.File
	if cfg.LatencyOut != "" {
		f, err := os.OpenFile(cfg.LatencyOut, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		out = f
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.out != nil {
		_ = p.out.Close()
	}
	p.s, p.out = cfg, out
	return nil
}

// Types says the no-op plugin takes every call type, as the benchmarks send a mix.
func (p *noop) Types() []string { return sdk.AllTypes() }

func (p *noop) Deliver(_ context.Context, batch []sdk.Event) []sdk.Result {
	now := time.Now().UnixNano()
	p.mu.Lock()
	defer p.mu.Unlock()
	results := make([]sdk.Result, len(batch))
	var lines []byte
	for i, e := range batch {
		if p.s.Answer == "retry" {
			results[i] = sdk.Retry(p.s.RetryAfter, "the destination is down (noopplugin answer = \"retry\")")
			continue
		}
		results[i] = sdk.OK()
		if p.out == nil {
			continue
		}
		if rest, ok := strings.CutPrefix(e.MessageID, "lat-"); ok {
			stamp, _, _ := strings.Cut(rest, "-")
			sent, err := strconv.ParseInt(stamp, 10, 64)
			if err != nil {
				continue
			}
			lines = strconv.AppendInt(lines, (now-sent)/1000, 10)
			lines = append(lines, ' ')
			lines = strconv.AppendInt(lines, (now-receivedAt(e.JSON))/1000, 10)
			lines = append(lines, ' ')
			lines = strconv.AppendInt(lines, now/1000, 10)
			lines = append(lines, '\n')
		}
	}
	if len(lines) > 0 {
		_, _ = p.out.Write(lines)
	}
	return results
}

// receivedAt is the event's receivedAt in Unix nanoseconds, or 0.
func receivedAt(event []byte) int64 {
	const key = `"receivedAt":"`
	i := bytes.Index(event, []byte(key))
	if i < 0 || len(event) < i+len(key)+len(sdk.TimeLayout) {
		return 0
	}
	at, err := time.Parse(sdk.TimeLayout, string(event[i+len(key):i+len(key)+len(sdk.TimeLayout)]))
	if err != nil {
		return 0
	}
	return at.UnixNano()
}

func main() {
	sdk.Serve(&noop{}, sdk.ServeOptions{SampleConfig: "# latency_out = \"latency.txt\"\n# answer = \"ok\"\n"})
}
