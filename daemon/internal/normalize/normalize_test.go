package normalize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"trackd.dev/trackd/sdk"
)

// received is when JetStream stored the message in most tests.
var received = time.Date(2024, 3, 1, 12, 0, 10, 0, time.UTC)

const minimal = `{"event":"Signed Up","userId":"u1"}`

// orderCompleted is a realistic event of about 1 KB, as analytics.js would send it.
const orderCompleted = `{
  "type": "track",
  "event": "Order Completed",
  "userId": "user_8f3a2c",
  "anonymousId": "507f191e810c19729de860ea",
  "messageId": "ajs-next-1706097542403-3e1f7c2a-9b1d-4c55-8a7e-0b6f2d9c1e44",
  "timestamp": "2024-01-24T11:59:02.403Z",
  "sentAt": "2024-01-24T11:59:02.410Z",
  "originalTimestamp": "2024-01-24T11:59:02.403Z",
  "properties": {
    "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
    "order_id": "50314b8e9bcf000000000000",
    "affiliation": "Google Store",
    "total": 27.50,
    "subtotal": 22.50,
    "revenue": 25.00,
    "shipping": 3,
    "tax": 2,
    "discount": 2.5,
    "coupon": "hasbros",
    "currency": "usd",
    "products": [
      {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition", "price": 19, "quantity": 1, "category": "Games"},
      {"product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno Card Game", "price": 3, "quantity": 2, "category": "Games"}
    ]
  },
  "context": {
    "ip": "203.0.113.7",
    "locale": "en-US",
    "library": {"name": "analytics.js", "version": "next-1.64.0"},
    "page": {"path": "/checkout/complete", "url": "https://shop.example.com/checkout/complete"},
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
  },
  "integrations": {"All": true, "Mixpanel": false, "Amplitude": {"session_id": 1706097500000}}
}`

