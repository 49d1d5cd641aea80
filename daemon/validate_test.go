package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"trackd.dev/trackd/daemon/internal/pluginhost"
	"trackd.dev/trackd/sdk/destinationtest"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestValidate(t *testing.T) {
	fileBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/file")
	hookBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	tests := []struct {
		name     string
		config   string
		args     []string
		code     int
		stdout   []string
		stderr   string
		notInOut string
	}{
		{
			name: "all ok",
			config: fmt.Sprintf(`
[destinations.file]
plugin = %q
[destinations.file.settings]
path = "events.jsonl"
[destinations.off]
plugin = "not-built"
enabled = false
`, fileBin),
			code:   0,
			stdout: []string{"file: ok, plugin " + fileBin + " sha256 " + pluginhost.FileSHA256(fileBin) + " (pin it with sha256)\n"},
		},
		{
			name: "a plugin refuses its settings",
			config: fmt.Sprintf(`
[destinations.file]
plugin = %q
[destinations.file.settings]
path = "events.jsonl"
[destinations.hook]
plugin = %q
[destinations.hook.settings]
url = "ftp://example.com"
secret = "hunter2"
`, fileBin, hookBin),
			code:     1,
			stdout:   []string{"file: ok, plugin ", "hook: config.toml: destinations.hook.settings: ", "url"},
			notInOut: "hunter2",
		},
		{
			name:   "an unknown key",
			config: "[ingest]\nstreem = \"X\"\n",
			code:   1,
			stderr: "config.toml: unknown key ingest.streem",
		},
		{
			name:     "the tracking API",
			config:   "[http]\nlisten = \"127.0.0.1:8088\"\n[http.write_keys]\nweb = \"s3cret-key\"\nios = \"other-key\"\n",
			code:     0,
			stdout:   []string{"http: ok, the tracking API on 127.0.0.1:8088 for sources ios, web\n"},
			notInOut: "s3cret-key",
		},
		{
			name:   "the tracking API without a write key",
			config: "[http]\nlisten = \"127.0.0.1:8088\"\n",
			code:   1,
			stderr: "config.toml: http.write_keys is empty",
		},
		{
			name:   "the dedupe state at the expected rate",
			config: "[dedupe]\nwindow = \"12h\"\n",
			args:   []string{"--expected-rate", "1000"},
			code:   0,
			stdout: []string{"dedupe: at 1000 events/s, 43200000 messageIds per bucket (1 bucket(s), 1 replica(s)): plan for about 16.1 GiB", "warning: over 1000000 messageIds per bucket", "Raise dedupe.shards to 44"},
		},
		{
			name:     "a rate the dedupe state holds",
			config:   "[dedupe]\nwindow = \"1h\"\nshards = 2\n",
			args:     []string{"--expected-rate", "100"},
			code:     0,
			stdout:   []string{"dedupe: at 100 events/s, 180000 messageIds per bucket (2 bucket(s), 1 replica(s)): plan for about 137 MiB of NATS server memory in all; repeats caught within 1h0m0s"},
			notInOut: "warning",
		},
		{
			name:   "a rate over max_keys",
			config: "[dedupe]\nwindow = \"12h\"\nmax_keys = 360000\n",
			args:   []string{"--expected-rate", "100"},
			code:   0,
			stdout: []string{"360000 messageIds per bucket", "repeats caught within 1h0m0s", "over dedupe.max_keys (360000)"},
		},
		{
			name: "a type the plugin does not take",
			config: fmt.Sprintf(`
[destinations.file]
plugin = %q
types = ["track", "page"]
[destinations.file.settings]
path = "events.jsonl"
[destinations.faulty]
plugin = %q
types = ["track", "identify"]
[destinations.faulty.settings]
out = "out.txt"
`, fileBin, destinationtest.Build(t, "trackd.dev/trackd/daemon/internal/testplugins/faulty")),
			code:   1,
			stdout: []string{"file: ok, plugin ", "faulty: config.toml: destinations.faulty.types: the plugin", `does not take "identify" calls; it takes track`},
		},
		{
			name: "pinned checksums, right and wrong",
			config: fmt.Sprintf(`
[destinations.file]
plugin = %[1]q
sha256 = %[2]q
[destinations.file.settings]
path = "events.jsonl"
[destinations.other]
plugin = %[1]q
sha256 = %[3]q
[destinations.other.settings]
path = "other.jsonl"
`, fileBin, pluginhost.FileSHA256(fileBin), strings.Repeat("0", 64)),
			code:   1,
			stdout: []string{"file: ok, plugin " + fileBin + " sha256 " + pluginhost.FileSHA256(fileBin) + " (pinned)\n", "other: config.toml: destinations.other.sha256: the plugin " + fileBin + " has SHA-256 " + pluginhost.FileSHA256(fileBin) + ", not the one pinned"},
		},
		{
			name:   "a checksum that is not one",
			config: fmt.Sprintf("[destinations.file]\nplugin = %q\nsha256 = \"abc\"\n", fileBin),
			code:   1,
			stderr: "destinations.file.sha256 is not a SHA-256 in hex",
		},
		{
			name:   "an unset variable",
			config: fmt.Sprintf("[destinations.hook]\nplugin = %q\n[destinations.hook.settings]\nurl = \"${TRACKD_TEST_UNSET_URL}\"\n", hookBin),
			code:   1,
			stderr: "destinations.hook.settings.url uses ${TRACKD_TEST_UNSET_URL}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(append([]string{"validate", "--config", writeConfig(t, tt.config)}, tt.args...), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, want := range tt.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout %q does not contain %q", stdout.String(), want)
				}
			}
			if !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tt.stderr)
			}
			if tt.notInOut != "" && strings.Contains(stdout.String()+stderr.String(), tt.notInOut) {
				t.Errorf("output reveals %q", tt.notInOut)
			}
		})
	}
}
