package normalize

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"trackd.dev/trackd/daemon/internal/eventtest"
	"trackd.dev/trackd/sdk"
)

// Every call type's own rules (SPEC §4b), valid and invalid.
func TestCallTypes(t *testing.T) {
	tests := []struct {
		body  string
		field string // "" for a valid call
		want  string // for a valid call, the output's member to check, as key=JSON; else a phrase of the reason
		event sdk.Event
	}{
		{body: `{"type":"identify","userId":"u","traits":{"email":"a@b.c"}}`, want: `traits={"email":"a@b.c"}`,
			event: sdk.Event{Type: "identify", UserID: "u"}},
		{body: `{"type":"identify","anonymousId":"a"}`, want: `traits={}`, event: sdk.Event{Type: "identify", AnonymousID: "a"}},
		{body: `{"type":"identify","userId":"u","traits":null,"properties":"left as sent"}`, want: `traits={}`,
			event: sdk.Event{Type: "identify", UserID: "u"}},
		{body: `{"type":"identify","userId":"u","traits":[]}`, field: "traits", want: "traits is an array; use an object or null"},
		{body: `{"type":"identify","traits":{}}`, field: "userId", want: "userId or anonymousId is required"},

		{body: `{"type":"page","userId":"u","name":"Pricing","category":"Docs","properties":{"url":"https://x"}}`,
			want: `properties={"url":"https://x"}`, event: sdk.Event{Type: "page", Name: "Pricing", UserID: "u"}},
		{body: `{"type":"page","anonymousId":"a"}`, want: `properties={}`, event: sdk.Event{Type: "page", AnonymousID: "a"}},
		{body: `{"type":"page","anonymousId":"a","name":null,"event":7}`, want: `event=7`, event: sdk.Event{Type: "page", AnonymousID: "a"}},
		{body: `{"type":"page","userId":"u","name":3}`, field: "name", want: "name is a number; use a string or null"},
		{body: `{"type":"page","userId":"u","category":{}}`, field: "category", want: "category is an object; use a string or null"},
		{body: `{"type":"page","userId":"u","properties":"x"}`, field: "properties", want: "properties is a string"},

		{body: `{"type":"screen","userId":"u","name":"Home"}`, want: `name="Home"`, event: sdk.Event{Type: "screen", Name: "Home", UserID: "u"}},
		{body: `{"type":"screen","userId":"u","category":false}`, field: "category", want: "category is a boolean"},

		{body: `{"type":"group","userId":"u","groupId":"g1","traits":{"plan":"pro"}}`, want: `groupId="g1"`,
			event: sdk.Event{Type: "group", UserID: "u", GroupID: "g1"}},
		{body: `{"type":"group","anonymousId":"a","groupId":1e3}`, want: `groupId="1000"`,
			event: sdk.Event{Type: "group", AnonymousID: "a", GroupID: "1000"}},
		{body: `{"type":"group","userId":"u"}`, field: "groupId", want: "groupId is required for a group call"},
		{body: `{"type":"group","userId":"u","groupId":""}`, field: "groupId", want: "groupId is required for a group call"},
		{body: `{"type":"group","userId":"u","groupId":null}`, field: "groupId", want: "groupId is required for a group call"},
		{body: `{"type":"group","userId":"u","groupId":true}`, field: "groupId", want: "groupId is a boolean"},
		{body: `{"type":"group","userId":"u","groupId":"g","traits":7}`, field: "traits", want: "traits is a number"},

		{body: `{"type":"alias","userId":"u","previousId":"p"}`, want: `previousId="p"`,
			event: sdk.Event{Type: "alias", UserID: "u", PreviousID: "p"}},
		{body: `{"type":"alias","userId":42,"previousId":7}`, want: `previousId="7"`,
			event: sdk.Event{Type: "alias", UserID: "42", PreviousID: "7"}},
		{body: `{"type":"alias","anonymousId":"a","previousId":"p"}`, field: "userId", want: "userId is required for an alias call"},
		{body: `{"type":"alias","userId":"u"}`, field: "previousId", want: "previousId is required for an alias call"},
		{body: `{"type":"alias","userId":"u","previousId":["p"]}`, field: "previousId", want: "previousId is an array"},

		{body: `{"type":"track","userId":"u","event":"E","name":5,"traits":1}`, want: `traits=1`, event: sdk.Event{Type: "track", Name: "E", UserID: "u"}},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			ev, err := Normalize([]byte(tt.body), received, Options{})
			if tt.field != "" {
				var e *Error
				if !errors.As(err, &e) || e.Field != tt.field || !strings.Contains(e.Reason, tt.want) {
					t.Fatalf("error %v, want one for field %q saying %q", err, tt.field, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]json.RawMessage
			if err := json.Unmarshal(ev.JSON, &fields); err != nil {
				t.Fatal(err)
			}
			key, value, _ := strings.Cut(tt.want, "=")
			if string(fields[key]) != value {
				t.Errorf("%s = %s, want %s in %s", key, fields[key], value, ev.JSON)
			}
			if want := `"` + tt.event.Type + `"`; string(fields["type"]) != want {
				t.Errorf("type = %s, want %s", fields["type"], want)
			}
			got := ev.Event
			got.JSON, got.MessageID, got.Timestamp = nil, "", tt.event.Timestamp
			if !reflect.DeepEqual(got, tt.event) {
				t.Errorf("Event = %+v, want %+v", got, tt.event)
			}
		})
	}
}

// BenchmarkNormalizeMix normalizes the benchmarks' mix of calls (70% track,
// 20% page, 10% identify); BenchmarkNormalize, track calls alone.
func BenchmarkNormalizeMix(b *testing.B) {
	bodies := make([][]byte, 10)
	size := 0
	for i := range bodies {
		bodies[i] = eventtest.Mix(i, eventtest.MessageID(i))
		size += len(bodies[i])
	}
	b.SetBytes(int64(size / len(bodies)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := Normalize(bodies[i%len(bodies)], received, Options{}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
