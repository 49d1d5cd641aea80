// Package normalize validates a call of the Segment spec (track, identify, page, screen,
// group, alias) and rewrites it into the form every later stage relies on (SPEC §4 steps
// 1–3, §4b). It does no NATS and no I/O, and reads no
// clock: receivedAt comes from JetStream so that it stays the same across redeliveries.
//
// Nested objects (properties, context, integrations) and unknown fields are carried as the
// raw bytes the producer sent, because destinations are owed the event as it was and
// re-encoding would cost time and change numbers and spacing.
package normalize

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"trackd.dev/trackd/daemon/internal/jsonscan"
	"trackd.dev/trackd/sdk"
)

const defaultMaxEventBytes = 32768

// Options bound what Normalize accepts.
type Options struct {
	MaxEventBytes int // 0 (or less) means 32768
}

// Event is a validated, normalized call: what crosses to plugins, and what the
// router needs besides.
type Event struct {
	sdk.Event
	// Integrations holds the event's integrations object with keys lower-cased;
	// true/false for booleans, true for objects; null values are left out. "All" is under "all".
	// When two spellings of a key disagree ({"Mixpanel": true, "mixpanel": false}), false
	// wins: the order of keys is not something a producer should have to get right.
	Integrations map[string]bool // nil when the event has none, or only nulls
}

// Error is why an event is invalid. Field names the offending field ("" for the body as a whole).
type Error struct {
	Field  string
	Reason string // one sentence naming the field, fit for the Trackd-Error header
}

func (e *Error) Error() string { return e.Reason }