func mustNormalize(t *testing.T, body string, at time.Time) (Event, map[string]json.RawMessage) {
	t.Helper()
	ev, err := Normalize([]byte(body), at, Options{})
	if err != nil {
		t.Fatalf("Normalize(%s): %v", body, err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON, &fields); err != nil {
		t.Fatalf("output is not a JSON object: %v\n%s", err, ev.JSON)
	}
	return ev, fields
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string
		want  string // a phrase the reason must contain
	}{
		{"empty", ``, "", "empty"},
		{"only space", " \n\t", "", "empty"},
		{"array", `[{"event":"x","userId":"u"}]`, "", "an array, not a JSON object"},
		{"string", `"track"`, "", "a string, not a JSON object"},
		{"number", `42`, "", "a number, not a JSON object"},
		{"null", `null`, "", "null, not a JSON object"},
		{"truncated", `{"event":"x","userId":`, "", "not valid JSON"},
		{"single quotes", `{'event':'x'}`, "", "not valid JSON"},
		{"trailing garbage", `{"event":"x","userId":"u"} x`, "", "not valid JSON"},
		{"two objects", `{"event":"x","userId":"u"}{"event":"y","userId":"u"}`, "", "not valid JSON"},

		{"type unknown", `{"type":"pageview","event":"x","userId":"u"}`, "type", `"pageview", which is not a call type; use one of track, identify, page, screen, group, alias`},
		{"type capitalised", `{"type":"Track","event":"x","userId":"u"}`, "type", `"Track"`},
		{"type number", `{"type":1,"event":"x","userId":"u"}`, "type", "a number"},

		{"event missing", `{"userId":"u"}`, "event", "missing"},
		{"event null", `{"event":null,"userId":"u"}`, "event", "null"},
		{"event empty", `{"event":"","userId":"u"}`, "event", "empty"},
		{"event number", `{"event":7,"userId":"u"}`, "event", "a number"},

		{"userId boolean", `{"event":"x","userId":true}`, "userId", "a boolean"},
		{"userId object", `{"event":"x","userId":{"id":1}}`, "userId", "an object"},
		{"anonymousId array", `{"event":"x","userId":"u","anonymousId":["a"]}`, "anonymousId", "an array"},
		{"userId number too long", `{"event":"x","userId":1e200}`, "userId", "send it as a string"},
		{"no ids", `{"event":"x"}`, "userId", "userId or anonymousId is required"},
		{"empty ids", `{"event":"x","userId":"","anonymousId":""}`, "userId", "userId or anonymousId is required"},
		{"null ids", `{"event":"x","userId":null,"anonymousId":null}`, "userId", "userId or anonymousId is required"},

		{"properties string", `{"event":"x","userId":"u","properties":"{}"}`, "properties", "a string"},
		{"properties array", `{"event":"x","userId":"u","properties":[]}`, "properties", "an array"},
		{"context number", `{"event":"x","userId":"u","context":1}`, "context", "a number"},
		{"integrations boolean", `{"event":"x","userId":"u","integrations":false}`, "integrations", "a boolean"},
		{"integration string", `{"event":"x","userId":"u","integrations":{"All":true,"Mixpanel":"yes"}}`, "integrations.Mixpanel", "a string; use true, false, null or an object"},
		{"integration number", `{"event":"x","userId":"u","integrations":{"Amplitude":1}}`, "integrations.Amplitude", "a number"},
		{"integration array", `{"event":"x","userId":"u","integrations":{"GA4":[]}}`, "integrations.GA4", "an array"},
		{"integration with an empty key", `{"event":"x","userId":"u","integrations":{"":"yes","B":true}}`, "integrations.", "a string"},

		{"messageId number", `{"event":"x","userId":"u","messageId":5}`, "messageId", "a number"},
		{"messageId 101 runes", `{"event":"x","userId":"u","messageId":"` + strings.Repeat("é", 101) + `"}`, "messageId", "101 characters"},

		{"timestamp words", `{"event":"x","userId":"u","timestamp":"yesterday"}`, "timestamp", `"yesterday"`},
		{"timestamp number", `{"event":"x","userId":"u","timestamp":1706097542403}`, "timestamp", "a number"},
		{"timestamp date only", `{"event":"x","userId":"u","timestamp":"2020-01-24"}`, "timestamp", `"2020-01-24"`},
		{"timestamp no zone", `{"event":"x","userId":"u","timestamp":"2020-01-24T11:59:02"}`, "timestamp", `"2020-01-24T11:59:02"`},
		{"timestamp bad offset", `{"event":"x","userId":"u","timestamp":"2020-01-24T11:59:02+5:30"}`, "timestamp", "not an RFC 3339 time"},
		{"sentAt words", `{"event":"x","userId":"u","sentAt":"now"}`, "sentAt", `"now"`},
		{"originalTimestamp object", `{"event":"x","userId":"u","originalTimestamp":{}}`, "originalTimestamp", "an object"},
		{"originalTimestamp before year 0", `{"event":"x","userId":"u","originalTimestamp":"0000-01-01T00:00:00+01:00"}`, "originalTimestamp", "outside the years"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Normalize([]byte(tt.body), received, Options{})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error = %v (%T), want *Error", err, err)
			}
			if e.Field != tt.field {
				t.Errorf("Field = %q, want %q", e.Field, tt.field)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.field) {
				t.Errorf("message %q does not name field %q", msg, tt.field)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
		})
	}
}

func TestMaxEventBytes(t *testing.T) {
	padded := func(n int) []byte {
		body := []byte(`{"event":"x","userId":"u","pad":""}`)
		pad := bytes.Repeat([]byte("a"), n-len(body))
		return append(body[:len(body)-2], append(pad, `"}`...)...)
	}
	tests := []struct {
		name    string
		size    int
		max     int
		wantErr string
	}{
		{"default limit reached", 32768, 0, ""},
		{"default limit exceeded", 32769, 0, "event is 32769 bytes, over the limit of 32768 bytes (ingest.max_event_bytes)"},
		{"configured limit reached", 100, 100, ""},
		{"configured limit exceeded", 101, 100, "event is 101 bytes, over the limit of 100 bytes (ingest.max_event_bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := padded(tt.size)
			if len(body) != tt.size {
				t.Fatalf("test body is %d bytes, want %d", len(body), tt.size)
			}
			_, err := Normalize(body, received, Options{MaxEventBytes: tt.max})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Normalize: %v", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Field != "" || e.Error() != tt.wantErr {
				t.Fatalf("error = %#v, want *Error{Field: \"\"} saying %q", err, tt.wantErr)
			}
		})
	}
}

