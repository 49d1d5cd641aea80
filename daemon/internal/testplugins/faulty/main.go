// Command faultyplugin is a destination plugin that fails on purpose, for the
// daemon's fault tests. It appends each delivered messageId to a file.
package main

import (
	"context"
	"errors"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"trackd.dev/trackd/sdk"
)

type settings struct {
	// Out is the file each delivered messageId is appended to, one a line.
	Out string `toml:"out"`
	// CrashOnce, if set, is a marker file: the first Deliver that finds it
	// absent creates it and kills the process in the middle of the batch.
	CrashOnce string `toml:"crash_once"`
	// FailConfigure, if set, is the error Configure returns, with {procs}
	// replaced by the process's GOMAXPROCS and {gogc} by its GC percent.
	FailConfigure string `toml:"fail_configure"`
	// Auth is accepted and unused, for the tests that check secrets are masked.
	Auth map[string]string `toml:"auth"`
}

type faulty struct {
	mu sync.Mutex
	s  settings
}

func (f *faulty) Configure(_ context.Context, s sdk.Settings) error {
	if err := s.Decode(&f.s); err != nil {
		return err
	}
	if f.s.FailConfigure != "" {
		gogc := debug.SetGCPercent(100)
		debug.SetGCPercent(gogc)
		r := strings.NewReplacer("{procs}", strconv.Itoa(runtime.GOMAXPROCS(0)), "{gogc}", strconv.Itoa(gogc))
		return errors.New(r.Replace(f.s.FailConfigure))
	}
	if f.s.Out == "" {
		return errors.New("out is empty")
	}
	return nil
}

func (f *faulty) Deliver(_ context.Context, batch []sdk.Event) []sdk.Result {
	f.mu.Lock()
	defer f.mu.Unlock()
	results := make([]sdk.Result, len(batch))
	var b strings.Builder
	for i, e := range batch {
		if i == len(batch)/2 && f.s.CrashOnce != "" {
			if _, err := os.Stat(f.s.CrashOnce); errors.Is(err, os.ErrNotExist) {
				_ = os.WriteFile(f.s.CrashOnce, nil, 0o644)
				os.Exit(3)
			}
		}
		b.WriteString(e.MessageID + "\n")
		results[i] = sdk.OK()
	}
	out, err := os.OpenFile(f.s.Out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err == nil {
		_, err = out.WriteString(b.String())
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		for i := range results {
			results[i] = sdk.Retry(0, err.Error())
		}
	}
	return results
}

func main() { sdk.Serve(&faulty{}, sdk.ServeOptions{SampleConfig: "out = \"delivered.txt\"\n"}) }
