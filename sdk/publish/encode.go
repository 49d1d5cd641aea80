package publish

import (
	"encoding/json"
	"fmt"
	"maps"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"trackd.dev/trackd/sdk"
)

// call is a call of any type, as the one encoding path takes it: each input
// type (Event, Identify, ...) fills the fields its type has.
type call struct {
	wire         wireCall // the string fields, written as they are
	required     []required
	properties   map[string]any // track, page and screen
	traits       map[string]any // identify and group
	context      map[string]any
	integrations map[string]any
	timestamp    time.Time
}

// required is a field of a call type that must not be empty; hint says what
// to put in it.
type required struct{ field, value, hint string }

// wireCall is the JSON body of a call. Fields that a call type does not have
// stay empty and are left out. Times are strings so that they carry
// milliseconds in UTC; sentAt is appended at send time.
type wireCall struct {
	Type              string          `json:"type"`
	Event             string          `json:"event,omitempty"`
	Name              string          `json:"name,omitempty"`
	Category          string          `json:"category,omitempty"`
	GroupID           string          `json:"groupId,omitempty"`
	PreviousID        string          `json:"previousId,omitempty"`
	UserID            string          `json:"userId,omitempty"`
	AnonymousID       string          `json:"anonymousId,omitempty"`
	Properties        json.RawMessage `json:"properties,omitempty"`
	Traits            json.RawMessage `json:"traits,omitempty"`
	Context           json.RawMessage `json:"context"`
	Integrations      json.RawMessage `json:"integrations,omitempty"`
	MessageID         string          `json:"messageId"`
	Timestamp         string          `json:"timestamp,omitempty"`
	OriginalTimestamp string          `json:"originalTimestamp"`
}

// encode checks k as the daemon would and returns its JSON body, sentAt
// excepted, and its messageId. Errors wrap ErrInvalid and name the Go field.
func (c *Client) encode(k call, now time.Time) ([]byte, string, error) {
	for _, r := range k.required {
		if r.value == "" {
			return nil, "", fmt.Errorf("%w: %s is empty; %s", ErrInvalid, r.field, r.hint)
		}
	}
	w := k.wire
	if w.UserID == "" && w.AnonymousID == "" {
		return nil, "", fmt.Errorf("%w: UserID and AnonymousID are both empty; set at least one", ErrInvalid)
	}
	if n := utf8.RuneCountInString(w.MessageID); n > sdk.MaxMessageIDRunes {
		return nil, "", fmt.Errorf("%w: MessageID is %d characters, over the limit of %d", ErrInvalid, n, sdk.MaxMessageIDRunes)
	}
	if err := checkIntegrations(k.integrations); err != nil {
		return nil, "", err
	}
	w.OriginalTimestamp = now.UTC().Format(sdk.TimeLayout)
	if w.MessageID == "" {
		w.MessageID = uuid.NewString()
	}
	if !k.timestamp.IsZero() {
		w.Timestamp = k.timestamp.UTC().Format(sdk.TimeLayout)
	}
	withLibrary := make(map[string]any, len(k.context)+1)
	maps.Copy(withLibrary, k.context)
	if _, ok := withLibrary["library"]; !ok {
		withLibrary["library"] = c.library
	}
	var err error
	if w.Context, err = encodeField("Context", withLibrary); err != nil {
		return nil, "", err
	}
	for _, f := range []struct {
		name string
		in   map[string]any
		out  *json.RawMessage
	}{
		{"Properties", k.properties, &w.Properties},
		{"Traits", k.traits, &w.Traits},
		{"Integrations", k.integrations, &w.Integrations},
	} {
		if f.in == nil {
			continue
		}
		if *f.out, err = encodeField(f.name, f.in); err != nil {
			return nil, "", err
		}
	}
	body, err := json.Marshal(w)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return body, w.MessageID, nil
}

func encodeField(name string, v map[string]any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s cannot be encoded as JSON: %v", ErrInvalid, name, err)
	}
	return b, nil
}

// checkIntegrations refuses what the daemon refuses: a value that is not a
// boolean, an object or null.
func checkIntegrations(in map[string]any) error {
	for key, v := range in {
		switch v.(type) {
		case nil, bool, map[string]any:
			continue
		}
		b, err := json.Marshal(v)
		if err == nil && len(b) > 0 && (b[0] == '{' || b[0] == 'n' || b[0] == 't' || b[0] == 'f') {
			continue
		}
		return fmt.Errorf("%w: Integrations[%q] is %T; use a bool, an object of options or nil", ErrInvalid, key, v)
	}
	return nil
}

// appendSentAt closes the JSON object body with a sentAt field.
func appendSentAt(body []byte, at time.Time) []byte {
	body = append(body[:len(body)-1], `,"sentAt":"`...)
	body = at.UTC().AppendFormat(body, sdk.TimeLayout)
	return append(body, `"}`...)
}
