package publish_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"trackd.dev/trackd/sdk/publish"
)

// send makes one call of some type.
type send func(context.Context, *publish.Client) (string, error)

func identify(i publish.Identify) send {
	return func(ctx context.Context, c *publish.Client) (string, error) { return c.Identify(ctx, i) }
}

func page(p publish.Page) send {
	return func(ctx context.Context, c *publish.Client) (string, error) { return c.Page(ctx, p) }
}

func screen(s publish.Screen) send {
	return func(ctx context.Context, c *publish.Client) (string, error) { return c.Screen(ctx, s) }
}

func group(g publish.Group) send {
	return func(ctx context.Context, c *publish.Client) (string, error) { return c.Group(ctx, g) }
}

func alias(a publish.Alias) send {
	return func(ctx context.Context, c *publish.Client) (string, error) { return c.Alias(ctx, a) }
}

func track(e publish.Event) send {
	return func(ctx context.Context, c *publish.Client) (string, error) { return c.Track(ctx, e) }
}

// Each call type is checked as the daemon checks it (SPEC §4b): a valid call
// is published, an invalid one is refused with an error naming the Go field,
// and nothing is published.
func TestCallsAreCheckedAsTheDaemonChecksThem(t *testing.T) {
	_, js, stream := setup(t)
	c := publish.New(js, publish.Options{})
	longID := strings.Repeat("x", 101)
	// 100 characters of 2 bytes: the limit counts characters, not bytes.
	longestID := strings.Repeat("é", 100)
	notJSON := map[string]any{"f": func() {}}
	for _, tc := range []struct {
		name  string
		send  send
		field string // named by the error; "" when the call is valid
	}{
		{"identify", identify(publish.Identify{UserID: "u1", Traits: map[string]any{"plan": "pro"}}), ""},
		{"identify anonymous without traits", identify(publish.Identify{AnonymousID: "a1"}), ""},
		{"identify longest messageId", identify(publish.Identify{UserID: "u1", MessageID: longestID}), ""},
		{"identify no user", identify(publish.Identify{Traits: map[string]any{"plan": "pro"}}), "UserID and AnonymousID"},
		{"identify long messageId", identify(publish.Identify{UserID: "u1", MessageID: longID}), "MessageID"},
		{"identify integration a string", identify(publish.Identify{UserID: "u1", Integrations: map[string]any{"Mixpanel": "yes"}}), `Integrations["Mixpanel"]`},
		{"identify trait not JSON", identify(publish.Identify{UserID: "u1", Traits: notJSON}), "Traits"},

		{"page", page(publish.Page{UserID: "u1", Name: "Pricing", Category: "Docs", Properties: map[string]any{"path": "/pricing"}}), ""},
		{"page without name or category", page(publish.Page{AnonymousID: "a1"}), ""},
		{"page integrations of every kind", page(publish.Page{UserID: "u1", Integrations: map[string]any{"All": false, "GA4": map[string]any{"x": 1}, "Mixpanel": nil}}), ""},
		{"page no user", page(publish.Page{Name: "Pricing"}), "UserID and AnonymousID"},
		{"page long messageId", page(publish.Page{UserID: "u1", MessageID: longID}), "MessageID"},
		{"page integration a number", page(publish.Page{UserID: "u1", Integrations: map[string]any{"GA4": 1}}), `Integrations["GA4"]`},
		{"page property not JSON", page(publish.Page{UserID: "u1", Properties: notJSON}), "Properties"},
		{"page context not JSON", page(publish.Page{UserID: "u1", Context: notJSON}), "Context"},

		{"screen", screen(publish.Screen{UserID: "u1", Name: "Cart", Properties: map[string]any{"items": 2}}), ""},
		{"screen without name", screen(publish.Screen{AnonymousID: "a1"}), ""},
		{"screen no user", screen(publish.Screen{Name: "Cart"}), "UserID and AnonymousID"},
		{"screen long messageId", screen(publish.Screen{UserID: "u1", MessageID: longID}), "MessageID"},
		{"screen integration a string", screen(publish.Screen{UserID: "u1", Integrations: map[string]any{"Amplitude": "off"}}), `Integrations["Amplitude"]`},
		{"screen property not JSON", screen(publish.Screen{UserID: "u1", Properties: notJSON}), "Properties"},

		{"group", group(publish.Group{GroupID: "g1", UserID: "u1", Traits: map[string]any{"name": "Initech"}}), ""},
		{"group anonymous without traits", group(publish.Group{GroupID: "g1", AnonymousID: "a1"}), ""},
		{"group no groupId", group(publish.Group{UserID: "u1", Traits: map[string]any{"name": "Initech"}}), "GroupID"},
		{"group no user", group(publish.Group{GroupID: "g1"}), "UserID and AnonymousID"},
		{"group long messageId", group(publish.Group{GroupID: "g1", UserID: "u1", MessageID: longID}), "MessageID"},
		{"group integration a string", group(publish.Group{GroupID: "g1", UserID: "u1", Integrations: map[string]any{"Mixpanel": "yes"}}), `Integrations["Mixpanel"]`},
		{"group trait not JSON", group(publish.Group{GroupID: "g1", UserID: "u1", Traits: notJSON}), "Traits"},

		{"alias", alias(publish.Alias{UserID: "u1", PreviousID: "a1"}), ""},
		{"alias no userId", alias(publish.Alias{PreviousID: "a1"}), "UserID"},
		{"alias no previousId", alias(publish.Alias{UserID: "u1"}), "PreviousID"},
		{"alias long messageId", alias(publish.Alias{UserID: "u1", PreviousID: "a1", MessageID: longID}), "MessageID"},
		{"alias integration a string", alias(publish.Alias{UserID: "u1", PreviousID: "a1", Integrations: map[string]any{"Mixpanel": "yes"}}), `Integrations["Mixpanel"]`},

		{"track", track(publish.Event{Event: "Signed Up", AnonymousID: "a1"}), ""},
		{"track no event name", track(publish.Event{UserID: "u1"}), "Event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := storedCount(t, c, stream)
			id, err := tc.send(t.Context(), c)
			after := storedCount(t, c, stream)
			if tc.field == "" {
				if err != nil || id == "" || after != before+1 {
					t.Errorf("= %q, %v, and %d calls stored; want a messageId, no error and the call stored", id, err, after-before)
				}
				return
			}
			if !errors.Is(err, publish.ErrInvalid) || !strings.Contains(err.Error(), tc.field) || id != "" {
				t.Errorf("= %q, %v; want ErrInvalid naming %s", id, err, tc.field)
			}
			if after != before {
				t.Errorf("%d invalid calls were stored", after-before)
			}
		})
	}
}