func TestMessageID(t *testing.T) {
	hundred := strings.Repeat("é", 100)
	tests := []struct {
		name string
		body string
		want string // "" means a fresh UUID v4
	}{
		{"absent", minimal, ""},
		{"null", `{"event":"x","userId":"u","messageId":null}`, ""},
		{"empty", `{"event":"x","userId":"u","messageId":""}`, ""},
		{"kept", `{"event":"x","userId":"u","messageId":"ajs-123"}`, "ajs-123"},
		{"escaped", `{"event":"x","userId":"u","messageId":"a\"b\u00e9"}`, `a"bé`},
		{"100 runes", `{"event":"x","userId":"u","messageId":"` + hundred + `"}`, hundred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, fields := mustNormalize(t, tt.body, received)
			var inJSON string
			if err := json.Unmarshal(fields["messageId"], &inJSON); err != nil {
				t.Fatalf("messageId in output: %v", err)
			}
			if inJSON != ev.MessageID {
				t.Errorf("output messageId %q, Event.MessageID %q", inJSON, ev.MessageID)
			}
			if tt.want != "" {
				if ev.MessageID != tt.want {
					t.Errorf("MessageID = %q, want %q", ev.MessageID, tt.want)
				}
				return
			}
			id, err := uuid.Parse(ev.MessageID)
			if err != nil || id.Version() != 4 || id.Variant() != uuid.RFC4122 {
				t.Errorf("MessageID = %q, want a UUID v4 (parse error %v)", ev.MessageID, err)
			}
		})
	}

	a, _ := mustNormalize(t, minimal, received)
	b, _ := mustNormalize(t, minimal, received)
	if a.MessageID == b.MessageID {
		t.Errorf("two events got the same assigned messageId %q", a.MessageID)
	}
}

