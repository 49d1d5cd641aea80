package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/route"
	"trackd.dev/trackd/daemon/internal/tap"
	"trackd.dev/trackd/sdk/destinationtest"
)

// tapOutput runs `trackd tap` with args and returns its decisions as they come.
func tapOutput(t *testing.T, args ...string) (<-chan string, <-chan int) {
	t.Helper()
	outR, outW := io.Pipe()
	errR, errW := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- dispatch(append([]string{"tap"}, args...), outW, errW)
		outW.Close()
		errW.Close()
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(errR)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "tapping") {
				close(ready)
			}
		}
	}()
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	select {
	case <-ready:
	case c := <-code:
		t.Fatalf("tap exited with %d before it was tapping", c)
	case <-time.After(30 * time.Second):
		t.Fatal("tap never started")
	}
	return lines, code
}

func TestTap(t *testing.T) {
	fileBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/file")
	dir := t.TempDir()
	d := startDaemon(t, fmt.Sprintf(`
[destinations.a]
plugin = %[1]q
name = "A"
[destinations.a.settings]
path = %[2]q
[destinations.b]
plugin = %[1]q
name = "B"
events = ["Order *"]
[destinations.b.settings]
path = %[3]q
`, fileBin, dir+"/a.jsonl", dir+"/b.jsonl"))

	lines, code := tapOutput(t, "--nats", d.natsURL, "--json", "--limit", "4")
	publishBody(t, d.natsURL, `{"event":"Order Completed","userId":"u","messageId":"m1","integrations":{"A":false}}`)
	publishBody(t, d.natsURL, `{"event":"Signed Up","userId":"u","messageId":"m2"}`)
	publishBody(t, d.natsURL, `{"event":"Signed Up","userId":"u","messageId":"m2"}`)
	publishBody(t, d.natsURL, `{"event":"Signed Up"}`)

	var got []tap.Decision
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				done = true
				break
			}
			var dec tap.Decision
			if err := json.Unmarshal([]byte(l), &dec); err != nil {
				t.Fatalf("not JSON: %q", l)
			}
			got = append(got, dec)
		case <-time.After(time.Minute):
			t.Fatalf("tap printed only %d of 4 decisions in a minute: %+v", len(got), got)
		}
	}
	if c := <-code; c != 0 {
		t.Fatalf("tap exit code %d", c)
	}
	if len(got) != 4 {
		t.Fatalf("got %d decisions, want 4: %+v", len(got), got)
	}
	want := []struct {
		messageID, outcome string
		verdicts           []route.Verdict
	}{
		{"m1", tap.Routed, []route.Verdict{{ID: "a", Reason: route.ReasonIntegrations}, {ID: "b", Routed: true}}},
		{"m2", tap.Routed, []route.Verdict{{ID: "a", Routed: true}, {ID: "b", Reason: route.ReasonFilter}}},
		{"m2", tap.Duplicate, nil},
		{"", tap.Invalid, nil},
	}
	// A batch reports its invalid events first, so match by messageId and outcome.
	byKey := map[string]tap.Decision{}
	for _, g := range got {
		byKey[g.MessageID+"/"+g.Outcome] = g
	}
	for _, w := range want {
		g, ok := byKey[w.messageID+"/"+w.outcome]
		if !ok || fmt.Sprint(g.Destinations) != fmt.Sprint(w.verdicts) {
			t.Errorf("no decision %s/%s with %v in %+v", w.messageID, w.outcome, w.verdicts, got)
		}
	}
	if e := byKey["/"+tap.Invalid].Error; !strings.Contains(e, "userId") {
		t.Errorf("the invalid decision's error %q does not name userId", e)
	}
}

func TestFormatDecision(t *testing.T) {
	at := time.Date(2026, 11, 28, 13, 5, 9, 412e6, time.UTC)
	tests := []struct {
		d    tap.Decision
		want string
	}{
		{tap.Decision{Time: at, Type: "track", Event: "Order Completed", MessageID: "m1", Outcome: tap.Routed,
			Destinations: []route.Verdict{{ID: "a", Routed: true}, {ID: "b", Reason: route.ReasonFilter}}},
			"13:05:09.412  track     Order Completed       m1  → a   not: b (filter)"},
		{tap.Decision{Time: at, Type: "track", Event: "E", MessageID: "m2", Outcome: tap.Duplicate}, "13:05:09.412  track     E                     m2  duplicate: dropped"},
		{tap.Decision{Time: at, Outcome: tap.Invalid, Error: "event is required"}, "13:05:09.412  -         -                     -  invalid: event is required"},
		{tap.Decision{Time: at, Type: "track", Event: "E", MessageID: "m3", Outcome: tap.Unrouted,
			Destinations: []route.Verdict{{ID: "a", Reason: route.ReasonIntegrations}}},
			"13:05:09.412  track     E                     m3  → nowhere   not: a (integrations)"},
		{tap.Decision{Time: at, Type: "identify", MessageID: "m4", Outcome: tap.Routed,
			Destinations: []route.Verdict{{ID: "file", Routed: true}, {ID: "ga4", Reason: route.ReasonType}}},
			"13:05:09.412  identify  -                     m4  → file   not: ga4 (type)"},
	}
	for _, tt := range tests {
		if got := formatDecision(tt.d); got != tt.want {
			t.Errorf("formatDecision =\n%q, want\n%q", got, tt.want)
		}
	}
}

func TestTapWithoutDaemon(t *testing.T) {
	var stdout, stderr strings.Builder
	code := dispatch([]string{"tap", "--nats", "nats://" + freePort(t)}, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "cannot connect to NATS") {
		t.Errorf("code %d, stderr %q", code, stderr.String())
	}
}
