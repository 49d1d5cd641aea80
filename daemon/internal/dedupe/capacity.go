package dedupe

import (
	"fmt"
	"math"
	"time"

	"trackd.dev/trackd/daemon/internal/config"
)

// Above this many subjects nats-server stops writing a stream's index.db, so a
// restart after a crash reads every block of the bucket again.
const maxKeysIndexed = 1_000_000

// bytesPerKey is the memory to plan per dedupe key and replica: nats-server's
// RSS while claims are written (its live heap is about 230 B a key; the Go
// heap grows to about twice that between collections). BENCHMARKS.md, "Dedupe
// capacity", has the measurements.
const bytesPerKey = 400

// Capacity says how many messageIds each dedupe bucket would hold at
// rate events per second, what that costs the servers, and warns when a
// bucket would pass maxKeysIndexed.
func Capacity(d config.Dedupe, replicas int, rate float64) string {
	perBucket := rate * d.Window.Seconds() / float64(d.Shards)
	window := d.Window
	held := perBucket
	if d.MaxKeys > 0 && perBucket > float64(d.MaxKeys) {
		held = float64(d.MaxKeys)
		window = time.Duration(float64(d.MaxKeys) * float64(d.Shards) / rate * float64(time.Second))
	}
	mem := held * float64(d.Shards) * bytesPerKey * float64(replicas)
	line := fmt.Sprintf("dedupe: at %g events/s, %.0f messageIds per bucket (%d bucket(s), %d replica(s)): plan for about %s of NATS server memory in all; repeats caught within %s",
		rate, held, d.Shards, replicas, humanBytes(mem), window.Round(time.Second))
	switch {
	case d.MaxKeys > 0 && perBucket > float64(d.MaxKeys):
		line += fmt.Sprintf("\ndedupe: warning: the window would hold %.0f messageIds per bucket, over dedupe.max_keys (%d): the oldest claims will be dropped, so the effective window is %s, not dedupe.window (%s)",
			perBucket, d.MaxKeys, window.Round(time.Second), d.Window)
	case held > maxKeysIndexed:
		line += fmt.Sprintf("\ndedupe: warning: over %d messageIds per bucket; nats-server then stops writing the bucket's index, and after a crash it reads every block again on restart. Raise dedupe.shards to %d or more, or set dedupe.max_keys",
			maxKeysIndexed, int(math.Ceil(perBucket*float64(d.Shards)/maxKeysIndexed)))
	}
	return line
}

func humanBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.0f MiB", b/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", b/(1<<10))
}
