package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/signal"
	"path"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"trackd.dev/trackd/daemon/internal/tap"
)

var tapCmd = command{
	name:    "tap",
	summary: "watch live routing decisions: where each event went, and why not elsewhere",
	run:     tapCommand,
}

func tapCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("tap", "[--config FILE | --nats URL] [--destination NAME] [--event GLOB] [--json] [--limit N]",
		"Prints what the running daemons decide for each event as it passes: the destinations it\n"+
			"went to, and for the others why not (integrations: the event's integrations object;\n"+
			"filter: the destination's events/exclude_events globs); repeats and invalid events too.\n"+
			"Text on a terminal, JSON Lines with --json. Runs until interrupted or --limit is reached.",
		"trackd tap --destination mixpanel --event 'Order *'", stderr)
	target := addTargetFlags(fs)
	destination := fs.String("destination", "", "only events this destination (its id) was considered for")
	eventGlob := fs.String("event", "", "only events whose name matches this `glob`")
	asJSON := fs.Bool("json", false, "print one JSON object per decision")
	limit := fs.Int("limit", 0, "stop after `N` decisions (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := path.Match(*eventGlob, ""); err != nil {
		return fmt.Errorf("--event %q is not a valid glob", *eventGlob)
	}
	t, err := target.resolve()
	if err != nil {
		return err
	}
	nc, err := t.connect("trackd tap")
	if err != nil {
		return err
	}
	defer nc.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	decisions := make(chan tap.Decision, 1024)
	sub, err := nc.Subscribe(tap.DecisionsSubject, func(m *nats.Msg) {
		var d tap.Decision
		if json.Unmarshal(m.Data, &d) == nil {
			select {
			case decisions <- d:
			default: // a slow terminal loses lines rather than slowing anything
			}
		}
	})
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if _, err := nc.Request(tap.HelloSubject, nil, 5*time.Second); err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("no trackd answered on NATS at %s (from %s); is it running?", redactURL(t.url), t.from)
		}
		return err
	}
	hello := func() error { return nc.Publish(tap.HelloSubject, nil) }
	ticker := time.NewTicker(tap.HelloEvery)
	defer ticker.Stop()
	fmt.Fprintf(stderr, "tapping routing decisions on NATS at %s; Ctrl-C stops\n", redactURL(t.url))
	for shown := 0; *limit == 0 || shown < *limit; {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := hello(); err != nil {
				return err
			}
		case d := <-decisions:
			if !tapWants(d, *destination, *eventGlob) {
				continue
			}
			shown++
			if *asJSON {
				b, _ := json.Marshal(d)
				fmt.Fprintf(stdout, "%s\n", b)
				continue
			}
			fmt.Fprintln(stdout, formatDecision(d))
		}
	}
	return nil
}

func tapWants(d tap.Decision, destination, eventGlob string) bool {
	if eventGlob != "" {
		if ok, _ := path.Match(eventGlob, d.Event); !ok {
			return false
		}
	}
	if destination == "" {
		return true
	}
	for _, v := range d.Destinations {
		if v.ID == destination {
			return true
		}
	}
	return false
}

// formatDecision is one line: time, type, event, messageId, then where it went.
func formatDecision(d tap.Decision) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-8s  %-20s  %s  ", d.Time.UTC().Format("15:04:05.000"), orDash(d.Type), orDash(d.Event), orDash(d.MessageID))
	switch d.Outcome {
	case tap.Invalid:
		b.WriteString("invalid: " + d.Error)
	case tap.Duplicate:
		b.WriteString("duplicate: dropped")
	default:
		var to, not []string
		for _, v := range d.Destinations {
			if v.Routed {
				to = append(to, v.ID)
			} else {
				not = append(not, v.ID+" ("+v.Reason+")")
			}
		}
		if len(to) == 0 {
			b.WriteString("→ nowhere")
		} else {
			b.WriteString("→ " + strings.Join(to, ", "))
		}
		if len(not) > 0 {
			b.WriteString("   not: " + strings.Join(not, ", "))
		}
	}
	return b.String()
}

// orDash shows an empty field as "-".
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
