package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"trackd.dev/trackd/sdk"
)

// File appends each event's JSON to a file as one line.
type File struct {
	mu  sync.Mutex
	out *output // nil until configured

	// syncFile, if set, replaces (*os.File).Sync for the files configured
	// after, so that tests can count fsyncs, hold them and make them fail.
	syncFile func(*os.File) error
}

// output is the configured file and the group commit of the calls writing to
// it: a call writes under File.mu, then waits for an fsync that began after
// its write. While one fsync runs, later calls write and wait, and the next
// fsync covers them all, run by whichever of them gets there first.
type output struct {
	f       *os.File
	regular bool // whether f is a regular file, which fsync applies to
	sync    func(*os.File) error
	cond    *sync.Cond // on File.mu; broadcast when an fsync ends and when users drops to 0

	next    *round // the fsync that will cover the writes made now
	syncing bool   // an fsync is under way, outside File.mu
	users   int    // calls that wrote and wait for their fsync; f stays open until they are done
}

// round is one fsync, and its outcome for the calls whose writes it covers.
// Each call keeps its own round: with Linux reporting a writeback error to
// one fsync only, a later fsync succeeding says nothing about these writes.
type round struct {
	done bool
	err  error
}

type settings struct {
	Path string `toml:"path"`
}

var (
	_ sdk.Destination = (*File)(nil)
	_ sdk.Typer       = (*File)(nil)
)

// Types says the file takes every call type: it writes each as it is.
func (*File) Types() []string { return sdk.AllTypes() }

func (p *File) Configure(_ context.Context, s sdk.Settings) error {
	var cfg settings
	if err := s.Decode(&cfg); err != nil {
		return err
	}
	if cfg.Path == "" {
		return errors.New(`path is empty; set it to the file events are appended to, such as "data/events.jsonl"`)
	}
	path, err := filepath.Abs(cfg.Path)
	if err != nil {
		return fmt.Errorf("path %q: %w", cfg.Path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("path %q: %w", cfg.Path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("path %q: %w", cfg.Path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("path %q: %w", cfg.Path, err)
	}

	o := &output{f: f, regular: fi.Mode().IsRegular(), sync: p.syncFile, cond: sync.NewCond(&p.mu), next: new(round)}
	if o.sync == nil {
		o.sync = (*os.File).Sync
	}

	p.mu.Lock()
	old := p.out
	p.out = o
	// Calls that wrote to the old file still need its fsync; closing it now
	// would answer them retry ("file already closed") for lines written.
	for old != nil && old.users > 0 {
		old.cond.Wait()
	}
	p.mu.Unlock()
	if old != nil {
		_ = old.f.Close()
	}
	return nil
}

// Deliver writes the batch with one write and syncs it to disk before
// reporting it delivered; if either fails, the whole batch is retried.
// Concurrent calls share fsyncs (see output).
func (p *File) Deliver(_ context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	buf := lines.Get().(*bytes.Buffer)
	defer lines.Put(buf)
	buf.Reset()
	size := 0
	for _, e := range batch {
		size += len(e.JSON) + 1
	}
	buf.Grow(size)
	for i, e := range batch {
		if err := appendLine(buf, e.JSON); err != nil {
			results[i] = sdk.Drop(err.Error())
		}
	}

	err := p.write(buf.Bytes())
	for i := range results {
		switch {
		case results[i].Status == sdk.StatusDrop:
		case err != nil:
			results[i] = sdk.Retry(0, err.Error())
		default:
			results[i] = sdk.OK()
		}
	}
	return results
}

// lines holds the buffers Deliver writes a batch's lines into.
var lines = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (p *File) write(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	o := p.out
	if o == nil {
		return errors.New("file plugin is not configured")
	}
	if len(b) == 0 {
		return nil
	}
	if _, err := o.f.Write(b); err != nil {
		return err
	}
	if !o.regular {
		return nil
	}

	r := o.next
	o.users++
	defer func() {
		if o.users--; o.users == 0 {
			o.cond.Broadcast()
		}
	}()
	for !r.done {
		if o.syncing {
			o.cond.Wait()
			continue
		}
		// No fsync runs, so r has not been taken (a taken round is done
		// before syncing is cleared): r is o.next, and this call syncs it.
		o.syncing = true
		o.next = new(round)
		p.mu.Unlock()
		err := o.sync(o.f)
		p.mu.Lock()
		r.done, r.err = true, err
		o.syncing = false
		o.cond.Broadcast()
	}
	return r.err
}

// appendLine appends event JSON to buf as one line. The daemon's JSON is
// compact; anything else is compacted so that the line stays one line.
func appendLine(buf *bytes.Buffer, event []byte) error {
	if len(event) == 0 {
		return errors.New("event has no JSON")
	}
	if bytes.IndexByte(event, '\n') >= 0 || bytes.IndexByte(event, '\r') >= 0 {
		n := buf.Len()
		if err := json.Compact(buf, event); err != nil {
			buf.Truncate(n)
			return fmt.Errorf("event JSON is invalid: %w", err)
		}
	} else {
		buf.Write(event)
	}
	buf.WriteByte('\n')
	return nil
}
