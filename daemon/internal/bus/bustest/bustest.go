// Package bustest gives tests a real embedded NATS server with the daemon's topology.
package bustest

import (
	"context"
	"syscall"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
)

// Open starts an embedded server on a random port with its store in a
// temporary directory, sets up the topology with the given dedupe window, and
// closes everything when the test ends.
func Open(t testing.TB, window time.Duration) (*bus.Bus, *bus.Topology) {
	t.Helper()
	return OpenWith(t, func(cfg *config.Config) { cfg.Dedupe.Window = config.Duration{Duration: window} })
}

// OpenWith is Open with the defaults changed by set.
func OpenWith(t testing.TB, set func(*config.Config)) (*bus.Bus, *bus.Topology) {
	t.Helper()
	cfg := config.Defaults()
	cfg.Path = t.TempDir() + "/config.toml"
	cfg.NATS.Embedded.Listen = "127.0.0.1:-1"
	set(&cfg)
	b, err := bus.Open(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topo, err := b.Setup(ctx, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b, topo
}

// CPUTime is the CPU time this process has used, the embedded server's
// included: what a stage benchmark charges per event.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// WaitFor polls cond until it holds, failing the test after 30 seconds.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