func TestReceivedAt(t *testing.T) {
	tests := []struct {
		name string
		at   time.Time
		want string
	}{
		{"whole seconds get .000", received, `"2024-03-01T12:00:10.000Z"`},
		{"sub-millisecond dropped", time.Date(2024, 3, 1, 12, 0, 10, 987654321, time.UTC), `"2024-03-01T12:00:10.987Z"`},
		{"converted to UTC", time.Date(2024, 3, 1, 13, 0, 10, 5e6, time.FixedZone("CET", 3600)), `"2024-03-01T12:00:10.005Z"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"event":"x","userId":"u","receivedAt":"1999-12-31T23:59:59Z"}`
			_, fields := mustNormalize(t, body, tt.at)
			if got := string(fields["receivedAt"]); got != tt.want {
				t.Errorf("receivedAt = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestTimestamp(t *testing.T) {
	const at = `"2024-03-01T12:00:10.000Z"`
	tests := []struct {
		name     string
		extra    string // fields added to a minimal event
		wantJSON string // the timestamp as written
		wantTime time.Time
	}{
		{
			name:     "client value kept byte for byte",
			extra:    `"timestamp":"2020-01-24T11:59:02.403+05:30","sentAt":"2024-03-01T10:00:05Z","originalTimestamp":"2024-03-01T10:00:00Z"`,
			wantJSON: `"2020-01-24T11:59:02.403+05:30"`,
			wantTime: time.Date(2020, 1, 24, 6, 29, 2, 403e6, time.UTC),
		},
		{
			name:     "offset without colon kept",
			extra:    `"timestamp":"2020-01-24T11:59:02.403+0530"`,
			wantJSON: `"2020-01-24T11:59:02.403+0530"`,
			wantTime: time.Date(2020, 1, 24, 6, 29, 2, 403e6, time.UTC),
		},
		{
			name:     "Z without fraction kept",
			extra:    `"timestamp":"2020-01-24T11:59:02Z"`,
			wantJSON: `"2020-01-24T11:59:02Z"`,
			wantTime: time.Date(2020, 1, 24, 11, 59, 2, 0, time.UTC),
		},
		{
			name:     "nanoseconds kept",
			extra:    `"timestamp":"2020-01-24T11:59:02.123456789-08:00"`,
			wantJSON: `"2020-01-24T11:59:02.123456789-08:00"`,
			wantTime: time.Date(2020, 1, 24, 19, 59, 2, 123456789, time.UTC),
		},
		{
			name:     "clock skew corrected",
			extra:    `"originalTimestamp":"2024-03-01T10:00:00Z","sentAt":"2024-03-01T10:00:05Z"`,
			wantJSON: `"2024-03-01T12:00:05.000Z"`,
			wantTime: time.Date(2024, 3, 1, 12, 0, 5, 0, time.UTC),
		},
		{
			name:     "clock skew with offsets and null timestamp",
			extra:    `"timestamp":null,"originalTimestamp":"2024-03-01T11:00:00.250+01:00","sentAt":"2024-03-01T10:00:01.5Z"`,
			wantJSON: `"2024-03-01T12:00:08.750Z"`,
			wantTime: time.Date(2024, 3, 1, 12, 0, 8, 750e6, time.UTC),
		},
		{
			name:     "originalTimestamp alone, rewritten in UTC",
			extra:    `"originalTimestamp":"2024-03-01T11:00:00+0100"`,
			wantJSON: `"2024-03-01T10:00:00.000Z"`,
			wantTime: time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC),
		},
		{
			name:     "sentAt alone falls back to receivedAt",
			extra:    `"sentAt":"2024-03-01T10:00:05Z"`,
			wantJSON: at,
			wantTime: received,
		},
		{
			name:     "nothing falls back to receivedAt",
			extra:    `"originalTimestamp":null`,
			wantJSON: at,
			wantTime: received,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"event":"x","userId":"u",` + tt.extra + `}`
			ev, fields := mustNormalize(t, body, received)
			if got := string(fields["timestamp"]); got != tt.wantJSON {
				t.Errorf("timestamp = %s, want %s", got, tt.wantJSON)
			}
			if !ev.Timestamp.Equal(tt.wantTime) || ev.Timestamp.Location() != time.UTC {
				t.Errorf("Event.Timestamp = %v, want %v in UTC", ev.Timestamp, tt.wantTime)
			}
		})
	}
}

func TestPassThrough(t *testing.T) {
	const properties = `{ "zeta" :1,  "alpha":[1.50, 2e3 ,"x"] ,"nested":{"b":true,"a":null} }`
	const context = `{"library" : {"name":"analytics.js"}}`
	const integrations = `{"All":false , "Mixpanel":{"api_secret":"s"}}`
	body := `{"event":"Order Completed","anonymousId":"a1","properties":` + properties +
		`,"context":` + context + `,"integrations":` + integrations +
		`,"custom":  {"x" : [1, 2]},"écho":"\u00e9","sentAt":"2024-03-01T10:00:05Z"}`
	_, fields := mustNormalize(t, body, received)

	for key, want := range map[string]string{
		"properties":   properties,
		"context":      context,
		"integrations": integrations,
		"custom":       `{"x" : [1, 2]}`,
		"écho":         `"\u00e9"`,
		"anonymousId":  `"a1"`,
		"sentAt":       `"2024-03-01T10:00:05Z"`,
		"type":         `"track"`,
		"version":      `2`,
	} {
		if got := string(fields[key]); got != want {
			t.Errorf("%s = %s, want %s", key, got, want)
		}
	}
	if _, ok := fields["userId"]; ok {
		t.Errorf("userId appeared in output: %s", fields["userId"])
	}
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		name string
		body string
	}{
		{"absent", `{"event":"x","userId":"u"}`},
		{"null", `{"type":null,"event":"x","userId":"u","properties":null,"version":1}`},
		{"already set", `{"type":"track","event":"x","userId":"u","properties":{},"version":"2"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, fields := mustNormalize(t, tt.body, received)
			for key, want := range map[string]string{"type": `"track"`, "version": `2`, "properties": `{}`} {
				if got := string(fields[key]); got != want {
					t.Errorf("%s = %s, want %s", key, got, want)
				}
			}
			if ev.Name != "x" || ev.UserID != "u" || ev.AnonymousID != "" {
				t.Errorf("Name, UserID, AnonymousID = %q, %q, %q", ev.Name, ev.UserID, ev.AnonymousID)
			}
		})
	}
}

func TestNumericIDs(t *testing.T) {
	tests := []struct {
		number string
		want   string
	}{
		{"123", "123"},
		{"0", "0"},
		{"-0", "0"},
		{"-12", "-12"},
		{"1.5", "1.5"},
		{"1.50", "1.5"},
		{"100.0", "100"},
		{"1e3", "1000"},
		{"1E+2", "100"},
		{"2.5e1", "25"},
		{"1.2e-3", "0.0012"},
		{"-125e-2", "-1.25"},
		{"0.000e99999999999999999999", "0"},
		{"12345678901234567890123456789", "12345678901234567890123456789"},
		{"9007199254740993", "9007199254740993"}, // not representable as float64
	}
	for _, tt := range tests {
		t.Run(tt.number, func(t *testing.T) {
			body := `{"event":"x","userId":` + tt.number + `,"anonymousId":` + tt.number + `}`
			ev, fields := mustNormalize(t, body, received)
			if ev.UserID != tt.want || ev.AnonymousID != tt.want {
				t.Errorf("UserID, AnonymousID = %q, %q, want %q", ev.UserID, ev.AnonymousID, tt.want)
			}
			want := `"` + tt.want + `"`
			if got := string(fields["userId"]); got != want {
				t.Errorf("userId in output = %s, want %s", got, want)
			}
			if got := string(fields["anonymousId"]); got != want {
				t.Errorf("anonymousId in output = %s, want %s", got, want)
			}
		})
	}
}

func TestIntegrations(t *testing.T) {
	tests := []struct {
		name         string
		integrations string
		want         map[string]bool
	}{
		{"absent", "", nil},
		{"null", `null`, nil},
		{"empty", `{}`, nil},
		{"only nulls", `{"Mixpanel":null}`, nil},
		{
			"mixed",
			`{"All": false, "Mixpanel": true, "Amplitude": {"session_id": 1}, "X": null}`,
			map[string]bool{"all": false, "mixpanel": true, "amplitude": true},
		},
		{"empty object enables", `{"Webhook":{}}`, map[string]bool{"webhook": true}},
		{"spellings disagree, false wins", `{"Mixpanel":true,"mixpanel":false,"MIXPANEL":{}}`, map[string]bool{"mixpanel": false}},
		{"spellings agree", `{"GA4":true,"ga4":{}}`, map[string]bool{"ga4": true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := `{"event":"x","userId":"u"}`
			if tt.integrations != "" {
				body = `{"event":"x","userId":"u","integrations":` + tt.integrations + `}`
			}
			ev, _ := mustNormalize(t, body, received)
			if (ev.Integrations == nil) != (tt.want == nil) || !maps.Equal(ev.Integrations, tt.want) {
				t.Errorf("Integrations = %#v, want %#v", ev.Integrations, tt.want)
			}
		})
	}
}

func TestEscapedKeys(t *testing.T) {
	// A key spelled with escapes is the same key to every JSON reader downstream, so it
	// must be validated and rewritten like the plain spelling.
	body := `{"\u0065vent":"x","user\u0049d":5,"odd\"key\n":1}`
	ev, fields := mustNormalize(t, body, received)
	if ev.Name != "x" || ev.UserID != "5" {
		t.Errorf("Name, UserID = %q, %q", ev.Name, ev.UserID)
	}
	if got := string(fields["userId"]); got != `"5"` {
		t.Errorf("userId = %s", got)
	}
	if got := string(fields["odd\"key\n"]); got != "1" {
		t.Errorf("odd key = %s, output %s", got, ev.JSON)
	}
}

func TestDuplicateKeysLastWins(t *testing.T) {
	ev, fields := mustNormalize(t, `{"event":"first","event":"second","userId":"u","p":1,"p":2}`, received)
	if ev.Name != "second" || string(fields["event"]) != `"second"` || string(fields["p"]) != "2" {
		t.Errorf("Name %q, output %s", ev.Name, ev.JSON)
	}
	if n := bytes.Count(ev.JSON, []byte(`"event"`)); n != 1 {
		t.Errorf("output has %d event keys: %s", n, ev.JSON)
	}
}

// Past insertionSortMax members the keys are sorted another way; the output
// must be the same: every key once, in order, the last of each winning. (An
// event of n pairs has 2n+8 members once Normalize has added its own.)
func TestManyKeysSortedLastWins(t *testing.T) {
	for _, n := range []int{4, (insertionSortMax - 8) / 2, insertionSortMax, 4 * insertionSortMax} {
		var b strings.Builder
		b.WriteString(`{"event":"x","userId":"u"`)
		for i := n; i > 0; i-- {
			fmt.Fprintf(&b, `,"k%03d":%d,"k%03d":"last"`, i, i, i)
		}
		b.WriteString(`}`)
		ev, fields := mustNormalize(t, b.String(), received)
		var keys []string
		dec := json.NewDecoder(bytes.NewReader(ev.JSON))
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, tok.(string))
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
			t.Errorf("%d keys: not each once in order: %v", n, keys)
		}
		for i := 1; i <= n; i++ {
			if got := string(fields[fmt.Sprintf("k%03d", i)]); got != `"last"` {
				t.Fatalf("%d keys: k%03d = %s, want the last member's", n, i, got)
			}
		}
	}
}