// storedCount flushes c and returns how many messages stream holds.
func storedCount(t *testing.T, c *publish.Client, stream jetstream.Stream) uint64 {
	t.Helper()
	if failed := c.Flush(t.Context()); len(failed) != 0 {
		t.Fatalf("Flush: %v", failed)
	}
	info, err := stream.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// One call of each type, read back from the stream: each carries its type and
// its own fields, and none of another type's.
func TestEveryCallTypeIsStored(t *testing.T) {
	_, js, stream := setup(t)
	c := publish.New(js, publish.Options{})
	happened := time.Date(2024, 3, 1, 12, 30, 0, 0, time.UTC)
	ctx := map[string]any{"ip": "10.0.0.1"}
	integrations := map[string]any{"All": false, "Mixpanel": true}
	calls := []struct {
		send   send
		want   map[string]any
		absent []string
	}{
		{
			send:   track(publish.Event{Event: "Signed Up", UserID: "u1", Properties: map[string]any{"plan": "pro"}, Context: ctx}),
			want:   map[string]any{"type": "track", "event": "Signed Up", "userId": "u1", "properties": map[string]any{"plan": "pro"}},
			absent: []string{"traits", "name", "groupId", "previousId"},
		},
		{
			send: identify(publish.Identify{UserID: "u1", AnonymousID: "a1", Traits: map[string]any{"email": "ada@example.com"},
				Context: ctx, Integrations: integrations, MessageID: "identify-1", Timestamp: happened}),
			want: map[string]any{"type": "identify", "userId": "u1", "anonymousId": "a1", "traits": map[string]any{"email": "ada@example.com"},
				"integrations": map[string]any{"All": false, "Mixpanel": true}, "messageId": "identify-1", "timestamp": "2024-03-01T12:30:00.000Z"},
			absent: []string{"event", "properties", "name", "groupId", "previousId"},
		},
		{
			send:   page(publish.Page{Name: "Pricing", Category: "Docs", AnonymousID: "a1", Properties: map[string]any{"path": "/pricing"}, Context: ctx}),
			want:   map[string]any{"type": "page", "name": "Pricing", "category": "Docs", "anonymousId": "a1", "properties": map[string]any{"path": "/pricing"}},
			absent: []string{"event", "traits", "userId", "groupId", "previousId"},
		},
		{
			send:   screen(publish.Screen{Name: "Cart", UserID: "u1", Context: ctx}),
			want:   map[string]any{"type": "screen", "name": "Cart", "userId": "u1"},
			absent: []string{"event", "category", "properties", "traits", "groupId", "previousId"},
		},
		{
			send:   group(publish.Group{GroupID: "g1", UserID: "u1", Traits: map[string]any{"name": "Initech", "employees": 120}, Context: ctx}),
			want:   map[string]any{"type": "group", "groupId": "g1", "userId": "u1", "traits": map[string]any{"name": "Initech", "employees": 120.0}},
			absent: []string{"event", "name", "properties", "previousId"},
		},
		{
			send:   alias(publish.Alias{UserID: "u1", PreviousID: "a1", Context: ctx}),
			want:   map[string]any{"type": "alias", "userId": "u1", "previousId": "a1"},
			absent: []string{"event", "name", "anonymousId", "properties", "traits", "groupId", "integrations"},
		},
	}
	for _, tc := range calls {
		id, err := tc.send(t.Context(), c)
		if err != nil {
			t.Fatalf("%s call: %v", tc.want["type"], err)
		}
		tc.want["messageId"] = id
	}
	if failed := c.Close(t.Context()); len(failed) != 0 {
		t.Fatalf("Close: %v", failed)
	}

	for i, tc := range calls {
		ev, _ := stored(t, stream, uint64(i+1))
		for key, want := range tc.want {
			if !reflect.DeepEqual(ev[key], want) {
				t.Errorf("%s call: %s = %#v, want %#v", tc.want["type"], key, ev[key], want)
			}
		}
		for _, key := range tc.absent {
			if v, ok := ev[key]; ok {
				t.Errorf("%s call: %s = %#v, want it left out", tc.want["type"], key, v)
			}
		}
		evCtx, _ := ev["context"].(map[string]any)
		lib, _ := evCtx["library"].(map[string]any)
		if evCtx["ip"] != "10.0.0.1" || lib["name"] != "trackd-go" {
			t.Errorf("%s call: context = %v, want ip kept and library trackd-go", tc.want["type"], ev["context"])
		}
		original, sent := parseTime(t, ev, "originalTimestamp"), parseTime(t, ev, "sentAt")
		if sent.Before(original) {
			t.Errorf("%s call: sentAt %v is before originalTimestamp %v", tc.want["type"], sent, original)
		}
	}
}
