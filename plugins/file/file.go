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
	mu   sync.Mutex
	f    *os.File
	sync bool // whether f is a regular file, which fsync applies to
}

type settings struct {
	Path string `toml:"path"`
}

var _ sdk.Destination = (*File)(nil)

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

	p.mu.Lock()
	old := p.f
	p.f, p.sync = f, fi.Mode().IsRegular()
	p.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return nil
}

// Deliver writes the batch with one write and syncs it to disk before
// reporting it delivered; if either fails, the whole batch is retried.
func (p *File) Deliver(_ context.Context, batch []sdk.Event) []sdk.Result {
	results := make([]sdk.Result, len(batch))
	var buf bytes.Buffer
	for i, e := range batch {
		if err := appendLine(&buf, e.JSON); err != nil {
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

func (p *File) write(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return errors.New("file plugin is not configured")
	}
	if len(b) == 0 {
		return nil
	}
	if _, err := p.f.Write(b); err != nil {
		return err
	}
	if p.sync {
		return p.f.Sync()
	}
	return nil
}

// appendLine appends event JSON to buf as one line. The daemon's JSON is
// compact; anything else is compacted so that the line stays one line.
func appendLine(buf *bytes.Buffer, event []byte) error {
	if len(event) == 0 {
		return errors.New("event has no JSON")
	}
	if bytes.ContainsAny(event, "\r\n") {
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
