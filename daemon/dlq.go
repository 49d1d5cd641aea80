package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/daemon/internal/bus"
	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/daemon/internal/deliver"
	"trackd.dev/trackd/daemon/internal/dlq"
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
	walk   *dlq.Walk
}

// open connects and starts a walk over the chosen dead letters.
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
	if s.js, err = jetstream.New(nc); err == nil {
		s.walk, err = dlq.Open(ctx, s.js, *f.destination, *f.limit)
	}
	if err != nil {
		nc.Close()
		if errors.Is(err, dlq.ErrNoStream) {
			return nil, fmt.Errorf("there is no stream %s on NATS at %s; has trackd run there?", dlq.Stream, redactURL(t.url))
		}
		return nil, err
	}
	return s, nil
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
	for range s.walk.Count {
		l, err := s.walk.Next(ctx)
		if err != nil {
			return err
		}
		dest := l.Destination
		if dest == "" {
			dest = dlq.Invalid
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", l.At.UTC().Format(time.RFC3339), dest, orDash(l.Type), orDash(l.MessageID), orDash(l.Name), l.Reason)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "%d dead letters\n", s.walk.Count)
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
	queue := dlq.ToSubject(subject)
	if dest != dlq.Invalid {
		if _, err := s.js.Consumer(ctx, bus.RoutedStream, bus.ConsumerName(dest)); err != nil {
			return fmt.Errorf("destination %q has no consumer %s on %s (%v); is it enabled in the running trackd?", dest, bus.ConsumerName(dest), bus.RoutedStream, err)
		}
		queue = func(body []byte, msgID string) *nats.Msg { return deliver.RoutedMsg(dest, body, msgID) }
	}
	replayed, err := s.walk.Replay(ctx, queue)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replayed %d dead letters of %s\n", replayed, dest)
	return nil
}
