// Command tracegc lines up the events of BenchmarkEndToEnd's latency run with
// the daemon's garbage collections: it reads an execution trace of the daemon
// and the no-op plugins' latency files that TRACKD_BENCH_PROFILE keeps, and
// prints the latency of the events whose way from publish to plugin overlapped
// a GC mark phase, of those published in the 100 ms after one, and of the
// others, then a line per 50 ms of
// publish time (median and worst latency, the daemon's goroutines' share of
// the CPUs, and G while a mark ran).
//
//	cd tools/tracegc && go run . /tmp/prof/embedded.trace /tmp/prof/embedded.latency-*.txt
//
// It is a module of its own so that trackd does not depend on
// golang.org/x/exp/trace, whose API is not stable.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/exp/trace"
)

const (
	bucket    = 50_000  // µs
	afterMark = 100_000 // µs
)

// span is a stretch of wall-clock time in Unix µs.
type span struct{ from, to int64 }

func (s span) overlaps(o span) bool { return s.from < o.to && o.from < s.to }

// sample is one event of a latency file.
type sample struct {
	path    span // publish → plugin
	latency int64
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: tracegc TRACE LATENCY-FILE...")
		os.Exit(2)
	}
	marks, busy, err := readTrace(os.Args[1])
	if err != nil {
		fail(err)
	}
	if len(marks) == 0 {
		fail(errors.New("the trace holds no GC mark phase"))
	}
	samples, err := readLatencies(os.Args[2:])
	if err != nil {
		fail(err)
	}
	inMark := func(s span) bool {
		return slices.ContainsFunc(marks, s.overlaps)
	}
	traced := span{marks[0].from, marks[len(marks)-1].to}
	// An event published just after a mark may wait behind the events the
	// mark held up: those published within afterMark of one are told apart.
	var during, after, outside []int64
	for _, s := range samples {
		if !s.path.overlaps(traced) {
			continue
		}
		switch {
		case inMark(s.path):
			during = append(during, s.latency)
		case inMark(span{s.path.from - afterMark, s.path.from}):
			after = append(after, s.latency)
		default:
			outside = append(outside, s.latency)
		}
	}
	every := "once"
	if len(marks) > 1 {
		every = fmt.Sprintf("one every %.0f ms", float64(marks[len(marks)-1].from-marks[0].from)/float64(len(marks)-1)/1000)
	}
	fmt.Printf("%d GC mark phases, %.0f ms on average, %s\n", len(marks), average(marks)/1000, every)
	fmt.Printf("events overlapping a mark:          %s\n", summary(during))
	fmt.Printf("published within %3d ms after one:  %s\n", afterMark/1000, summary(after))
	fmt.Printf("the others:                         %s\n", summary(outside))

	t0 := samples[0].path.from
	byBucket := map[int64][]int64{}
	for _, s := range samples {
		k := (s.path.from - t0) / bucket
		byBucket[k] = append(byBucket[k], s.latency)
	}
	for k := int64(0); k <= (samples[len(samples)-1].path.from-t0)/bucket; k++ {
		l := byBucket[k]
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		b := span{t0 + k*bucket, t0 + (k+1)*bucket}
		var run int64
		for t := b.from / 10_000; t < b.to/10_000; t++ {
			run += busy[t]
		}
		mark := ""
		if inMark(b) {
			mark = "G"
		}
		fmt.Printf("%6.2fs %5d events p50 %6.1f max %6.1f ms  cpus %.2f %s\n", float64(k*bucket)/1e6, len(l), float64(l[len(l)/2])/1000, float64(l[len(l)-1])/1000, float64(run)/bucket, mark)
	}
}

// readTrace returns the trace's GC mark phases and, per 10 ms of wall-clock
// time (Unix µs / 10,000), how many µs the process's goroutines ran.
func readTrace(path string) (marks []span, busy map[int64]int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	r, err := trace.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, nil, err
	}
	busy = map[int64]int64{}
	running := map[trace.GoID]trace.Time{}
	var markFrom trace.Time = -1
	var runs, markSpans [][2]trace.Time
	var wallOffset int64 // Unix µs = trace ns / 1000 + wallOffset
	clocked := false
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		switch ev.Kind() {
		case trace.EventSync:
			if cs := ev.Sync().ClockSnapshot; cs != nil && !clocked {
				wallOffset, clocked = cs.Wall.UnixMicro()-int64(cs.Trace)/1000, true
			}
		case trace.EventRangeBegin:
			if strings.HasPrefix(ev.Range().Name, "GC concurrent mark") {
				markFrom = ev.Time()
			}
		case trace.EventRangeEnd:
			if strings.HasPrefix(ev.Range().Name, "GC concurrent mark") && markFrom >= 0 {
				markSpans = append(markSpans, [2]trace.Time{markFrom, ev.Time()})
				markFrom = -1
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			g := st.Resource.Goroutine()
			from, to := st.Goroutine()
			if to == trace.GoRunning {
				running[g] = ev.Time()
			} else if start, ok := running[g]; ok && from == trace.GoRunning {
				runs = append(runs, [2]trace.Time{start, ev.Time()})
				delete(running, g)
			}
		}
	}
	if !clocked {
		return nil, nil, errors.New("the trace has no wall-clock snapshot (it needs Go 1.25 or later)")
	}
	wall := func(t trace.Time) int64 { return int64(t)/1000 + wallOffset }
	for _, m := range markSpans {
		marks = append(marks, span{wall(m[0]), wall(m[1])})
	}
	for _, run := range runs {
		for a, b := wall(run[0]), wall(run[1]); a < b; {
			t := a / 10_000
			end := min(b, (t+1)*10_000)
			busy[t] += end - a
			a = end
		}
	}
	return marks, busy, nil
}

// readLatencies reads the no-op plugin's lines: µs since publish, µs since
// stored, and the Unix µs the plugin got the event.
func readLatencies(paths []string) ([]sample, error) {
	var samples []sample
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		for l := range strings.Lines(string(data)) {
			f := strings.Fields(l)
			if len(f) != 3 {
				return nil, fmt.Errorf("%s: %q: want three numbers", p, l)
			}
			latency, err1 := strconv.ParseInt(f[0], 10, 64)
			got, err2 := strconv.ParseInt(f[2], 10, 64)
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			samples = append(samples, sample{path: span{got - latency, got}, latency: latency})
		}
	}
	if len(samples) == 0 {
		return nil, errors.New("no latency samples")
	}
	slices.SortFunc(samples, func(a, b sample) int { return int(a.path.from - b.path.from) })
	return samples, nil
}

func summary(ms []int64) string {
	if len(ms) == 0 {
		return "none"
	}
	slices.Sort(ms)
	return fmt.Sprintf("%6d, p50 %5.1f ms, p99 %5.1f ms", len(ms), float64(ms[len(ms)/2])/1000, float64(ms[len(ms)*99/100])/1000)
}

func average(spans []span) float64 {
	var total int64
	for _, s := range spans {
		total += s.to - s.from
	}
	return float64(total) / float64(len(spans))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tracegc:", err)
	os.Exit(1)
}
