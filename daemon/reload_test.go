package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/sdk/destinationtest"
)

// SIGHUP applies a new configuration: added destinations start, removed ones
// stop and lose their consumer, changed ones restart their plugin, and a bad
// file is refused while the running configuration keeps working.
func TestReload(t *testing.T) {
	fileBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/file")
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	fileDest := func(id, out string) string {
		return fmt.Sprintf("[destinations.%s]\nplugin = %q\n[destinations.%s.settings]\npath = %q\n", id, fileBin, id, out)
	}
	d := startDaemon(t, fileDest("a", path("a.jsonl")))
	_, js := connectJS(t, d.natsURL)
	send := func(id string) {
		t.Helper()
		if _, err := js.Publish(t.Context(), "track", fmt.Appendf(nil, `{"event":"E","userId":"u","messageId":%q}`, id)); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(file string) []string {
		var out []string
		for _, l := range fileLines(t, path(file)) {
			out = append(out, l["messageId"].(string))
		}
		return out
	}
	reload := func(destinations string, wantLog string) {
		t.Helper()
		d.writeConfig(t, destinations)
		before := strings.Count(d.logs.String(), wantLog)
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the log to say "+wantLog, func() bool { return strings.Count(d.logs.String(), wantLog) > before })
	}

	send("1")
	waitFor(t, "event 1 in a", func() bool { return slices.Equal(ids("a.jsonl"), []string{"1"}) })

	// Remove a, add b.
	reload(fileDest("b", path("b.jsonl")), "configuration reloaded")
	send("2")
	waitFor(t, "event 2 in b", func() bool { return slices.Equal(ids("b.jsonl"), []string{"2"}) })
	if got := ids("a.jsonl"); !slices.Equal(got, []string{"1"}) {
		t.Errorf("a removed, yet it has %v", got)
	}
	if _, err := js.Consumer(t.Context(), "TRACK_ROUTED", "dest_a"); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		t.Errorf("the removed destination's consumer: %v, want it deleted", err)
	}

	// Change b's settings: its plugin restarts writing elsewhere.
	reload(fileDest("b", path("c.jsonl")), "configuration reloaded")
	send("3")
	waitFor(t, "event 3 in c", func() bool { return slices.Equal(ids("c.jsonl"), []string{"3"}) })

	// A bad file is refused, naming the key; so is a file whose settings the
	// plugin refuses. Either way b keeps delivering to c.
	reload(strings.Replace(fileDest("b", path("d.jsonl")), "\n[", "\nbatchsize = 5\n[", 1), "configuration reload refused")
	if !strings.Contains(d.logs.String(), "destinations.b.batchsize") {
		t.Errorf("the refusal does not name the key destinations.b.batchsize")
	}
	reload(fileDest("b", path("d.jsonl"))+"colour = \"blue\"\n", "configuration reload refused")
	if !strings.Contains(d.logs.String(), `destinations.b.settings: unknown setting \"colour\"`) {
		t.Errorf("the refusal does not name the setting colour")
	}
	// So is a type the plugin does not take (the faulty plugin takes track alone).
	reload(fileDest("b", path("c.jsonl"))+fmt.Sprintf("[destinations.f]\nplugin = %q\ntypes = [\"track\", \"page\"]\n[destinations.f.settings]\nout = %q\n",
		destinationtest.Build(t, "trackd.dev/trackd/daemon/internal/testplugins/faulty"), path("f.txt")), "configuration reload refused")
	if !strings.Contains(d.logs.String(), `destinations.f.types: the plugin`) || !strings.Contains(d.logs.String(), `does not take \"page\" calls`) {
		t.Errorf("the refusal does not name destinations.f.types")
	}
	send("4")
	waitFor(t, "event 4 in c", func() bool { return slices.Equal(ids("c.jsonl"), []string{"3", "4"}) })
	if got := ids("b.jsonl"); !slices.Equal(got, []string{"2"}) {
		t.Errorf("b.jsonl = %v after the settings changed", got)
	}
	if got := ids("d.jsonl"); len(got) != 0 {
		t.Errorf("a refused configuration delivered %v", got)
	}
}

// run --watch reloads when the file changes, as SIGHUP does.
func TestWatchReloads(t *testing.T) {
	fileBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/file")
	dir := t.TempDir()
	dest := func(out string) string {
		return fmt.Sprintf("[destinations.f]\nplugin = %q\n[destinations.f.settings]\npath = %q\n", fileBin, filepath.Join(dir, out))
	}
	d := newDaemon(t, destinationtest.Build(t, "trackd.dev/trackd/daemon"), dest("before.jsonl"))
	d.args = []string{"--watch"}
	d.start(t, "/readyz")
	d.writeConfig(t, dest("after.jsonl"))
	waitFor(t, "the watcher to reload", func() bool { return strings.Contains(d.logs.String(), "configuration reloaded") })
	publishBody(t, d.natsURL, `{"event":"E","userId":"u","messageId":"w1"}`)
	waitFor(t, "the event in after.jsonl", func() bool { return len(fileLines(t, filepath.Join(dir, "after.jsonl"))) == 1 })
}

// A destination removed from the file while the daemon was stopped keeps its
// consumer, since another daemon may still deliver from it; the daemon says
// so at start, naming the command that deletes it.
func TestLeftOverConsumerWarned(t *testing.T) {
	fileBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/file")
	dir := t.TempDir()
	dest := func(id string) string {
		return fmt.Sprintf("[destinations.%s]\nplugin = %q\n[destinations.%s.settings]\npath = %q\n", id, fileBin, id, filepath.Join(dir, id+".jsonl"))
	}
	d := startDaemon(t, dest("kept")+dest("gone"))
	const warning = "a destination's consumer is left on TRACK_ROUTED"
	if strings.Contains(d.logs.String(), warning) {
		t.Fatalf("warned of a left-over consumer with every destination enabled:\n%s", d.logs.String())
	}
	if code := d.stop(t); code != 0 {
		t.Fatalf("stopped with exit code %d", code)
	}
	d.writeConfig(t, dest("kept"))
	from := len(d.logs.String())
	d.start(t, "/readyz")
	var warned []string
	for line := range strings.Lines(d.logs.String()[from:]) {
		if strings.Contains(line, warning) {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], `"destination":"gone"`) || !strings.Contains(warned[0], "nats consumer rm TRACK_ROUTED dest_gone") {
		t.Errorf("warnings %q; want one, naming dest_gone and how to delete it", warned)
	}
	_, js := connectJS(t, d.natsURL)
	if _, err := js.Consumer(t.Context(), "TRACK_ROUTED", "dest_gone"); err != nil {
		t.Errorf("the left-over consumer: %v, want it kept", err)
	}
}
