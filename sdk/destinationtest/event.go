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

// Call is a call as a producer sends it, for [Event] to normalize.
type Call struct {
	Type        string // sdk.TypeTrack, sdk.TypeIdentify, ...; "" is a track call
	Name        string // a track call's "event"; a page or screen call's "name" ("" leaves it out)
	MessageID   string // "" gets a random UUID, as the daemon assigns one
	UserID      string // "" leaves userId out
	AnonymousID string // "" leaves anonymousId out
	GroupID     string // a group call's groupId
	PreviousID  string // an alias call's previousId
	// Timestamp is when the call happened. It is written in its own time
	// zone, as a producer would, and the daemon keeps it as written. Zero
	// means ReceivedAt, as for a call without timestamp, sentAt and
	// originalTimestamp.
	Timestamp time.Time
	// ReceivedAt is when trackd received the call; zero means Timestamp, or
	// the time Event is called if that is zero too.
	ReceivedAt time.Time
	Properties string // track, page, screen: a JSON object, kept as written; "" means {}
	Traits     string // identify, group: a JSON object, kept as written; "" means {}
	Context    string // a JSON object, kept as written; "" leaves context out
}

// Track is a track call: a Call whose Type may be left empty.
type Track = Call

// Event returns c as the daemon hands it to a plugin: the sdk.Event, whose
// JSON is the normalized call with its type, version 2, and messageId,
// timestamp and receivedAt filled in, and properties or traits ({} when not
// given). Plugins must not depend on the order of the JSON's keys. Event
// fails the test if Properties, Traits or Context is not a JSON object.
func Event(t testing.TB, c Call) sdk.Event {
	t.Helper()
	if c.Type == "" {
		c.Type = sdk.TypeTrack
	}
	if c.MessageID == "" {
		c.MessageID = uuid.NewString()
	}
	if c.ReceivedAt.IsZero() {
		c.ReceivedAt = c.Timestamp
	}
	if c.ReceivedAt.IsZero() {
		c.ReceivedAt = time.Now()
	}
	received := c.ReceivedAt.UTC().Truncate(time.Millisecond)
	fields := map[string]json.RawMessage{
		"type":       jsonString(c.Type),
		"version":    json.RawMessage(`2`),
		"messageId":  jsonString(c.MessageID),
		"receivedAt": jsonString(received.Format(sdk.TimeLayout)),
	}
	timestamp := c.Timestamp
	if timestamp.IsZero() {
		timestamp = received
		fields["timestamp"] = jsonString(timestamp.Format(sdk.TimeLayout))
	} else {
		fields["timestamp"] = jsonString(timestamp.Format(time.RFC3339Nano))
	}
	object := "properties"
	switch c.Type {
	case sdk.TypeIdentify, sdk.TypeGroup:
		object = "traits"
	case sdk.TypeAlias:
		object = ""
	}
	if object != "" {
		fields[object] = json.RawMessage(`{}`)
	}
	switch {
	case c.Type == sdk.TypeTrack:
		fields["event"] = jsonString(c.Name)
	case (c.Type == sdk.TypePage || c.Type == sdk.TypeScreen) && c.Name != "":
		fields["name"] = jsonString(c.Name)
	}
	for key, value := range map[string]string{
		"userId": c.UserID, "anonymousId": c.AnonymousID, "groupId": c.GroupID, "previousId": c.PreviousID,
	} {
		if value != "" {
			fields[key] = jsonString(value)
		}
	}
	for _, f := range []struct{ key, value string }{{"properties", c.Properties}, {"traits", c.Traits}, {"context", c.Context}} {
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
		MessageID:   c.MessageID,
		Type:        c.Type,
		Name:        c.Name,
		UserID:      c.UserID,
		AnonymousID: c.AnonymousID,
		GroupID:     c.GroupID,
		PreviousID:  c.PreviousID,
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