func TestDeterministicOutput(t *testing.T) {
	a, err := Normalize([]byte(orderCompleted), received, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		b, err := Normalize([]byte(orderCompleted), received, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.JSON, b.JSON) {
			t.Fatalf("same event normalized twice differs:\n%s\n%s", a.JSON, b.JSON)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(orderCompleted), 0)
	f.Add([]byte(minimal), 0)
	f.Add([]byte(`{"event":"x","userId":1.5e3,"integrations":{"All":false,"Mixpanel":{}},"timestamp":"2020-01-24T11:59:02.403+0530"}`), 0)
	f.Add([]byte(`{"event":"x","anonymousId":"a","originalTimestamp":"2024-03-01T10:00:00Z","sentAt":"2024-03-01T10:00:05Z"}`), 0)
	f.Add([]byte(strings.Repeat(" ", 101)), 100)
	for _, tt := range []string{
		``, `[]`, `"x"`, `null`, `{"event":"x","userId":"u"} x`, `{"type":"identify","event":"x","userId":"u"}`,
		`{"type":"page","name":"Home","userId":"u"}`, `{"type":"screen","anonymousId":"a","category":1}`,
		`{"type":"group","groupId":7,"userId":"u","traits":{"plan":"pro"}}`, `{"type":"alias","userId":"u","previousId":"p"}`,
		`{"type":"alias","anonymousId":"a","previousId":"p"}`, `{"type":"pageview","userId":"u"}`,
		`{"userId":"u"}`, `{"event":"x"}`, `{"event":"x","userId":true}`, `{"event":"x","userId":1e200}`,
		`{"event":"x","userId":"u","properties":[]}`, `{"event":"x","userId":"u","integrations":{"M":"yes"}}`,
		`{"event":"x","userId":"u","messageId":5}`, `{"event":"x","userId":"u","timestamp":"yesterday"}`,
		`{"event":"x","userId":"u","sentAt":1}`, `{"event":"x","userId":"u","originalTimestamp":"0000-01-01T00:00:00+01:00"}`,
	} {
		f.Add([]byte(tt), 0)
	}
	f.Fuzz(func(t *testing.T, body []byte, max int) {
		opts := Options{MaxEventBytes: max}
		ev, err := Normalize(body, received, opts)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Reason == "" {
				t.Fatalf("error %#v is not an *Error with a reason", err)
			}
			return
		}
		if !json.Valid(ev.JSON) || ev.JSON[0] != '{' {
			t.Fatalf("output is not a JSON object: %s", ev.JSON)
		}
		if ev.MessageID == "" || ev.UserID == "" && ev.AnonymousID == "" ||
			ev.Type == "track" && ev.Name == "" || ev.Type == "group" && ev.GroupID == "" ||
			ev.Type == "alias" && (ev.UserID == "" || ev.PreviousID == "") || !slices.Contains(sdk.AllTypes(), ev.Type) {
			t.Fatalf("an event without what its type requires: %+v", ev.Event)
		}

		// The output is itself a valid event that normalizes to the same facts; only
		// the size limit may not hold, since normalizing adds fields.
		again, err := Normalize(ev.JSON, received, Options{MaxEventBytes: len(ev.JSON)})
		if err != nil {
			t.Fatalf("normalized output rejected: %v\n%s", err, ev.JSON)
		}
		if again.MessageID != ev.MessageID || again.Type != ev.Type || again.Name != ev.Name || again.UserID != ev.UserID ||
			again.GroupID != ev.GroupID || again.PreviousID != ev.PreviousID ||
			again.AnonymousID != ev.AnonymousID || !again.Timestamp.Equal(ev.Timestamp) ||
			!maps.Equal(again.Integrations, ev.Integrations) {
			t.Fatalf("normalizing twice changed the event:\n%+v\n%+v", ev, again)
		}
	})
}

