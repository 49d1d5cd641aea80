// Package publish is the producer side of trackd: it sends the calls of the
// Segment spec (track, identify, page, screen, group and alias) to the ingest
// subject with asynchronous JetStream publishes, so that every call is
// acknowledged as stored, and at most a fixed number wait for their
// acknowledgement at once.
//
//	c := publish.New(js, publish.Options{})
//	id, err := c.Track(ctx, publish.Event{Event: "Order Completed", UserID: "u1"})
//	...
//	id, err = c.Identify(ctx, publish.Identify{UserID: "u1", Traits: map[string]any{"plan": "pro"}})
//	...
//	for _, f := range c.Close(ctx) {
//		log.Printf("event %s was not stored: %v", f.MessageID, f.Err)
//	}
//
// Each call type has its method and its input struct: Track takes an Event,
// Identify an Identify, Page a Page, and so on. Every method checks its call
// as the daemon would and returns an error wrapping ErrInvalid, naming the Go
// field at fault, for a call the daemon would refuse.
//
// An event that failed may have been stored all the same (its acknowledgement
// was lost); publishing it again with the same messageId is safe, because trackd
// drops a repeated messageId, whatever the call type.
package publish

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of Options.
const (
	DefaultSubject     = "track"
	DefaultMaxInFlight = 1024
	DefaultLibrary     = "trackd-go"
)

const modulePath = "trackd.dev/trackd"

var (
	// ErrInvalid is wrapped by the error Track, Identify, Page, Screen, Group
	// and Alias return for a call the daemon would refuse; nothing is sent.
	ErrInvalid = errors.New("invalid event")
	// ErrClosed is returned by the call methods and PublishRaw after Close.
	ErrClosed = errors.New("publish: client is closed")
)

// Options configure a Client; the zero value is usable.
type Options struct {
	Subject     string // where events go; default "track"
	MaxInFlight int    // publishes waiting for their acknowledgement at once; default 1024
	Library     string // context.library.name; default "trackd-go"
}

// Failed is an event JetStream did not acknowledge as stored.
type Failed struct {
	MessageID string // the event's messageId; for PublishRaw, the id it was given
	Err       error
}

// Client publishes events. Its methods may be called from several goroutines.
type Client struct {
	js      jetstream.JetStream
	subject string
	library map[string]string

	// slots holds one token per publish awaiting its acknowledgement (and per
	// Flush marker), so a full window blocks the next publish.
	slots chan struct{}
	// acks carries publishes to the collector in the order they were made.
	acks chan pending

	mu      sync.Mutex
	closed  bool
	seq     uint64
	waiting map[uint64]string // seq → messageId of publishes not yet resolved
	failed  []Failed
}

// pending is a publish awaiting its acknowledgement, or a Flush marker
// (ack nil) that the collector closes reached on once it gets to it.
type pending struct {
	seq     uint64
	id      string
	ack     jetstream.PubAckFuture
	reached chan struct{}
}

