package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/dlq"
	"trackd.dev/trackd/sdk/destinationtest"
)

// Hostile events are either normalized and delivered or dead-lettered with a
// reason; none crashes the router or blocks the events behind it.
func TestHostileEvents(t *testing.T) {
	hook := newCounter(t, false)
	d := startDaemon(t, fmt.Sprintf(`
[destinations.hook]
plugin = %q
[destinations.hook.settings]
url = %q
`, destinationtest.Build(t, "trackd.dev/trackd/plugins/webhook"), hook.URL))
	_, js := connectJS(t, d.natsURL)

	deep := strings.Repeat(`[`, 12000) + strings.Repeat("]", 12000) // under the size limit, past encoding/json's depth limit
	hostile := map[string]string{
		"deep":      `{"event":"E","userId":"u","messageId":"deep","properties":` + deep + `}`,
		"nested":    `{"event":"E","userId":"u","messageId":"nested","properties":` + strings.Repeat(`{"a":`, 500) + "1" + strings.Repeat("}", 500) + `}`,
		"huge":      `{"event":"E","userId":"u","messageId":"huge","properties":{"blob":"` + strings.Repeat("x", 40000) + `"}}`,
		"utf8":      "{\"event\":\"E\xff\xfe\",\"userId\":\"u\xc3\",\"messageId\":\"utf8\",\"properties\":{\"k\":\"\xed\xa0\x80\"}}",
		"dupkeys":   `{"event":"E","userId":"u","userId":"v","messageId":"dupkeys","messageId":"dupkeys"}`,
		"nan":       `{"event":"E","userId":"u","messageId":"nan","properties":{"revenue":NaN}}`,
		"bigint":    `{"event":"E","userId":1e999,"messageId":"bigint"}`,
		"infinity":  `{"event":"E","userId":"u","messageId":"infinity","properties":{"revenue":1e400}}`,
		"nul":       "{\"event\":\"E\",\"userId\":\"u\x00\",\"messageId\":\"nul\"}",
		"emptybody": ``,
	}
	for _, body := range hostile {
		if _, err := js.Publish(t.Context(), "track", []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(t.Context(), "track", []byte(`{"event":"E","userId":"u","messageId":"after"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the event published after the hostile ones", func() bool { return hook.missing([]string{"after"}) == nil })

	// deadLetters reads every invalid event's dead letter stored so far and
	// returns the reasons of the hostile events', by name.
	deadLetters := func() map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		walk, err := dlq.Open(ctx, js, dlq.Invalid, 0)
		if err != nil {
			t.Fatal(err)
		}
		letters := map[string]string{}
		for range walk.Count {
			l, err := walk.Next(ctx)
			if err != nil {
				t.Fatalf("reading the dead letters: %v", err)
			}
			for name, body := range hostile {
				if bytes.Equal(l.Body, []byte(body)) {
					letters[name] = l.Reason
				}
			}
		}
		return letters
	}
	// Every hostile event is accounted for: delivered, or a dead letter with
	// a reason. "after" says nothing of the others: a destination makes
	// several plugin calls at once, so the valid ones may arrive after it.
	var letters map[string]string
	waitFor(t, "every hostile event delivered or dead-lettered", func() bool {
		letters = deadLetters()
		for name := range hostile {
			if _, dead := letters[name]; !dead && hook.missing([]string{name}) != nil {
				return false
			}
		}
		return true
	})
	for name := range hostile {
		reason, dead := letters[name]
		delivered := hook.missing([]string{name}) == nil
		switch {
		case dead && delivered:
			t.Errorf("%s: both delivered and dead-lettered", name)
		case dead && reason == "":
			t.Errorf("%s: dead-lettered without a reason", name)
		}
		t.Logf("%-9s delivered=%v reason=%q", name, delivered, reason)
	}
}
