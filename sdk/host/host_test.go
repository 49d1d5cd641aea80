package host_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/destinationtest"
	"trackd.dev/trackd/sdk/host"
)

func TestMain(m *testing.M) { destinationtest.Main(m) }

const testPlugin = "trackd.dev/trackd/sdk/internal/testplugin"

func TestDeliverCarriesEvents(t *testing.T) {
	c := destinationtest.Start(t, destinationtest.Build(t, testPlugin), nil)
	ts := time.Date(2025, 3, 1, 12, 30, 0, 123456789, time.UTC)
	batch := []sdk.Event{
		{JSON: []byte(`{"event":"A"}`), MessageID: "m1", Type: "track", Name: "A", UserID: "u1", Timestamp: ts},
		{JSON: []byte(`{"event":"B"}`), MessageID: "m2", Type: "track", Name: "B", AnonymousID: "a2"},
		{JSON: []byte(`{"groupId":"g"}`), MessageID: "m3", Type: "group", UserID: "u3", GroupID: "g"},
		{JSON: []byte(`{}`), MessageID: "m4", Type: "alias", UserID: "u4", PreviousID: "p4"},
	}
	got, err := c.Deliver(t.Context(), batch)
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	want := []sdk.Result{
		sdk.Drop(`m1|track|A|u1||||2025-03-01T12:30:00.123456789Z|{"event":"A"}`),
		sdk.Drop(`m2|track|B||a2|||0001-01-01T00:00:00Z|{"event":"B"}`),
		sdk.Drop(`m3|group||u3||g||0001-01-01T00:00:00Z|{"groupId":"g"}`),
		sdk.Drop(`m4|alias||u4|||p4|0001-01-01T00:00:00Z|{}`),
	}
	if !slices.Equal(got, want) {
		t.Errorf("Deliver = %+v\nwant %+v", got, want)
	}
}

func TestDeliverRetryAfter(t *testing.T) {
	c := destinationtest.Start(t, destinationtest.Build(t, testPlugin),
		map[string]any{"answer": "retry", "retry_after": "1.5s"})
	got, err := c.Deliver(t.Context(), []sdk.Event{{MessageID: "m1"}})
	if err != nil {
		t.Fatalf("Deliver: %v", err)
	}
	if want := []sdk.Result{sdk.Retry(1500*time.Millisecond, "later")}; !slices.Equal(got, want) {
		t.Errorf("Deliver = %+v, want %+v", got, want)
	}
}

func TestDeliverEmptyBatch(t *testing.T) {
	c := destinationtest.Start(t, destinationtest.Build(t, testPlugin), nil)
	got, err := c.Deliver(t.Context(), nil)
	if err != nil || len(got) != 0 {
		t.Errorf("Deliver(nil) = %v, %v; want no results and no error", got, err)
	}
}

