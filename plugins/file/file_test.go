package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
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
	c, err := sdk.Start(cmd, nil)
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
