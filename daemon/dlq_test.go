package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"trackd.dev/trackd/sdk/destinationtest"
)

// Invariant 4: dead letters can be listed and replayed: a destination's go
// back to it alone; invalid ones go back through validation.
func TestDeadLettersListAndReplay(t *testing.T) {
	var broken atomic.Bool
	broken.Store(true)
	fixed := newCounter(t, false)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "unknown project token", http.StatusUnauthorized)
			return
		}
		fixed.Config.Handler.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	other := newCounter(t, false)
	hookBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	d := startDaemon(t, fmt.Sprintf(`
[destinations.hook]
plugin = %q
[destinations.hook.settings]
url = %q
[destinations.other]
plugin = %q
[destinations.other.settings]
url = %q
`, hookBin, proxy.URL, hookBin, other.URL))
	ids := publishEvents(t, d.natsURL, "dl", 3)
	publishBody(t, d.natsURL, `{"event":"Order Completed","messageId":"no-user"}`)
	waitDelivered(t, other, 3)

	dlq := func(args ...string) (string, string, int) {
		var stdout, stderr bytes.Buffer
		code := dispatch(append([]string{"dlq"}, append(args, "--nats", d.natsURL)...), &stdout, &stderr)
		return stdout.String(), stderr.String(), code
	}
	waitFor(t, "four dead letters", func() bool {
		_, stderr, _ := dlq("list")
		return strings.Contains(stderr, "4 dead letters")
	})
	out, _, code := dlq("list")
	if code != 0 {
		t.Fatalf("dlq list exit code %d", code)
	}
	for _, want := range []string{"TYPE", " track ", "hook", ids[0], "Order Completed", "401 Unauthorized: unknown project token", "invalid", "no-user", "userId or anonymousId"} {
		if !strings.Contains(out, want) {
			t.Errorf("dlq list does not show %q:\n%s", want, out)
		}
	}
	if out, _, _ := dlq("list", "--destination", "invalid"); strings.Count(out, "\n") != 2 {
		t.Errorf("dlq list --destination invalid:\n%s", out)
	}

	broken.Store(false)
	out, stderr, code := dlq("replay", "--destination", "hook")
	if code != 0 || !strings.Contains(out, "replayed 3 dead letters of hook") {
		t.Fatalf("replay: code %d, %q %q", code, out, stderr)
	}
	waitDelivered(t, fixed, 3)
	if missing := fixed.missing(ids); len(missing) > 0 {
		t.Errorf("not replayed: %v", missing)
	}
	if _, dups := other.counts(); dups != 0 {
		t.Errorf("the replay reached another destination %d times", dups)
	}
	// The invalid event goes back through validation and, still invalid, comes back.
	if out, _, code := dlq("replay", "--destination", "invalid"); code != 0 || !strings.Contains(out, "replayed 1 dead letters of invalid") {
		t.Fatalf("replay invalid: %d %q", code, out)
	}
	waitFor(t, "the invalid event to die again", func() bool {
		return d.metric(t, `trackd_events_invalid_total{field="userId"}`) == 2
	})
	// The metric is counted before the dead letter is stored, so the list
	// is waited for until it has one; then it must have exactly one.
	waitFor(t, "the invalid event's dead letter to be listed again", func() bool {
		_, stderr, _ = dlq("list")
		return !strings.HasPrefix(stderr, "0 dead letters")
	})
	if stderr != "1 dead letters\n" {
		t.Errorf("after the replays: %s", stderr)
	}
	if _, stderr, code := dlq("replay", "--destination", "nope"); code == 0 || !strings.Contains(stderr, `destination "nope" has no consumer`) {
		t.Errorf("replay to an unknown destination: %d %q", code, stderr)
	}
}
