// Package bustest gives tests a real embedded NATS server with the daemon's topology.
package bustest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
)

// Open starts an embedded server on a random port with its store in a
// temporary directory, sets up the topology, and closes everything when the
// test ends.
func Open(t testing.TB) (*bus.Bus, *bus.Topology) {
	t.Helper()
	cfg := config.Defaults()
	cfg.Path = t.TempDir() + "/config.toml"
	cfg.NATS.Embedded.Listen = "127.0.0.1:-1"
	// Below the defaults, which the server reserves storage for: a test
	// machine's disk may not have 9 GiB free.
	cfg.Ingest.MaxBytes, cfg.DLQ.MaxBytes = 512<<20, 64<<20
	b, err := bus.Open(&cfg, bus.Watch{})
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

// ProcessCPUSeconds is a process's utime+stime, from /proc/<pid>/stat.
func ProcessCPUSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces; the fields after it are plain.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	const clockTicks = 100 // USER_HZ on Linux
	return (utime + stime) / clockTicks
}

// ChildrenCPUSeconds adds up ProcessCPUSeconds of a process's running
// children: a daemon's plugins, or a benchmark's.
func ChildrenCPUSeconds(t testing.TB, pid int) float64 {
	t.Helper()
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	total := 0.0
	for _, task := range tasks {
		data, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(data)) {
			if child, err := strconv.Atoi(f); err == nil {
				total += ProcessCPUSeconds(t, child)
			}
		}
	}
	return total
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
