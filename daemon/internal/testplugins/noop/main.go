// Command noopplugin is a destination plugin that accepts every event and
// sends it nowhere, for the daemon's benchmarks: what it costs is the
// daemon's and the plugin protocol's cost alone.
//
// For the latency benchmark it also records, for each event whose messageId
// is "lat-<unix nanoseconds>-<anything>", how long ago that time was, in
// microseconds, one number a line. With answer = "retry" it plays a
// destination that is down.
package main

import (
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
			if sent, err := strconv.ParseInt(stamp, 10, 64); err == nil {
				lines = strconv.AppendInt(lines, (now-sent)/1000, 10)
				lines = append(lines, '\n')
			}
		}
	}
	if len(lines) > 0 {
		_, _ = p.out.Write(lines)
	}
	return results
}

func main() {
	sdk.Serve(&noop{}, "# latency_out = \"latency.txt\"\n# answer = \"ok\"\n")
}
