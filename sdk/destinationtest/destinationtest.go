// Package destinationtest runs a destination plugin binary in a test, through
// the same handshake and gRPC service the daemon uses, and has the pieces
// most plugin tests need: events as the daemon normalizes them ([Event]), a
// server playing the destination's API ([NewServer]), and checks of results
// ([CheckResults]), of Configure's errors ([CheckConfigureError]) and of the
// plugin's sample.toml ([CheckSampleConfig]).
//
//	func TestMain(m *testing.M) { destinationtest.Main(m) }
//
//	func TestDeliver(t *testing.T) {
//		srv := destinationtest.NewServer(t, func(r destinationtest.Request) destinationtest.Answer {
//			return destinationtest.Answer{Status: http.StatusTooManyRequests, Header: map[string]string{"Retry-After": "7"}}
//		})
//		bin := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
//		c := destinationtest.Start(t, bin, map[string]any{"url": srv.URL})
//		e := destinationtest.Event(t, destinationtest.Call{Name: "Order Completed", UserID: "u-1", Properties: `{"revenue":9.99}`})
//		results := destinationtest.Deliver(t, c, []sdk.Event{e})
//		destinationtest.CheckResults(t, results, []sdk.Result{sdk.Retry(7*time.Second, "429")})
//		if got := srv.Requests(); len(got) != 1 || string(got[0].Body) != string(e.JSON) {
//			t.Errorf("requests %+v, want one with the event", got)
//		}
//	}
//
//	func TestSampleConfig(t *testing.T) {
//		destinationtest.CheckSampleConfig(t, ".", destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"))
//	}
package destinationtest

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"trackd.dev/trackd/sdk/host"
)

// builds holds the binaries built by this test process, so that tests
// starting the same plugin share one build.
var builds struct {
	sync.Mutex
	dir  string
	bins map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  string
}

// Build compiles the plugin main package pkg (an import path such as
// "trackd.dev/trackd/plugins/webhook") with `go build` and returns the
// binary's path. Each package is built once per test process, into a
// temporary directory that Main removes.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	return BuildTags(t, pkg)
}

// BuildTags is Build with build tags, for a binary that compiles in test-only
// hooks. Each package and set of tags is built once per test process.
func BuildTags(t testing.TB, pkg string, tags ...string) string {
	t.Helper()
	key := pkg
	if len(tags) > 0 {
		key += " " + strings.Join(tags, ",")
	}
	b, err := buildFor(key)
	if err != nil {
		t.Fatalf("build %s: %v", key, err)
	}
	b.once.Do(func() {
		out := filepath.Join(builds.dir, strings.NewReplacer("/", "_", " ", "_", ",", "_").Replace(key), path.Base(pkg))
		args := []string{"build", "-o", out}
		if race {
			args = append(args, "-race")
		}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		cmd := exec.Command("go", append(args, pkg)...)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = strings.TrimSpace(string(msg))
			if b.err == "" {
				b.err = err.Error()
			}
			return
		}
		b.path = out
	})
	if b.err != "" {
		t.Fatalf("build %s:\n%s", key, b.err)
	}
	return b.path
}

func buildFor(pkg string) (*build, error) {
	builds.Lock()
	defer builds.Unlock()
	if builds.dir == "" {
		dir, err := os.MkdirTemp("", "trackd-plugins-")
		if err != nil {
			return nil, err
		}
		builds.dir = dir
		builds.bins = make(map[string]*build)
	}
	b := builds.bins[pkg]
	if b == nil {
		b = &build{}
		builds.bins[pkg] = b
	}
	return b, nil
}

// Main runs the tests and then removes the binaries Build made. Call it from
// TestMain in a package whose tests use Build; without it they are left in
// the system's temporary directory.
func Main(m *testing.M) {
	code := m.Run()
	builds.Lock()
	if builds.dir != "" {
		_ = os.RemoveAll(builds.dir)
	}
	builds.Unlock()
	os.Exit(code)
}

// Start launches the plugin binary, configures it with settings (failing the
// test if Configure returns an error) and kills it when the test ends.
func Start(t testing.TB, binary string, settings map[string]any) *host.Client {
	t.Helper()
	c := Launch(t, binary)
	if err := Configure(t, c, settings); err != nil {
		t.Fatalf("configure plugin %s: %v", filepath.Base(binary), err)
	}
	return c
}

// Launch starts the plugin binary without configuring it, for tests of
// Configure itself, and kills it when the test ends. The plugin runs in the
// test's working directory; its output goes to the test log.
func Launch(t testing.TB, binary string) *host.Client {
	t.Helper()
	return launch(t, command(binary))
}

// launch is Launch for a command made by command.
func launch(t testing.TB, cmd *exec.Cmd) *host.Client {
	t.Helper()
	log := &testLog{t: t, prefix: filepath.Base(cmd.Path) + ": "}
	t.Cleanup(log.stop) // registered first so it runs after Kill
	c, err := host.Start(cmd, log)
	if err != nil {
		t.Fatalf("start plugin: %v", err)
	}
	t.Cleanup(c.Kill)
	return c
}

// command runs the plugin binary with args.
func command(binary string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	if race && os.Getenv("GORACE") == "" {
		// The race runtime waits a second before exiting, and Kill waits
		// for the exit.
		cmd.Env = []string{"GORACE=atexit_sleep_ms=0"}
	}
	return cmd
}

// Configure calls the plugin's Configure with settings, returning its error
// for the test to check. (c.Configure also returns the call types the plugin
// takes.)
func Configure(t testing.TB, c *host.Client, settings map[string]any) error {
	t.Helper()
	_, err := c.Configure(t.Context(), settings)
	return err
}

// testLog writes a plugin's output lines to the test log until the test's
// cleanup, after which t.Log would panic. A race report from a plugin built
// with -race fails the test.
type testLog struct {
	mu      sync.Mutex
	t       testing.TB
	prefix  string
	stopped bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return len(p), nil
	}
	line := strings.TrimRight(string(p), "\n")
	l.t.Log(l.prefix + line)
	if strings.Contains(line, "WARNING: DATA RACE") {
		l.t.Errorf("%sdata race in the plugin; see its report in the log", l.prefix)
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
}
