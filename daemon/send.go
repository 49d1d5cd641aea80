package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/time/rate"

	"trackd.dev/trackd/daemon/internal/config"
	"trackd.dev/trackd/sdk/clip"
	"trackd.dev/trackd/sdk/publish"
)

var sendCmd = command{
	name:    "send",
	summary: "publish JSON Lines calls of any type (track, identify, page, screen, group, alias)",
	run:     sendCommand,
}

const (
	// An acknowledgement lost in transit fails its event after this long
	// instead of holding a slot of the publish window for ever.
	sendAckTimeout = 30 * time.Second
	// How long an interrupted send still waits for the acknowledgements of
	// what it has published.
	sendInterruptGrace = 10 * time.Second
	// Past this many, events JetStream did not store are counted, not listed.
	sendMaxFailureLines = 10
)

func sendCommand(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("send", "[--config FILE | --nats URL] [--subject SUBJ] [--rate N] [FILE|-]",
		"Publishes Segment calls of any type (track, identify, page, screen, group, alias) read as\n"+
			"JSON Lines (one call per line) from FILE, or from standard input when FILE is - or absent,\n"+
			"to the ingest subject of a running trackd. Each line is sent as it is: a line without a\n"+
			"type is a track call, and the daemon validates each by the rules of its type and\n"+
			"dead-letters it if invalid. Lines that are not a JSON object are reported and skipped.\n"+
			"Prints how many events JetStream accepted, and exits non-zero if a line was skipped or an\n"+
			"event was not stored.",
		"trackd send events.jsonl\n  gzip -dc backfill.jsonl.gz | trackd send --nats nats://10.0.0.5:4222 --rate 500 -", stderr)
	target := addTargetFlags(fs)
	subject := fs.String("subject", "", "publish to this `subject` (default: the first of the configuration's ingest.subjects, \"track\")")
	perSecond := fs.Float64("rate", 0, "send at most `N` events per second; 0 is no limit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 1 {
		return fmt.Errorf("one input file at most, got %d (%s); use cat to join files", fs.NArg(), strings.Join(fs.Args(), " "))
	}
	if *perSecond < 0 || math.IsNaN(*perSecond) || math.IsInf(*perSecond, 0) {
		return fmt.Errorf("--rate %v is not a number of events per second; use 0 for no limit", *perSecond)
	}

	in, err := openSendInput(fs.Arg(0))
	if err != nil {
		return err
	}
	defer in.Close()
	t, err := target.resolve()
	if err != nil {
		return err
	}
	subjectFrom := "--subject"
	switch {
	case *subject != "":
	case t.cfg != nil:
		*subject, subjectFrom = t.cfg.Ingest.Subjects[0], *target.configPath+" ingest.subjects"
	default:
		*subject, subjectFrom = config.Defaults().Ingest.Subjects[0], "the default ingest subject"
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal stops the reading and waits for the acknowledgements;
	// a second one ends the process.
	context.AfterFunc(ctx, stop)
	nc, err := t.connect("trackd send")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(sendAckTimeout))
	if err != nil {
		return err
	}
	// A subject no stream stores would fail every event, slowly: say so at once.
	// Other errors (a producer may not be allowed the JetStream API) are no reason to stop.
	if _, err := js.StreamNameBySubject(ctx, *subject); errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no JetStream stream stores subject %q (%s) on NATS at %s; is trackd running there?", *subject, subjectFrom, redactURL(t.url))
	}

	s := &sender{
		name:   in.name,
		client: publish.New(js, publish.Options{Subject: *subject}),
	}
	if *perSecond > 0 {
		// A burst of 1/20 s worth keeps Wait from sleeping once per event at high rates.
		s.limiter = rate.NewLimiter(rate.Limit(*perSecond), max(1, int(*perSecond/20)))
	}
	s.progress = startSendProgress(stderr, in.size, &s.events)
	s.messages = s.progress.messages(stderr)
	readErr := s.send(ctx, in)
	s.progress.stop(readErr == nil)
	s.messages = stderr

	flushCtx := ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		flushCtx, cancel = context.WithTimeout(context.Background(), sendInterruptGrace)
		defer cancel()
	}
	for _, f := range s.client.Close(flushCtx) {
		s.fail(f.MessageID, "not stored by JetStream", f.Err)
	}
	if hidden := s.failed - sendMaxFailureLines; hidden > 0 {
		fmt.Fprintf(stderr, "%s: %d more events not stored (not listed)\n", s.name, hidden)
	}
	fmt.Fprintf(stdout, "sent %d events (%d accepted by JetStream, %d failed, %d lines skipped)\n",
		s.sent, s.sent-s.failed, s.failed, s.skipped)

	switch {
	case readErr != nil:
		return readErr
	case s.failed > 0 || s.skipped > 0:
		var what []string
		if s.skipped > 0 {
			what = append(what, pluralize(s.skipped, "line", "lines")+" skipped")
		}
		if s.failed > 0 {
			what = append(what, pluralize(s.failed, "event", "events")+" not stored")
		}
		return fmt.Errorf("%s: %s; see the messages above", s.name, strings.Join(what, " and "))
	}
	return nil
}

// sendInput is the JSON Lines source: a file or standard input.
type sendInput struct {
	io.ReadCloser
	name string // for messages: the path as given, or "stdin"
	size int64  // 0 when unknown, as for a pipe
}