func BenchmarkNormalize(b *testing.B) {
	// Producers send compact JSON; the indentation above is for the reader.
	var compact bytes.Buffer
	if err := json.Compact(&compact, []byte(orderCompleted)); err != nil {
		b.Fatal(err)
	}
	body := compact.Bytes()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Normalize(body, received, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestSummarize(t *testing.T) {
	ev, err := Normalize([]byte(orderCompleted), received, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, at, err := Summarize(ev.JSON)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s, ev.Event) || !at.Equal(received) {
		t.Errorf("Summarize = %+v, %v; want the event's %+v, receivedAt %v", s, at, ev.Event, received)
	}
	for _, body := range []string{
		`{"type":"page","name":"Home","category":"Docs","userId":"u"}`,
		`{"type":"screen","anonymousId":"a"}`,
		`{"type":"group","groupId":"g1","userId":"u","traits":{"plan":"pro"}}`,
		`{"type":"alias","userId":"u","previousId":"p"}`,
		`{"type":"identify","userId":"u","name":"not a page name"}`,
	} {
		ev, err := Normalize([]byte(body), received, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if s, _, err := Summarize(ev.JSON); err != nil || !reflect.DeepEqual(s, ev.Event) {
			t.Errorf("Summarize(%s) = %+v, %v; want %+v", ev.JSON, s, err, ev.Event)
		}
	}
	if s, _, err := Summarize([]byte(`{"event":"Old","messageId":"m","timestamp":"2024-01-24T11:59:02Z","receivedAt":"2024-01-24T11:59:02Z"}`)); err != nil || s.Type != "track" || s.Name != "Old" {
		t.Errorf("Summarize of an event written without a type = %+v, %v; want a track call named Old", s, err)
	}
	for _, bad := range []string{
		`{"messageId":"m","timestamp":"2024-01-24T11:59:02Z"}`,
		`{"messageId":5,"timestamp":"2024-01-24T11:59:02Z","receivedAt":"2024-01-24T11:59:02Z"}`,
		`{"messageId":"m","timestamp":"yesterday","receivedAt":"2024-01-24T11:59:02Z"}`,
		`{"messageId":"m",`,
	} {
		if _, _, err := Summarize([]byte(bad)); err == nil {
			t.Errorf("Summarize(%s) accepted it", bad)
		}
	}
}

func BenchmarkSummarize(b *testing.B) {
	ev, err := Normalize([]byte(orderCompleted), received, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(ev.JSON)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Summarize(ev.JSON); err != nil {
			b.Fatal(err)
		}
	}
}
