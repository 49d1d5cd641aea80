package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/host"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const pkg = "trackd.dev/trackd/plugins/file"

func events(jsons ...string) []sdk.Event {
	batch := make([]sdk.Event, len(jsons))
	for i, j := range jsons {
		batch[i] = sdk.Event{JSON: []byte(j), MessageID: "m" + string(rune('0'+i))}
	}
	return batch
}

func TestAppendsJSONLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "events.jsonl")
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"path": path})

	batches := [][]sdk.Event{
		events(`{"event":"A","messageId":"1","properties":{"revenue":9.99}}`, `{"event":"B","messageId":"2"}`),
		events(`{"event":"C","messageId":"3","properties":{"name":"Zoë \u2603"}}`),
	}
	for _, b := range batches {
		for i, r := range destinationtest.Deliver(t, c, b) {
			if r.Status != sdk.StatusOK {
				t.Errorf("event %d: %v (%s), want ok", i, r.Status, r.Reason)
			}
		}
	}

	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"event":"A","messageId":"1","properties":{"revenue":9.99}}` + "\n" +
		`{"event":"B","messageId":"2"}` + "\n" +
		`{"event":"C","messageId":"3","properties":{"name":"Zoë \u2603"}}` + "\n"
	if string(got) != want {
		t.Errorf("file holds\n%s\nwant\n%s", got, want)
	}
}

func TestAppendsToExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	if err := os.WriteFile(path, []byte("{\"event\":\"old\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"path": path})
	destinationtest.Deliver(t, c, events(`{"event":"new"}`))

	got, _ := os.ReadFile(path)
	if want := "{\"event\":\"old\"}\n{\"event\":\"new\"}\n"; string(got) != want {
		t.Errorf("file holds %q, want %q", got, want)
	}
}

func TestKeepsOneEventPerLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"path": path})
	results := destinationtest.Deliver(t, c, events("{\n  \"event\": \"Pretty\"\n}", "", "{\n oops", `{"event":"Fine"}`))

	want := []sdk.Status{sdk.StatusOK, sdk.StatusDrop, sdk.StatusDrop, sdk.StatusOK}
	for i, r := range results {
		if r.Status != want[i] {
			t.Errorf("event %d: %v (%s), want %v", i, r.Status, r.Reason, want[i])
		}
	}
	got, _ := os.ReadFile(path)
	if want := "{\"event\":\"Pretty\"}\n{\"event\":\"Fine\"}\n"; string(got) != want {
		t.Errorf("file holds %q, want %q", got, want)
	}
}

func TestRelativePathFollowsWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(destinationtest.Build(t, pkg))
	cmd.Dir = dir // the daemon sets it to its config file's directory
	c, err := host.Start(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	if err := destinationtest.Configure(t, c, map[string]any{"path": "data/events.jsonl"}); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	destinationtest.Deliver(t, c, events(`{"event":"A"}`))

	got, err := os.ReadFile(filepath.Join(dir, "data", "events.jsonl"))
	if err != nil || string(got) != "{\"event\":\"A\"}\n" {
		t.Errorf("data/events.jsonl holds %q (%v), want the event", got, err)
	}
}

func TestWriteErrorRetriesBatch(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("needs /dev/full, which fails every write")
	}
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"path": "/dev/full"})
	for i, r := range destinationtest.Deliver(t, c, events(`{"event":"A"}`, `{"event":"B"}`)) {
		if r.Status != sdk.StatusRetry || !strings.Contains(r.Reason, "no space left on device") {
			t.Errorf("event %d: %v (%s), want retry naming the write error", i, r.Status, r.Reason)
		}
	}
}

func TestConfigureErrors(t *testing.T) {
	bin := destinationtest.Build(t, pkg)
	dir := t.TempDir()
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"missing path", nil, "path is empty"},
		{"unknown setting", map[string]any{"path": filepath.Join(dir, "x"), "paht": "x"}, `unknown setting "paht"`},
		{"path is a directory", map[string]any{"path": dir}, "is a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			destinationtest.CheckConfigureError(t, bin, tt.settings, tt.want)
		})
	}
}

func TestSampleConfig(t *testing.T) {
	// The sample's relative path lands in a temporary directory.
	destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, pkg))
}

// The tests below that need to count, hold or fail fsyncs use File directly,
// with its syncFile in place of (*os.File).Sync.

func configure(t testing.TB, p *File, path string) {
	t.Helper()
	s, err := sdk.NewSettings(map[string]any{"path": path})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Configure(context.Background(), s); err != nil {
		t.Fatalf("Configure: %v", err)
	}
}

// line is one event of deliverConcurrently: the i-th of batch b of writer g.
type line struct {
	G, B, I int
	Pad     string
}

// batchLen is the number of events in batch b of writer g: batches vary in
// size so that a line out of place shows.
func batchLen(g, b int) int { return 1 + (g+b)%5 }

// deliverConcurrently has writers goroutines each deliver batches batches,
// one after another, through deliver. It fails the test for any result that
// is not ok and returns how many calls it made.
func deliverConcurrently(t *testing.T, writers, batches int, deliver func([]sdk.Event) ([]sdk.Result, error)) int {
	t.Helper()
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for b := range batches {
				batch := make([]sdk.Event, batchLen(g, b))
				for i := range batch {
					js, _ := json.Marshal(line{G: g, B: b, I: i, Pad: strings.Repeat("x", 100*i)})
					batch[i] = sdk.Event{JSON: js, MessageID: fmt.Sprintf("m%d-%d-%d", g, b, i)}
				}
				results, err := deliver(batch)
				if err != nil {
					t.Errorf("writer %d, batch %d: %v", g, b, err)
					return
				}
				for i, r := range results {
					if r.Status != sdk.StatusOK {
						t.Errorf("writer %d, batch %d, event %d: %v (%s), want ok", g, b, i, r.Status, r.Reason)
					}
				}
			}
		})
	}
	wg.Wait()
	return writers * batches
}

// checkLines checks that path holds every line of deliverConcurrently once,
// intact, each batch's lines together and in order, and each writer's
// batches in order.
func checkLines(t *testing.T, path string, writers, batches int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	nextBatch := make([]int, writers)
	var prev line
	n := 0
	for sc := bufio.NewScanner(bytes.NewReader(data)); sc.Scan(); n++ {
		var l line
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.G < 0 || l.G >= writers || l.Pad != strings.Repeat("x", 100*l.I) {
			t.Fatalf("line %d is not one whole event: %.80q (%v)", n+1, sc.Text(), err)
		}
		switch {
		case l.I == 0 && n > 0 && prev.I+1 < batchLen(prev.G, prev.B):
			t.Fatalf("line %d (%+v) comes before batch %d of writer %d is complete", n+1, l, prev.B, prev.G)
		case l.I == 0 && l.B != nextBatch[l.G]:
			t.Fatalf("line %d: writer %d's batch %d, want its batch %d", n+1, l.G, l.B, nextBatch[l.G])
		case l.I == 0:
			nextBatch[l.G]++
		case l.G != prev.G || l.B != prev.B || l.I != prev.I+1:
			t.Fatalf("line %d (%+v) follows %+v: batches interleaved", n+1, l, prev)
		}
		prev = l
	}
	if n > 0 && prev.I+1 < batchLen(prev.G, prev.B) {
		t.Fatalf("the last batch is cut short at %+v", prev)
	}
	for g, b := range nextBatch {
		if b != batches {
			t.Errorf("writer %d: %d batches in the file, want %d", g, b, batches)
		}
	}
}

// waitForWriters waits until the file at path holds lines of n distinct
// writers of deliverConcurrently. It gives up (failing the test) only after
// a minute, so that a plugin holding its lock across fsync fails rather than
// hangs.
func waitForWriters(t *testing.T, path string, n int) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Error(err)
			return
		}
		seen := make(map[int]bool)
		for l := range bytes.Lines(data) {
			var ln line
			if json.Unmarshal(l, &ln) == nil {
				seen[ln.G] = true
			}
		}
		if len(seen) >= n {
			return
		}
	}
	t.Errorf("no %d writers wrote while an fsync was under way", n)
}

func TestConcurrentCallsAllLand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	c := destinationtest.Start(t, destinationtest.Build(t, pkg), map[string]any{"path": path})
	deliverConcurrently(t, 8, 25, func(batch []sdk.Event) ([]sdk.Result, error) {
		return c.Deliver(t.Context(), batch)
	})
	checkLines(t, path, 8, 25)
}

func TestConcurrentCallsShareFsyncs(t *testing.T) {
	const writers, batches = 8, 50
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var syncs atomic.Int64
	p := &File{syncFile: func(f *os.File) error {
		// Holding the first fsync until every writer has written makes
		// the next fsync cover at least writers-1 calls.
		if syncs.Add(1) == 1 {
			waitForWriters(t, path, writers)
		}
		return f.Sync()
	}}
	configure(t, p, path)

	calls := deliverConcurrently(t, writers, batches, func(batch []sdk.Event) ([]sdk.Result, error) {
		return p.Deliver(context.Background(), batch), nil
	})
	checkLines(t, path, writers, batches)
	t.Logf("%d calls, %d fsyncs", calls, syncs.Load())
	if n := syncs.Load(); n > int64(calls-(writers-2)) {
		t.Errorf("%d calls made %d fsyncs, want at most %d", calls, n, calls-(writers-2))
	}
}

func TestFailedFsyncRetriesEveryCallItCovered(t *testing.T) {
	const writers = 8
	path := filepath.Join(t.TempDir(), "events.jsonl")
	var syncs atomic.Int64
	p := &File{syncFile: func(f *os.File) error {
		switch syncs.Add(1) {
		case 1: // covers the first call only; the others write meanwhile
			waitForWriters(t, path, writers)
		case 2: // covers all the others
			return errors.New("sync: input/output error")
		}
		return f.Sync()
	}}
	configure(t, p, path)

	var ok, retried atomic.Int64
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			js := fmt.Sprintf(`{"G":%d}`, g)
			statuses := make(map[sdk.Status]int)
			for _, r := range p.Deliver(context.Background(), events(js, js)) {
				statuses[r.Status]++
				if r.Status == sdk.StatusRetry && !strings.Contains(r.Reason, "input/output error") {
					t.Errorf("writer %d: retry (%s), want the reason to name the fsync error", g, r.Reason)
				}
			}
			switch {
			case statuses[sdk.StatusOK] == 2:
				ok.Add(1)
			case statuses[sdk.StatusRetry] == 2:
				retried.Add(1)
			default:
				t.Errorf("writer %d: results %v, want both ok or both retry", g, statuses)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || retried.Load() != writers-1 {
		t.Errorf("%d calls ok and %d retried, want 1 and %d", ok.Load(), retried.Load(), writers-1)
	}
	if n := syncs.Load(); n != 2 {
		t.Errorf("%d fsyncs, want 2 (none after the failed one, which must not answer for its calls)", n)
	}

	// A call that writes after the failure is answered by its own fsync.
	for i, r := range p.Deliver(context.Background(), events(`{"event":"after"}`)) {
		if r.Status != sdk.StatusOK {
			t.Errorf("event %d after the failure: %v (%s), want ok", i, r.Status, r.Reason)
		}
	}
}

func TestConfigureWaitsForCallsOnTheOldFile(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath := filepath.Join(dir, "old.jsonl"), filepath.Join(dir, "new.jsonl")
	held, release := make(chan string, 1), make(chan struct{})
	var syncs atomic.Int64
	p := &File{syncFile: func(f *os.File) error {
		if syncs.Add(1) == 1 {
			held <- f.Name()
			<-release
		}
		return f.Sync() // fails if Configure closed f
	}}
	configure(t, p, oldPath)

	delivered := make(chan []sdk.Result)
	go func() { delivered <- p.Deliver(context.Background(), events(`{"event":"old"}`)) }()
	select {
	case name := <-held:
		if name != oldPath {
			t.Errorf("fsync of %s, want %s", name, oldPath)
		}
	case r := <-delivered:
		t.Fatalf("Deliver answered %v without an fsync", r)
	}
	configured := make(chan struct{})
	go func() {
		defer close(configured)
		s, _ := sdk.NewSettings(map[string]any{"path": newPath})
		if err := p.Configure(context.Background(), s); err != nil {
			t.Errorf("Configure: %v", err)
		}
	}()
	// Configure opens the new file before it swaps; give it a moment more
	// to (wrongly) close the old one.
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err := os.Stat(newPath); err == nil {
			break
		}
	}
	select {
	case <-configured:
		t.Error("Configure returned while a call waited for the old file's fsync")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)

	for i, r := range <-delivered {
		if r.Status != sdk.StatusOK {
			t.Errorf("event %d on the old file: %v (%s), want ok", i, r.Status, r.Reason)
		}
	}
	<-configured
	destinationtest.CheckResults(t, p.Deliver(context.Background(), events(`{"event":"new"}`)), []sdk.Result{sdk.OK()})
	for path, want := range map[string]string{oldPath: "{\"event\":\"old\"}\n", newPath: "{\"event\":\"new\"}\n"} {
		if got, _ := os.ReadFile(path); string(got) != want {
			t.Errorf("%s holds %q, want %q", filepath.Base(path), got, want)
		}
	}
}

func TestDoesNotFsyncNonRegularFiles(t *testing.T) {
	var syncs atomic.Int64
	p := &File{syncFile: func(f *os.File) error {
		syncs.Add(1)
		return f.Sync()
	}}
	configure(t, p, os.DevNull)
	destinationtest.CheckResults(t, p.Deliver(context.Background(), events(`{"event":"A"}`)), []sdk.Result{sdk.OK()})
	if n := syncs.Load(); n != 0 {
		t.Errorf("%d fsyncs of %s, want none", n, os.DevNull)
	}
}

// BenchmarkFileDeliver measures concurrent calls of 100 events of about 1 KB
// each into a file in the temporary directory. Its fsyncs are real, so
// events/s depends on the disk (and is noisy on a shared one); calls/fsync
// shows the grouping.
func BenchmarkFileDeliver(b *testing.B) {
	batch := make([]sdk.Event, 100)
	for i := range batch {
		id := fmt.Sprintf("m%03d", i)
		js := fmt.Sprintf(`{"event":"Bench","messageId":%q,"properties":{"pad":%q}}`, id, strings.Repeat("x", 950))
		batch[i] = sdk.Event{JSON: []byte(js), MessageID: id}
	}
	for _, inFlight := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("inflight=%d", inFlight), func(b *testing.B) {
			var syncs atomic.Int64
			p := &File{syncFile: func(f *os.File) error {
				syncs.Add(1)
				return f.Sync()
			}}
			configure(b, p, filepath.Join(b.TempDir(), "events.jsonl"))
			b.SetBytes(int64(len(batch) * (len(batch[0].JSON) + 1)))
			b.ResetTimer()
			var calls atomic.Int64
			var wg sync.WaitGroup
			for range inFlight {
				wg.Go(func() {
					for calls.Add(1) <= int64(b.N) {
						for _, r := range p.Deliver(context.Background(), batch) {
							if r.Status != sdk.StatusOK {
								b.Errorf("%v (%s), want ok", r.Status, r.Reason)
								return
							}
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.N)/float64(max(syncs.Load(), 1)), "calls/fsync")
		})
	}
}
