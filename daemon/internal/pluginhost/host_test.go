package pluginhost

import (
	"bytes"
	"context"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"trackd.dev/trackd/sdk/destinationtest"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

// A setting named like a secret never reaches the log or an error, whatever
// the plugin writes.
func TestSecretsAreMasked(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	bin := destinationtest.Build(t, "trackd.dev/trackd/daemon/internal/testplugins/faulty")
	h := New(Spec{ID: "x", Path: bin, Dir: t.TempDir(), Settings: map[string]any{
		"out":            "out.txt",
		"fail_configure": "the api token s3cr3t-t0ken is wrong",
		"auth":           map[string]any{"api_token": "s3cr3t-t0ken"},
	}}, log, nil)
	defer h.Close()
	err := h.Start(context.Background())
	if err == nil {
		t.Fatal("Configure did not fail")
	}
	if strings.Contains(err.Error()+logs.String(), "s3cr3t-t0ken") {
		t.Errorf("the secret leaked: %v\n%s", err, logs.String())
	}
	if !strings.Contains(err.Error(), "the api token xxxxx is wrong") {
		t.Errorf("error %q, want the secret masked", err)
	}
}

func TestSecretsReplacer(t *testing.T) {
	r := secretsReplacer(map[string]any{
		"token": "abcd1234", "api_secret": "abcd1234efgh", "url": "https://example.com",
		"nested": map[string]any{"Password": "hunter22"}, "short_key": "ab",
		"dsn":     "postgres://u:pw@db/x",
		"headers": map[string]any{"Authorization": "Bearer zzzz"},
		"other":   map[string]any{"auth_header": "Basic yyyy", "name": "visible"},
	}, []string{"dsn", "headers", "other.auth_header"})
	got := r.Replace("abcd1234efgh abcd1234 hunter22 https://example.com ab postgres://u:pw@db/x Bearer zzzz Basic yyyy visible")
	if want := "xxxxx xxxxx xxxxx https://example.com ab xxxxx xxxxx xxxxx visible"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if secretsReplacer(map[string]any{"url": "x"}, nil) != nil {
		t.Error("a replacer with nothing to mask")
	}
}

// A plugin runs with GOMAXPROCS=1 and GOGC=200 unless trackd's environment
// sets them.
func TestPluginRuntime(t *testing.T) {
	bin := destinationtest.Build(t, "trackd.dev/trackd/daemon/internal/testplugins/faulty")
	settings := func() string {
		h := New(Spec{ID: "x", Path: bin, Dir: t.TempDir(), Settings: map[string]any{"fail_configure": "runtime: procs={procs} gogc={gogc}"}}, slog.New(slog.DiscardHandler), nil)
		defer h.Close()
		err := h.Start(context.Background())
		if err == nil {
			t.Fatal("Start succeeded; the plugin was told to fail Configure")
		}
		_, after, _ := strings.Cut(err.Error(), "runtime: ")
		return after
	}
	for _, key := range []string{"GOMAXPROCS", "GOGC"} {
		t.Setenv(key, "")
		if err := os.Unsetenv(key); err != nil {
			t.Fatal(err)
		}
	}
	if got := settings(); got != "procs=1 gogc=200" {
		t.Errorf("with GOMAXPROCS and GOGC unset the plugin ran with %s, want procs=1 gogc=200", got)
	}
	t.Setenv("GOMAXPROCS", "2")
	t.Setenv("GOGC", "50")
	if got := settings(); got != "procs=2 gogc=50" {
		t.Errorf("with GOMAXPROCS=2 and GOGC=50 set the plugin ran with %s, want procs=2 gogc=50", got)
	}
}

// A pinned checksum runs the binary that has it, and refuses any other,
// naming the key.
func TestPinnedChecksum(t *testing.T) {
	bin := destinationtest.Build(t, "trackd.dev/trackd/daemon/internal/testplugins/faulty")
	sum, err := hex.DecodeString(FileSHA256(bin))
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]any{"out": filepath.Join(t.TempDir(), "out.txt")}
	right := New(Spec{ID: "x", Path: bin, Dir: t.TempDir(), Settings: settings, SHA256: sum}, slog.New(slog.DiscardHandler), nil)
	defer right.Close()
	if err := right.Start(context.Background()); err != nil {
		t.Fatalf("the binary with the pinned checksum did not start: %v", err)
	}
	wrongSum := bytes.Clone(sum)
	wrongSum[0] ^= 0xff
	wrong := New(Spec{ID: "x", Path: bin, Dir: t.TempDir(), Settings: settings, SHA256: wrongSum}, slog.New(slog.DiscardHandler), nil)
	defer wrong.Close()
	err = wrong.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "destinations.x.sha256") || !strings.Contains(err.Error(), FileSHA256(bin)) {
		t.Errorf("a binary whose checksum is not the pinned one: %v; want an error naming destinations.x.sha256 and the binary's checksum", err)
	}
}
