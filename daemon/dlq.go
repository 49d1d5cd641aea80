package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/deliver"
)

var dlqCmd = command{
	name:    "dlq",
	summary: "list dead letters, or replay them once the cause is fixed",
	run:     dlqCommand,
}

const dlqUsage = `Usage: trackd dlq list|replay [flags]

  list     prints one line per dead letter: time, destination (or "invalid"),
           the call's type, messageId, event (or page or screen name) and the
           error
  replay   sends a destination's dead letters to that destination again (and
           to no other), or, with --destination invalid, puts invalid events
           back through validation; each leaves the dead-letter stream once it
           is safely queued

Examples:
  trackd dlq list --destination mixpanel --limit 20
  trackd dlq replay --destination mixpanel

Run "trackd dlq list --help" or "trackd dlq replay --help" for the flags.
`

func dlqCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return errors.New("name a subcommand: list or replay")
	}
	switch args[0] {
	case "list":
		return dlqList(args[1:], stdout, stderr)
	case "replay":
		return dlqReplay(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, dlqUsage)
		return flag.ErrHelp
	}
	fmt.Fprint(stderr, dlqUsage)
	return fmt.Errorf("unknown subcommand %q; use list or replay", args[0])
}

// dlqFlags are the flags list and replay share.
type dlqFlags struct {
	fs          *flag.FlagSet
	target      *targetFlags
	destination *string
	limit       *int
}

func newDlqFlags(name, summary, example string, stderr io.Writer) *dlqFlags {
	fs := newFlagSet("dlq "+name, "[--config FILE | --nats URL] [--destination NAME] [--limit N]", summary, example, stderr)
	return &dlqFlags{
		fs:          fs,
		target:      addTargetFlags(fs),
		destination: fs.String("destination", "", "only this destination's dead letters (its id), or \"invalid\" for events that failed validation"),
		limit:       fs.Int("limit", 0, "at most `N` dead letters (0: all)"),
	}
}

// dlqSession is an open walk over dead letters.
type dlqSession struct {
	target *natsTarget
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer // ordered, on the chosen subjects
	count  int                // how many letters to walk: those there now, up to --limit
}

// open connects and positions a session at the oldest matching dead letter.
func (f *dlqFlags) open(ctx context.Context, name string) (*dlqSession, error) {
	t, err := f.target.resolve()
	if err != nil {
		return nil, err
	}
	nc, err := t.connect(name)
	if err != nil {
		return nil, err
	}
	s := &dlqSession{target: t, nc: nc}
	if err := s.position(ctx, *f.destination, *f.limit); err != nil {
		nc.Close()
		return nil, err
	}
	return s, nil
}

func (s *dlqSession) position(ctx context.Context, destination string, limit int) error {
	var err error
	if s.js, err = jetstream.New(s.nc); err != nil {
		return err
	}
	s.stream, err = s.js.Stream(ctx, bus.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("there is no stream %s on NATS at %s; has trackd run there?", bus.DLQStream, redactURL(s.target.url))
	}
	if err != nil {
		return err
	}
	subject := bus.DLQPrefix + ">"
	if destination != "" {
		subject = bus.DLQPrefix + destination
	}
	if s.cons, err = s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}); err != nil {
		return err
	}
	info, err := s.cons.Info(ctx)
	if err != nil {
		return err
	}
	s.count = int(info.NumPending)
	if limit > 0 {
		s.count = min(s.count, limit)
	}
	return nil
}

// letter is a dead letter as list shows it.
type letter struct {
	at          time.Time
	seq         uint64
	destination string
	callType    string
	messageID   string
	event       string
	reason      string
}