func invalid(field, format string, args ...any) error {
	return &Error{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// callRule is what one call type requires beyond the rules every call shares
// (SPEC §4b): a new rule is a field here, not a branch in every stage.
type callRule struct {
	typ  string
	json []byte // typ as a JSON string
	// object is the key of the call's object of values (properties or
	// traits; -1 for none): absent, null or an object, and {} when absent.
	object int
	// strings are keys that must be absent, null or a string.
	strings []int
	// ids are keys that must hold a non-empty string, or a number that is
	// written as its decimal string.
	ids []int
	// nameKey holds the call's name (-1 for none): event for track,
	// required; name for page and screen, absent, null or a string.
	nameKey      int
	nameRequired bool
}

var callRules = [...]callRule{
	{typ: sdk.TypeTrack, object: keyProperties, nameKey: keyEvent, nameRequired: true},
	{typ: sdk.TypeIdentify, object: keyTraits, nameKey: -1},
	{typ: sdk.TypePage, object: keyProperties, strings: []int{keyCategory}, nameKey: keyName},
	{typ: sdk.TypeScreen, object: keyProperties, strings: []int{keyCategory}, nameKey: keyName},
	{typ: sdk.TypeGroup, object: keyTraits, ids: []int{keyGroupID}, nameKey: -1},
	{typ: sdk.TypeAlias, object: -1, ids: []int{keyUserID, keyPreviousID}, nameKey: -1},
}

func init() {
	for i := range callRules {
		callRules[i].json = appendString(nil, callRules[i].typ)
	}
}

// Normalize validates body and returns the normalized event, or an *Error.
// receivedAt is the time JetStream stored the message.
func Normalize(body []byte, receivedAt time.Time, opts Options) (Event, error) {
	limit := opts.MaxEventBytes
	if limit <= 0 {
		limit = defaultMaxEventBytes
	}
	if len(body) > limit {
		return Event{}, invalid("", "event is %d bytes, over the limit of %d bytes (ingest.max_event_bytes)", len(body), limit)
	}
	o := getObject()
	defer putObject(o)
	if err := parseObject(body, o); err != nil {
		return Event{}, err
	}

	rule, err := ruleOf(o.get(keyType))
	if err != nil {
		return Event{}, err
	}
	name, err := callName(o, rule)
	if err != nil {
		return Event{}, err
	}
	userID, err := identity(o, keyUserID)
	if err != nil {
		return Event{}, err
	}
	anonymousID, err := identity(o, keyAnonymousID)
	if err != nil {
		return Event{}, err
	}
	var ids [numKeys]string
	for _, k := range rule.ids {
		if ids[k], err = identity(o, k); err != nil {
			return Event{}, err
		}
		if ids[k] == "" {
			return Event{}, invalid(keyNames[k], "%s is required for %s call; set it to a non-empty string", keyNames[k], article(rule.typ))
		}
	}
	if userID == "" && anonymousID == "" {
		return Event{}, invalid("userId", "userId or anonymousId is required; set at least one to a non-empty string")
	}
	messageID, err := messageIDOf(o.get(keyMessageID))
	if err != nil {
		return Event{}, err
	}
	for _, k := range [...]int{rule.object, keyContext, keyIntegrations} {
		if k < 0 {
			continue
		}
		if raw := o.get(k); raw != nil && raw[0] != '{' && raw[0] != 'n' {
			return Event{}, invalid(keyNames[k], "%s is %s; use an object or null", keyNames[k], jsonscan.Kind(raw))
		}
	}
	for _, k := range rule.strings {
		if raw := o.get(k); raw != nil && raw[0] != '"' && raw[0] != 'n' {
			return Event{}, invalid(keyNames[k], "%s is %s; use a string or null", keyNames[k], jsonscan.Kind(raw))
		}
	}
	integrations, err := integrationsOf(o, o.get(keyIntegrations))
	if err != nil {
		return Event{}, err
	}
	clientTimestamp, hasTimestamp, err := timeField(o, keyTimestamp)
	if err != nil {
		return Event{}, err
	}
	sentAt, hasSentAt, err := timeField(o, keySentAt)
	if err != nil {
		return Event{}, err
	}
	originalTimestamp, hasOriginal, err := timeField(o, keyOriginalTimestamp)
	if err != nil {
		return Event{}, err
	}

	if messageID == "" {
		messageID = uuid.NewString()
		o.setGenerated(keyMessageID, appendString(o.gen, messageID))
	}
	received := receivedAt.UTC().Truncate(time.Millisecond)
	o.setGenerated(keyReceivedAt, appendTime(o.gen, received))
	var timestamp time.Time
	switch {
	case hasTimestamp:
		// Kept as sent: backfills carry their own time and offset.
		timestamp = clientTimestamp.UTC()
	case hasSentAt && hasOriginal:
		// The device clock may be off; sentAt−originalTimestamp is how long the event
		// waited on the device, which is the one span that clock measures well.
		timestamp = received.Add(-sentAt.Sub(originalTimestamp))
	case hasOriginal:
		timestamp = originalTimestamp
	default:
		timestamp = received
	}
	if !hasTimestamp {
		timestamp = timestamp.UTC().Truncate(time.Millisecond)
		o.setGenerated(keyTimestamp, appendTime(o.gen, timestamp))
	}
	o.set(keyType, rule.json)
	o.set(keyVersion, versionJSON)
	if rule.object >= 0 {
		if raw := o.get(rule.object); raw == nil || raw[0] == 'n' {
			o.set(rule.object, emptyObjectJSON)
		}
	}

	return Event{
		Event: sdk.Event{
			JSON:        o.encode(len(body)),
			MessageID:   messageID,
			Type:        rule.typ,
			Name:        name,
			UserID:      userID,
			AnonymousID: anonymousID,
			GroupID:     ids[keyGroupID],
			PreviousID:  ids[keyPreviousID],
			Timestamp:   timestamp,
		},
		Integrations: integrations,
	}, nil
}

var (
	versionJSON     = []byte(`2`)
	emptyObjectJSON = []byte(`{}`)
)

// article is "a type" or "an type", for reasons.
func article(typ string) string {
	if typ[0] == 'a' || typ[0] == 'i' {
		return "an " + typ
	}
	return "a " + typ
}

// ruleOf is the rule of the call's type; an absent or null type is track.
func ruleOf(raw json.RawMessage) (*callRule, error) {
	switch {
	case raw == nil || raw[0] == 'n':
		return &callRules[0], nil
	case raw[0] != '"':
		return nil, invalid("type", "type is %s; use one of %s", jsonscan.Kind(raw), typeList)
	}
	t := unquote(raw)
	for i := range callRules {
		if callRules[i].typ == t {
			return &callRules[i], nil
		}
	}
	return nil, invalid("type", "type is %s, which is not a call type; use one of %s", quote(t), typeList)
}

var typeList = strings.Join(sdk.AllTypes(), ", ")