// New returns a client publishing through js. Give js an acknowledgement
// timeout (jetstream.WithPublishAsyncTimeout) so that a lost acknowledgement
// becomes a failure instead of holding a slot of the window; a MaxInFlight
// above js's own limit (jetstream.WithPublishAsyncMaxPending, 4000 by default)
// turns a full window into errors from Track and the other call methods
// instead of waits.
func New(js jetstream.JetStream, opts Options) *Client {
	if opts.Subject == "" {
		opts.Subject = DefaultSubject
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.Library == "" {
		opts.Library = DefaultLibrary
	}
	c := &Client{
		js:      js,
		subject: opts.Subject,
		library: map[string]string{"name": opts.Library, "version": libraryVersion()},
		slots:   make(chan struct{}, opts.MaxInFlight),
		acks:    make(chan pending, opts.MaxInFlight),
		waiting: make(map[uint64]string),
	}
	go c.collect(c.acks)
	return c
}

// PublishRaw publishes body, one JSON call of any type, exactly as given:
// nothing is checked or filled in (the daemon validates it and dead-letters it
// when invalid). id names the event in Failed: its messageId when known, or
// any label the caller can trace it by.
func (c *Client) PublishRaw(ctx context.Context, id string, body []byte) error {
	// The publish may be retried from body after PublishRaw returns.
	return c.publish(ctx, id, slices.Clone(body), false)
}

// Flush waits until every event published before it is acknowledged or has
// failed, and returns the failures not yet returned, in publish order. When
// ctx is done first, the events still unacknowledged are returned as failed
// with ctx's error.
func (c *Client) Flush(ctx context.Context) []Failed {
	reached := make(chan struct{})
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return c.giveUp(c.lastSeq(), ctx.Err())
	}
	c.mu.Lock()
	upTo := c.seq
	if c.acks == nil {
		c.mu.Unlock()
		<-c.slots
		return c.giveUp(upTo, nil)
	}
	c.acks <- pending{reached: reached}
	c.mu.Unlock()
	select {
	case <-reached:
		return c.giveUp(upTo, nil)
	case <-ctx.Done():
		return c.giveUp(upTo, ctx.Err())
	}
}

// Close flushes, then refuses further events. The failures are Flush's.
func (c *Client) Close(ctx context.Context) []Failed {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	failed := c.Flush(ctx)
	c.mu.Lock()
	if c.acks != nil {
		// The collector goes on until the last publish resolves, then stops.
		close(c.acks)
		c.acks = nil
	}
	c.mu.Unlock()
	return failed
}

func (c *Client) publish(ctx context.Context, id string, body []byte, stampSentAt bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	if stampSentAt {
		body = appendSentAt(body, time.Now())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		<-c.slots
		return ErrClosed
	}
	ack, err := c.js.PublishAsync(c.subject, body)
	if err != nil {
		<-c.slots
		return fmt.Errorf("publish to %s: %w", c.subject, err)
	}
	c.seq++
	c.waiting[c.seq] = id
	// Never blocks: acks has room for every slot.
	c.acks <- pending{seq: c.seq, id: id, ack: ack}
	return nil
}

// collect resolves publishes in the order they were made, freeing their slots.
func (c *Client) collect(acks <-chan pending) {
	for p := range acks {
		if p.ack == nil {
			close(p.reached)
			<-c.slots
			continue
		}
		var err error
		select {
		case <-p.ack.Ok():
		case err = <-p.ack.Err():
		}
		c.mu.Lock()
		// Absent when a Flush gave up on it and already reported it.
		if _, ok := c.waiting[p.seq]; ok {
			delete(c.waiting, p.seq)
			if err != nil {
				c.failed = append(c.failed, Failed{MessageID: p.id, Err: err})
			}
		}
		c.mu.Unlock()
		<-c.slots
	}
}

func (c *Client) lastSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seq
}

// giveUp returns the failures so far and, when cause is not nil, every
// publish up to seq upTo still waiting, which it stops tracking.
func (c *Client) giveUp(upTo uint64, cause error) []Failed {
	c.mu.Lock()
	defer c.mu.Unlock()
	failed := c.failed
	c.failed = nil
	if cause == nil {
		return failed
	}
	var late []uint64
	for seq := range c.waiting {
		if seq <= upTo {
			late = append(late, seq)
		}
	}
	slices.Sort(late)
	for _, seq := range late {
		failed = append(failed, Failed{
			MessageID: c.waiting[seq],
			Err:       fmt.Errorf("no acknowledgement from JetStream yet: %w", cause),
		})
		delete(c.waiting, seq)
	}
	return failed
}

// libraryVersion is the version of this module in the running binary.
func libraryVersion() string {
	const unknown = "(devel)"
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return unknown
	}
	if info.Main.Path == modulePath && info.Main.Version != "" {
		return info.Main.Version
	}
	for _, m := range info.Deps {
		if m.Path != modulePath {
			continue
		}
		if m.Replace != nil {
			m = m.Replace
		}
		if m.Version != "" {
			return m.Version
		}
	}
	return unknown
}
