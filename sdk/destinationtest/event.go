package destinationtest

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"trackd.dev/trackd/sdk"
)

// Track is a track event as a producer sends it, for [Event] to normalize.
type Track struct {
	Name        string // the "event" field
	MessageID   string // "" gets a random UUID, as the daemon assigns one
	UserID      string // "" leaves userId out
	AnonymousID string // "" leaves anonymousId out
	// Timestamp is when the event happened. It is written in its own time
	// zone, as a producer would, and the daemon keeps it as written. Zero
	// means ReceivedAt, as for an event without timestamp, sentAt and
	// originalTimestamp.
	Timestamp time.Time
	// ReceivedAt is when trackd received the event; zero means Timestamp, or
	// the time Event is called if that is zero too.
	ReceivedAt time.Time
	Properties string // a JSON object, kept as written; "" means {}
	Context    string // a JSON object, kept as written; "" leaves context out
}

// Event returns tr as the daemon hands it to a plugin: the sdk.Event, whose
// JSON is the normalized event with type "track", version 2, and messageId,
// timestamp and receivedAt filled in. Plugins must not depend on the order of
// the JSON's keys. Event fails the test if Properties or Context is not a
// JSON object.
func Event(t testing.TB, tr Track) sdk.Event {
	t.Helper()
	if tr.MessageID == "" {
		tr.MessageID = uuid.NewString()
	}
	if tr.ReceivedAt.IsZero() {
		tr.ReceivedAt = tr.Timestamp
	}
	if tr.ReceivedAt.IsZero() {
		tr.ReceivedAt = time.Now()
	}
	received := tr.ReceivedAt.UTC().Truncate(time.Millisecond)
	fields := map[string]json.RawMessage{
		"type":       json.RawMessage(`"track"`),
		"version":    json.RawMessage(`2`),
		"event":      jsonString(tr.Name),
		"messageId":  jsonString(tr.MessageID),
		"receivedAt": jsonString(received.Format(sdk.TimeLayout)),
		"properties": json.RawMessage(`{}`),
	}
	timestamp := tr.Timestamp
	if timestamp.IsZero() {
		timestamp = received
		fields["timestamp"] = jsonString(timestamp.Format(sdk.TimeLayout))
	} else {
		fields["timestamp"] = jsonString(timestamp.Format(time.RFC3339Nano))
	}
	if tr.UserID != "" {
		fields["userId"] = jsonString(tr.UserID)
	}
	if tr.AnonymousID != "" {
		fields["anonymousId"] = jsonString(tr.AnonymousID)
	}
	for _, f := range []struct{ key, value string }{{"properties", tr.Properties}, {"context", tr.Context}} {
		if f.value == "" {
			continue
		}
		raw := bytes.TrimSpace([]byte(f.value))
		if !json.Valid(raw) || raw[0] != '{' {
			t.Fatalf("destinationtest.Event: %s is not a JSON object: %s", f.key, f.value)
		}
		fields[f.key] = raw
	}

	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, key := range slices.Sorted(maps.Keys(fields)) {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(jsonString(key))
		buf.WriteByte(':')
		buf.Write(fields[key])
	}
	buf.WriteByte('}')
	return sdk.Event{
		JSON:        buf.Bytes(),
		MessageID:   tr.MessageID,
		Name:        tr.Name,
		UserID:      tr.UserID,
		AnonymousID: tr.AnonymousID,
		Timestamp:   timestamp.UTC(),
	}
}

// jsonString encodes s as the daemon does: without escaping <, > and &,
// which encoding/json escapes by default.
func jsonString(s string) json.RawMessage {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