func openSendInput(path string) (*sendInput, error) {
	in := &sendInput{ReadCloser: io.NopCloser(os.Stdin), name: "stdin"}
	var st os.FileInfo
	var err error
	if path == "" || path == "-" {
		st, err = os.Stdin.Stat()
	} else {
		f, openErr := os.Open(path)
		if openErr != nil {
			var pe *os.PathError
			if errors.As(openErr, &pe) {
				openErr = pe.Err
			}
			return nil, fmt.Errorf("cannot open %s: %w", path, openErr)
		}
		in = &sendInput{ReadCloser: f, name: path}
		st, err = f.Stat()
	}
	if err == nil && st.Mode().IsRegular() {
		in.size = st.Size()
	}
	return in, nil
}

// sender publishes the lines of one input and counts what became of them.
type sender struct {
	name     string
	client   *publish.Client
	limiter  *rate.Limiter // nil: no limit
	progress *sendProgress
	messages io.Writer // where per-line messages go: above the bar while it is drawn

	events                atomic.Int64 // lines published, for the bar
	sent, failed, skipped int
}

// send publishes every line until the input ends or ctx is done. It returns
// an error only when it stopped early.
func (s *sender) send(ctx context.Context, in io.Reader) error {
	r := bufio.NewReaderSize(in, 64<<10)
	for n := 1; ; n++ {
		// ReadBytes returns a new slice per line, which is what a publish in
		// flight needs.
		line, readErr := r.ReadBytes('\n')
		if len(line) > 0 {
			if err := s.line(ctx, n, line); err != nil {
				return err
			}
			s.progress.advance(len(line))
		}
		switch {
		case readErr == io.EOF:
			return nil
		case readErr != nil:
			return fmt.Errorf("cannot read %s after line %d: %w", s.name, n-1, readErr)
		}
	}
}

func (s *sender) line(ctx context.Context, n int, line []byte) error {
	body := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	where := s.name + ":" + strconv.Itoa(n)
	if why := notAnObject(body); why != "" {
		s.skipped++
		fmt.Fprintf(s.messages, "%s: not a JSON object: %s\n", where, why)
		return nil
	}
	interrupted := func() error {
		return fmt.Errorf("interrupted before %s; it and the lines after it were not sent", where)
	}
	if s.limiter != nil {
		if err := s.limiter.Wait(ctx); err != nil {
			return interrupted()
		}
	}
	err := s.client.PublishRaw(ctx, where, body)
	switch {
	case err != nil && ctx.Err() != nil:
		return interrupted()
	case errors.Is(err, nats.ErrConnectionClosed):
		return fmt.Errorf("lost the connection to NATS before %s; it and the lines after it were not sent", where)
	}
	s.sent++
	s.events.Add(1)
	if err != nil {
		s.fail(where, "not sent", err)
	}
	return nil
}

// fail counts an event that was not stored, and reports the first few.
func (s *sender) fail(where, what string, err error) {
	s.failed++
	if s.failed <= sendMaxFailureLines {
		fmt.Fprintf(s.messages, "%s: %s: %v\n", where, what, err)
	}
}

// notAnObject says why body is not one JSON object, or returns "".
func notAnObject(body []byte) string {
	if !json.Valid(body) {
		var v json.RawMessage
		err := json.Unmarshal(body, &v)
		return fmt.Sprintf("%v: %s", err, clip.Quote(string(body), 40))
	}
	switch c := bytes.TrimLeft(body, " \t\r")[0]; c {
	case '{':
		return ""
	case '[':
		return "it is an array"
	case '"':
		return "it is a string"
	case 't', 'f':
		return "it is a boolean"
	case 'n':
		return "it is null"
	default:
		return "it is a number"
	}
}

func pluralize(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// sendProgress draws a bar on stderr when it is a terminal: the share of the
// input read and an ETA when its size is known, the events sent and their
// rate always.
type sendProgress struct {
	p   *mpb.Progress // nil when nothing is drawn
	bar *mpb.Bar
}

func startSendProgress(stderr io.Writer, size int64, events *atomic.Int64) *sendProgress {
	if !isTTY(stderr) {
		return &sendProgress{}
	}
	start := time.Now()
	count := decor.Any(func(decor.Statistics) string {
		return strconv.FormatInt(events.Load(), 10) + " events"
	}, decor.WCSyncSpaceR)
	speed := decor.Any(func(decor.Statistics) string {
		return fmt.Sprintf("%.0f events/s", float64(events.Load())/time.Since(start).Seconds())
	}, decor.WCSyncSpace)
	p := mpb.New(mpb.WithOutput(stderr))
	var bar *mpb.Bar
	if size > 0 {
		bar = p.New(size, mpb.BarStyle(),
			mpb.PrependDecorators(count),
			mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), speed,
				decor.OnComplete(decor.AverageETA(decor.ET_STYLE_GO, decor.WCSyncSpace), "done")))
	} else {
		bar = p.New(0, mpb.SpinnerStyle(), mpb.BarWidth(1),
			mpb.PrependDecorators(count),
			mpb.AppendDecorators(speed, decor.Elapsed(decor.ET_STYLE_GO, decor.WCSyncSpace)))
	}
	return &sendProgress{p: p, bar: bar}
}

// messages is where lines printed while the bar is drawn go: above it.
func (p *sendProgress) messages(stderr io.Writer) io.Writer {
	if p.p == nil {
		return stderr
	}
	return p.p
}

// advance moves the bar by n bytes of input.
func (p *sendProgress) advance(n int) {
	if p.bar != nil {
		p.bar.IncrBy(n)
	}
}

// stop completes the bar, or leaves it where it stopped, and waits until it is drawn.
func (p *sendProgress) stop(complete bool) {
	if p.p == nil {
		return
	}
	if complete {
		p.bar.SetTotal(-1, true)
	} else {
		p.bar.Abort(false)
	}
	p.p.Wait()
}

func isTTY(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