func readLetter(m jetstream.Msg) (letter, error) {
	md, err := m.Metadata()
	if err != nil {
		return letter{}, err
	}
	l := letter{at: md.Timestamp, seq: md.Sequence.Stream, destination: m.Headers().Get(bus.HeaderDestination), reason: m.Headers().Get(bus.HeaderError)}
	if l.destination == "" {
		l.destination = "invalid"
	}
	var ev struct {
		Type      any `json:"type"`
		MessageID any `json:"messageId"`
		Event     any `json:"event"`
		Name      any `json:"name"`
	}
	// An invalid event may not be JSON at all; its line shows "-".
	if json.Unmarshal(m.Data(), &ev) == nil && ev.Type == nil {
		ev.Type = "track" // as the router reads a call without one
	}
	if ev.Event == nil {
		ev.Event = ev.Name
	}
	l.callType, l.messageID, l.event = orDash(ev.Type), orDash(ev.MessageID), orDash(ev.Event)
	return l, nil
}

// orDash shows a JSON value read from an event, "-" when it is missing or empty.
func orDash(v any) string {
	s, ok := v.(string)
	if !ok && v != nil {
		s = fmt.Sprint(v)
	}
	if s == "" {
		return "-"
	}
	return s
}

func dlqList(args []string, stdout, stderr io.Writer) error {
	f := newDlqFlags("list", "Prints one line per dead letter, oldest first: when it died, the destination (or\n\"invalid\"), the call's type, messageId and name, and the error.",
		"trackd dlq list --destination mixpanel --limit 20", stderr)
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := f.open(ctx, "trackd dlq list")
	if err != nil {
		return err
	}
	defer s.nc.Close()
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tDESTINATION\tTYPE\tMESSAGE ID\tEVENT\tERROR")
	for range s.count {
		m, err := s.cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return err
		}
		l, err := readLetter(m)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", l.at.UTC().Format(time.RFC3339), l.destination, l.callType, l.messageID, l.event, l.reason)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d dead letters\n", s.count)
	return nil
}

func dlqReplay(args []string, stdout, stderr io.Writer) error {
	f := newDlqFlags("replay", "Sends a destination's dead letters to that destination again, and to no other. With\n"+
		"--destination invalid, puts invalid events back through validation instead. Each dead\n"+
		"letter is deleted once it is safely queued again; one that fails again comes back.",
		"trackd dlq replay --destination mixpanel", stderr)
	if err := f.fs.Parse(args); err != nil {
		return err
	}
	dest := *f.destination
	if dest == "" {
		return errors.New("--destination is required: a destination's id, or \"invalid\"")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	s, err := f.open(ctx, "trackd dlq replay")
	if err != nil {
		return err
	}
	defer s.nc.Close()

	// Invalid events go back through validation; a destination's to it alone.
	subject := config.Defaults().Ingest.Subjects[0]
	if s.target.cfg != nil {
		subject = s.target.cfg.Ingest.Subjects[0]
	}
	if dest != "invalid" {
		if _, err := s.js.Consumer(ctx, bus.RoutedStream, bus.ConsumerName(dest)); err != nil {
			return fmt.Errorf("destination %q has no consumer %s on %s (%v); is it enabled in the running trackd?", dest, bus.ConsumerName(dest), bus.RoutedStream, err)
		}
	}
	replayed := 0
	for range s.count {
		m, err := s.cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return fmt.Errorf("after %d replayed: %w", replayed, err)
		}
		l, err := readLetter(m)
		if err != nil {
			return err
		}
		// Running replay again after an interruption does not queue a letter twice.
		msgID := "dlq-" + strconv.FormatUint(l.seq, 10)
		out := &nats.Msg{Subject: subject, Data: m.Data(), Header: nats.Header{jetstream.MsgIDHeader: {msgID}}}
		if dest != "invalid" {
			out = deliver.RoutedMsg(dest, m.Data(), msgID)
		}
		if _, err := s.js.PublishMsg(ctx, out); err != nil {
			return fmt.Errorf("after %d replayed, cannot queue messageId %s again: %w", replayed, l.messageID, err)
		}
		if err := s.stream.DeleteMsg(ctx, l.seq); err != nil {
			return fmt.Errorf("after %d replayed, messageId %s is queued again but still in %s: %w", replayed, l.messageID, bus.DLQStream, err)
		}
		replayed++
	}
	fmt.Fprintf(stdout, "replayed %d dead letters of %s\n", replayed, dest)
	return nil
}