func TestConfigureError(t *testing.T) {
	bin := destinationtest.Build(t, testPlugin)
	tests := []struct {
		name     string
		settings map[string]any
		want     string
	}{
		{"plugin error intact", map[string]any{"fail": "endpoint is empty; set it"}, "endpoint is empty; set it"},
		{"unknown setting", map[string]any{"endpiont": "x"}, `unknown setting "endpiont"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := destinationtest.Launch(t, bin)
			err := destinationtest.Configure(t, c, tt.settings)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Configure error = %v, want exactly %q", err, tt.want)
			}
		})
	}
}

// A plugin's mistakes in Deliver cost the events of that call, with a reason,
// and the plugin stays up.
func TestDeliverPluginMistakesDrop(t *testing.T) {
	bin := destinationtest.Build(t, testPlugin)
	tests := []struct {
		answer string
		want   []sdk.Result
	}{
		{"short", []sdk.Result{
			sdk.Drop("the plugin returned 1 results for a batch of 2 events"),
			sdk.Drop("the plugin returned 1 results for a batch of 2 events"),
		}},
		{"zero", []sdk.Result{sdk.OK(), sdk.Drop("the plugin returned a result with no valid status (Status(0)) for this event")}},
		{"panic", []sdk.Result{
			sdk.Drop("the plugin panicked: testplugin: deliberate panic"),
			sdk.Drop("the plugin panicked: testplugin: deliberate panic"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.answer, func(t *testing.T) {
			var out lines
			c := start(t, bin, &out, map[string]any{"answer": tt.answer})
			for range 2 { // the plugin answers again after its mistake
				got, err := c.Deliver(t.Context(), []sdk.Event{{MessageID: "m1"}, {MessageID: "m2"}})
				if err != nil {
					t.Fatalf("Deliver: %v", err)
				}
				destinationtest.CheckResults(t, got, tt.want)
			}
			if c.Exited() {
				t.Errorf("plugin exited after %s; it should keep running", tt.answer)
			}
			if tt.answer == "panic" {
				out.waitFor(t, "panic in Deliver: testplugin: deliberate panic")
			}
		})
	}
}

func TestConfigureTypes(t *testing.T) {
	bin := destinationtest.Build(t, testPlugin)
	tests := []struct {
		types   []string
		want    []string
		wantErr string
	}{
		{nil, []string{"track"}, ""},
		{[]string{"page", "track", "page"}, []string{"page", "track"}, ""},
		{[]string{"track", "pageview"}, nil, `the plugin says it takes "pageview", which is not a call type (track, identify, page, screen, group, alias)`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.types, ","), func(t *testing.T) {
			c := destinationtest.Launch(t, bin)
			got, err := c.Configure(t.Context(), map[string]any{"types": tt.types})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("Configure = %v, %v; want the error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("Configure = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestSecretsDeclared(t *testing.T) {
	c := destinationtest.Launch(t, destinationtest.Build(t, testPlugin))
	if got := c.Secrets(); !slices.Equal(got, []string{"token"}) {
		t.Errorf("Secrets() = %q, want the one the plugin declared, token", got)
	}
}

func TestClose(t *testing.T) {
	closed := filepath.Join(t.TempDir(), "closed")
	c := destinationtest.Start(t, destinationtest.Build(t, testPlugin), map[string]any{"closed": closed})
	if err := c.Close(t.Context()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b, err := os.ReadFile(closed); err != nil || string(b) != "closed" {
		t.Errorf("the plugin's Close did not run: %q, %v", b, err)
	}
	bad := destinationtest.Start(t, destinationtest.Build(t, testPlugin), map[string]any{"closed": filepath.Join(closed, "x")})
	if err := bad.Close(t.Context()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Close of a plugin whose Close fails = %v, want its error", err)
	}
}

func TestDeliverPassesContext(t *testing.T) {
	var out lines
	c := start(t, destinationtest.Build(t, testPlugin), &out, map[string]any{"answer": "block"})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Deliver(ctx, []sdk.Event{{MessageID: "m1"}})
		done <- err
	}()
	out.waitFor(t, "log: 1 events") // the plugin is inside Deliver
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) && !strings.Contains(err.Error(), "Canceled") {
		t.Errorf("Deliver after cancel = %v, want a cancellation error", err)
	}
	out.waitFor(t, "deliver: context canceled")
}

func TestStderrReachesHostQuietly(t *testing.T) {
	var out lines
	c := start(t, destinationtest.Build(t, testPlugin), &out, nil)
	if _, err := c.Deliver(t.Context(), []sdk.Event{{MessageID: "m1"}}); err != nil {
		t.Fatal(err)
	}
	out.waitFor(t, "stderr: 1 events") // written to os.Stderr, streamed over gRPC
	out.waitFor(t, "log: 1 events")    // written by the log package to the process's stderr
	c.Kill()
	for _, l := range out.all() {
		if !strings.HasSuffix(l, "\n") || strings.Count(l, "\n") != 1 {
			t.Errorf("Write %q is not one line", l)
		}
		if strings.Contains(l, "[DEBUG]") || strings.Contains(l, "[INFO]") || strings.Contains(l, `"@level"`) {
			t.Errorf("go-plugin chatter reached stderr: %q", l)
		}
	}
}

func TestStartNotAPlugin(t *testing.T) {
	_, err := host.Start(exec.Command("true"), nil)
	if err == nil || !strings.Contains(err.Error(), "without the handshake") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start of a program that is not a plugin = %q, want a one-line error about the handshake", err)
	}
}

func TestStartOldProtocol(t *testing.T) {
	bin := destinationtest.Build(t, "trackd.dev/trackd/sdk/internal/oldplugin")
	_, err := host.Start(exec.Command(bin), nil)
	if err == nil || !strings.Contains(err.Error(), "rebuild it") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("Start of a plugin of protocol 2 = %q, want a one-line error saying to rebuild it", err)
	}
}

func TestRunByHand(t *testing.T) {
	bin := destinationtest.Build(t, testPlugin)
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--sample-config"}, 0, "# sample settings\nanswer = \"echo\"\n"},
		{[]string{"--help"}, 0, "--sample-config"},
		{[]string{"-h"}, 0, "--sample-config"},
		{nil, 1, "--sample-config"},
		{[]string{"--frobnicate"}, 2, "--help"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, err := exec.Command(bin, tt.args...).CombinedOutput()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.wantCode || !strings.Contains(string(out), tt.want) {
				t.Errorf("exit %d, output %q; want exit %d and output containing %q", code, out, tt.wantCode, tt.want)
			}
			if tt.args != nil && tt.args[0] == "--sample-config" && string(out) != tt.want {
				t.Errorf("--sample-config printed %q, want exactly %q", out, tt.want)
			}
		})
	}
}

// start is destinationtest.Start with the plugin's output kept in out.
func start(t *testing.T, bin string, out *lines, settings map[string]any) *host.Client {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{"GORACE=atexit_sleep_ms=0"} // Kill waits for the exit
	c, err := host.Start(cmd, out)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Kill)
	if err := destinationtest.Configure(t, c, settings); err != nil {
		t.Fatal(err)
	}
	return c
}

// lines records each Write as one line.
type lines struct {
	mu     sync.Mutex
	writes []string
	added  chan struct{}
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, string(p))
	if l.added != nil {
		close(l.added)
		l.added = nil
	}
	return len(p), nil
}

func (l *lines) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.writes)
}

func (l *lines) String() string { return strings.Join(l.all(), "") }

// waitFor waits until a line containing s has been written.
func (l *lines) waitFor(t *testing.T, s string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		l.mu.Lock()
		found := strings.Contains(strings.Join(l.writes, ""), s)
		if l.added == nil {
			l.added = make(chan struct{})
		}
		added := l.added
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-added:
		case <-timeout:
			t.Fatalf("no line containing %q; got:\n%s", s, l.String())
		}
	}
}
