package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"trackd.dev/trackd/sdk/destinationtest"
)

// Invariant 9: every call type takes the same path. Calls of each type,
// published on NATS, reach the destinations that take their type once each;
// a destination that does not take a type neither gets nor dead-letters it;
// the types key narrows what a plugin takes; globs match page and screen
// names; and a messageId is deduplicated across types.
func TestEveryCallType(t *testing.T) {
	all, tracks, pages := newHook(t), newHook(t), newHook(t)
	hookBin := destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook")
	faulty := destinationtest.Build(t, "trackd.dev/trackd/daemon/internal/testplugins/faulty")
	out := filepath.Join(t.TempDir(), "faulty.txt")
	d := startDaemon(t, fmt.Sprintf(`
[destinations.all]
plugin = %[1]q
[destinations.all.settings]
url = %[2]q
[destinations.tracks]
plugin = %[1]q
types = ["track"]
[destinations.tracks.settings]
url = %[3]q
[destinations.pages]
plugin = %[1]q
types = ["page", "screen", "identify"]
events = ["Home"]
[destinations.pages.settings]
url = %[4]q
[destinations.trackonly]
plugin = %[5]q
[destinations.trackonly.settings]
out = %[6]q
`, hookBin, all.URL, tracks.URL, pages.URL, faulty, out))

	calls := map[string]string{
		"c-track":    `{"event":"Order Completed","userId":"u1","properties":{"revenue":9.5}}`,
		"c-identify": `{"type":"identify","userId":"u1","traits":{"email":"u1@example.com"}}`,
		"c-page":     `{"type":"page","name":"Home","anonymousId":"a1"}`,
		"c-screen":   `{"type":"screen","name":"Settings","userId":"u1","properties":{"tab":"privacy"}}`,
		"c-group":    `{"type":"group","groupId":42,"userId":"u1","traits":{"plan":"pro"}}`,
		"c-alias":    `{"type":"alias","userId":"u1","previousId":"a1"}`,
	}
	for id, body := range calls {
		publishBody(t, d.natsURL, strings.Replace(body, "{", fmt.Sprintf(`{"messageId":%q,`, id), 1))
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range calls {
			if !yield(id) {
				return
			}
		}
	})
	waitFor(t, "every call at the destination that takes them all", func() bool { return slices.Equal(all.ids(), ids) })
	// A repeat of a messageId, as another type: one dedupe space.
	publishBody(t, d.natsURL, `{"type":"page","name":"Home","messageId":"c-identify","userId":"u1"}`)
	publishBody(t, d.natsURL, `{"event":"Last","messageId":"c-last","userId":"u1"}`)
	// Each destination delivers on its own, so each is waited for: all and
	// tracks get the last call, pages the calls it takes.
	waitFor(t, "the call after the repeat", func() bool { return all.event("c-last") != nil && tracks.event("c-last") != nil })
	waitFor(t, "the page and identify calls at the destination of pages", func() bool {
		return pages.event("c-page") != nil && pages.event("c-identify") != nil
	})

	for id := range calls {
		ev := all.event(id)
		if want := strings.TrimPrefix(id, "c-"); ev["type"] != want {
			t.Errorf("%s arrived with type %v, want %s: %v", id, ev["type"], want, ev)
		}
	}
	if ev := all.event("c-identify"); fmt.Sprint(ev["traits"]) != "map[email:u1@example.com]" {
		t.Errorf("identify's traits: %v", ev)
	}
	if ev := all.event("c-group"); ev["groupId"] != "42" || fmt.Sprint(ev["traits"]) != "map[plan:pro]" {
		t.Errorf("group: %v, want groupId \"42\" and its traits", ev)
	}
	if ev := all.event("c-alias"); ev["previousId"] != "a1" || ev["userId"] != "u1" {
		t.Errorf("alias: %v", ev)
	}
	if ev := all.event("c-page"); ev["name"] != "Home" || fmt.Sprint(ev["properties"]) != "map[]" {
		t.Errorf("page: %v, want its name and properties {}", ev)
	}
	if got := tracks.ids(); !slices.Equal(got, []string{"c-last", "c-track"}) {
		t.Errorf("the destination with types = [\"track\"] got %v, want the track calls", got)
	}
	// pages takes page, screen and identify, and its glob matches the page's
	// name, not the screen's; identify is not globbed.
	if got := pages.ids(); !slices.Equal(got, []string{"c-identify", "c-page"}) {
		t.Errorf("the destination of pages named Home got %v, want c-identify and c-page", got)
	}
	waitFor(t, "the track calls at the track-only plugin", func() bool {
		b, _ := os.ReadFile(out)
		return strings.Count(string(b), "\n") >= 2
	})
	// The plugin writes a line per call as it gets them, in whatever order
	// the two calls were delivered.
	b, _ := os.ReadFile(out)
	if got := strings.Fields(string(b)); !slices.Equal(slices.Sorted(slices.Values(got)), []string{"c-last", "c-track"}) {
		t.Errorf("the plugin that takes track alone got %q, want c-track and c-last", b)
	}

	// A metric is counted a little after the delivery the test saw (the
	// router's once its hand-offs are done, a destination's once its plugin
	// has answered), so each is waited for until it reaches its value; then
	// it must be exactly that, so that a call counted twice still fails.
	metrics := []struct {
		name string
		want float64
	}{
		{"trackd_events_deduplicated_total", 1},
		{`trackd_events_received_total{type="page"}`, 2},
		{`trackd_events_received_total{type="alias"}`, 1},
		{`trackd_events_routed_total{destination="all",type="group"}`, 1},
		{`trackd_events_routed_total{destination="trackonly"}`, 2},
		{`trackd_events_routed_total{destination="pages",type="screen"}`, 0},
		{`trackd_events_delivered_total{destination="all",type="identify"}`, 1},
		{`trackd_events_delivered_total{destination="all"}`, 7},
		{`trackd_events_dead_lettered_total`, 0},
	}
	for _, m := range metrics {
		waitFor(t, fmt.Sprintf("%s to reach %v", m.name, m.want), func() bool { return d.metric(t, m.name) >= m.want })
	}
	for _, m := range metrics {
		if got := d.metric(t, m.name); got != m.want {
			t.Errorf("%s = %v, want %v", m.name, got, m.want)
		}
	}
	_, js := connectJS(t, d.natsURL)
	info, err := js.Stream(t.Context(), "TRACK_DLQ")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("%d dead letters; no call is dead-lettered for its type", n)
	}
}
