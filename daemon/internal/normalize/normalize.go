// Package normalize validates a Segment-style track event and rewrites it into the form
// every later stage relies on (SPEC §4 steps 1–3). It does no NATS and no I/O, and reads no
// clock: receivedAt comes from JetStream so that it stays the same across redeliveries.
//
// Nested objects (properties, context, integrations) and unknown fields are carried as the
// raw bytes the producer sent, because destinations are owed the event as it was and
// re-encoding would cost time and change numbers and spacing.
package normalize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

const (
	defaultMaxEventBytes = 32768
	maxMessageIDRunes    = 100
	// A numeric id is expanded to plain decimal digits; the cap stops a body such as
	// {"userId": 1e999999999} from asking for a gigabyte of zeros.
	maxNumericIDLen = 100
	// receivedAt and computed timestamps always carry milliseconds so that they sort as
	// strings and every destination sees the same precision.
	timeLayout = "2006-01-02T15:04:05.000Z"
	// RFC 3339 wants "+05:30", but producers often write ISO 8601's "+0530".
	isoLayout   = "2006-01-02T15:04:05Z0700"
	timeExample = "2020-01-24T11:59:02.403Z"
)

// Options bound what Normalize accepts.
type Options struct {
	MaxEventBytes int // 0 (or less) means 32768
}

// Event is a validated, normalized track event.
type Event struct {
	JSON        []byte    // the normalized event as a JSON object
	MessageID   string    // the event's messageId, or the UUID assigned to it
	Name        string    // the "event" field
	UserID      string    // "" when absent
	AnonymousID string    // "" when absent
	Timestamp   time.Time // the normalized timestamp, in UTC
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
	fields, err := parseObject(body)
	if err != nil {
		return Event{}, err
	}

	if err := checkType(fields["type"]); err != nil {
		return Event{}, err
	}
	name, err := eventName(fields["event"])
	if err != nil {
		return Event{}, err
	}
	userID, err := identity(fields, "userId")
	if err != nil {
		return Event{}, err
	}
	anonymousID, err := identity(fields, "anonymousId")
	if err != nil {
		return Event{}, err
	}
	if userID == "" && anonymousID == "" {
		return Event{}, invalid("userId", "userId or anonymousId is required; set at least one to a non-empty string")
	}
	messageID, err := messageIDOf(fields["messageId"])
	if err != nil {
		return Event{}, err
	}
	for _, key := range [...]string{"properties", "context", "integrations"} {
		if raw, ok := fields[key]; ok && raw[0] != '{' && raw[0] != 'n' {
			return Event{}, invalid(key, "%s is %s; use an object or null", key, kindOf(raw))
		}
	}
	integrations, err := integrationsOf(fields["integrations"])
	if err != nil {
		return Event{}, err
	}
	clientTimestamp, hasTimestamp, err := timeField(fields, "timestamp")
	if err != nil {
		return Event{}, err
	}
	sentAt, hasSentAt, err := timeField(fields, "sentAt")
	if err != nil {
		return Event{}, err
	}
	originalTimestamp, hasOriginal, err := timeField(fields, "originalTimestamp")
	if err != nil {
		return Event{}, err
	}

	if messageID == "" {
		messageID = uuid.NewString()
		fields["messageId"] = appendString(nil, messageID)
	}
	received := receivedAt.UTC().Truncate(time.Millisecond)
	fields["receivedAt"] = appendTime(nil, received)
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
		fields["timestamp"] = appendTime(nil, timestamp)
	}
	fields["type"] = json.RawMessage(`"track"`)
	fields["version"] = json.RawMessage(`2`)
	if raw, ok := fields["properties"]; !ok || raw[0] == 'n' {
		fields["properties"] = json.RawMessage(`{}`)
	}

	return Event{
		JSON:         encode(fields, len(body)),
		MessageID:    messageID,
		Name:         name,
		UserID:       userID,
		AnonymousID:  anonymousID,
		Timestamp:    timestamp,
		Integrations: integrations,
	}, nil
}

// parseObject splits body into its top-level fields. Each value is the raw JSON the
// producer sent, without surrounding space; later duplicates of a key win, as they do for
// every encoding/json consumer downstream.
func parseObject(body []byte) (map[string]json.RawMessage, error) {
	i := 0
	for i < len(body) && isSpace(body[i]) {
		i++
	}
	if i == len(body) {
		return nil, invalid("", "event is empty; send one JSON object")
	}
	if body[i] != '{' {
		var raw json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return nil, syntaxError(err)
		}
		return nil, invalid("", "event is %s, not a JSON object", kindOf(raw))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, syntaxError(err)
	}
	return fields, nil
}

func syntaxError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return invalid("", "event is not valid JSON: %v (at byte %d)", se, se.Offset)
	}
	return invalid("", "event is not valid JSON: %v", err)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// kindOf names the JSON type of a valid, trimmed value for error messages.
func kindOf(raw []byte) string {
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	default:
		return "a number"
	}
}

// unquote decodes a valid JSON string. Most strings hold no escapes and are plain UTF-8,
// so they are sliced rather than run through the decoder.
func unquote(raw []byte) string {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		panic("normalize: unquote of a string encoding/json already accepted: " + err.Error())
	}
	return s
}

// quote shows a client value in an error without letting a huge one swamp the reason.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return strconv.Quote(s[:cut]) + "…"
	}
	return strconv.Quote(s)
}

func checkType(raw json.RawMessage) error {
	switch {
	case raw == nil || raw[0] == 'n':
		return nil
	case raw[0] != '"':
		return invalid("type", "type is %s; only track events are accepted", kindOf(raw))
	}
	if t := unquote(raw); t != "track" {
		return invalid("type", "type is %s; only track events are accepted", quote(t))
	}
	return nil
}

func eventName(raw json.RawMessage) (string, error) {
	switch {
	case raw == nil:
		return "", invalid("event", "event is missing; set it to the event's name")
	case raw[0] != '"':
		return "", invalid("event", "event is %s; use the event's name as a string", kindOf(raw))
	}
	name := unquote(raw)
	if name == "" {
		return "", invalid("event", "event is empty; set it to the event's name")
	}
	return name, nil
}

// identity returns userId or anonymousId as a string. A numeric id is rewritten in fields
// as a JSON string, so destinations need not guess whether 123 and "123" are one user.
func identity(fields map[string]json.RawMessage, key string) (string, error) {
	raw, ok := fields[key]
	switch {
	case !ok || raw[0] == 'n':
		return "", nil
	case raw[0] == '"':
		return unquote(raw), nil
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		id, ok := decimal(raw)
		if !ok {
			return "", invalid(key, "%s %s is over %d digits written out; send it as a string", key, raw, maxNumericIDLen)
		}
		fields[key] = appendString(nil, id)
		return id, nil
	default:
		return "", invalid(key, "%s is %s; use a string or a number", key, kindOf(raw))
	}
}

// decimal writes a valid JSON number as the shortest exact decimal without an exponent
// (1e3 → "1000", 1.50 → "1.5"), working on the digits so no float rounding can change an id.
// It reports false when the result would be longer than maxNumericIDLen.
func decimal(num []byte) (string, bool) {
	s := string(num)
	neg := s[0] == '-'
	if neg {
		s = s[1:]
	}
	exp := 0
	if e := strings.IndexAny(s, "eE"); e >= 0 {
		n, err := strconv.Atoi(strings.TrimPrefix(s[e+1:], "+"))
		if err != nil {
			n = maxNumericIDLen + 1 // out of int range: far too long either way, unless the digits are all zero
			if s[e+1] == '-' {
				n = -n
			}
		}
		exp, s = n, s[:e]
	}
	intPart, fracPart, _ := strings.Cut(s, ".")
	digits := strings.TrimRight(intPart+fracPart, "0")
	point := len(intPart) // digits[:point] is the integer part, before applying exp
	for len(digits) > 0 && digits[0] == '0' {
		digits, point = digits[1:], point-1
	}
	if digits == "" {
		return "0", true
	}
	if exp > maxNumericIDLen || exp < -maxNumericIDLen {
		return "", false
	}
	point += exp

	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	switch {
	case point <= 0:
		b.WriteString("0.")
		b.WriteString(strings.Repeat("0", -point))
		b.WriteString(digits)
	case point >= len(digits):
		b.WriteString(digits)
		b.WriteString(strings.Repeat("0", point-len(digits)))
	default:
		b.WriteString(digits[:point])
		b.WriteByte('.')
		b.WriteString(digits[point:])
	}
	if b.Len() > maxNumericIDLen {
		return "", false
	}
	return b.String(), true
}

// messageIDOf returns the client's messageId, or "" when one must be assigned.
func messageIDOf(raw json.RawMessage) (string, error) {
	switch {
	case raw == nil || raw[0] == 'n':
		return "", nil
	case raw[0] != '"':
		return "", invalid("messageId", "messageId is %s; use a string of at most %d characters", kindOf(raw), maxMessageIDRunes)
	}
	id := unquote(raw)
	if n := utf8.RuneCountInString(id); n > maxMessageIDRunes {
		return "", invalid("messageId", "messageId is %d characters, over the limit of %d", n, maxMessageIDRunes)
	}
	return id, nil
}

// integrationsOf reads an integrations object already known to be an object or null.
func integrationsOf(raw json.RawMessage) (map[string]bool, error) {
	if raw == nil || raw[0] == 'n' {
		return nil, nil
	}
	var values map[string]json.RawMessage
	if err := json.Unmarshal(raw, &values); err != nil {
		panic("normalize: integrations object encoding/json already accepted: " + err.Error())
	}
	var enabled map[string]bool
	bad := ""
	for key, v := range values {
		var on bool
		switch v[0] {
		case 'n':
			continue
		case 't', '{':
			on = true
		case 'f':
		default:
			// Map order is random; naming the first bad key in sort order keeps the
			// reason the same on every redelivery.
			if bad == "" || key < bad {
				bad = key
			}
			continue
		}
		if enabled == nil {
			enabled = make(map[string]bool, len(values))
		}
		lower := strings.ToLower(key)
		if prev, seen := enabled[lower]; seen {
			on = on && prev
		}
		enabled[lower] = on
	}
	if bad != "" {
		field := "integrations." + bad
		return nil, invalid(field, "%s is %s; use true, false, null or an object", field, kindOf(values[bad]))
	}
	return enabled, nil
}

// timeField parses an optional RFC 3339 field; ok is false when it is absent or null.
func timeField(fields map[string]json.RawMessage, key string) (t time.Time, ok bool, err error) {
	raw, present := fields[key]
	switch {
	case !present || raw[0] == 'n':
		return time.Time{}, false, nil
	case raw[0] != '"':
		return time.Time{}, false, invalid(key, "%s is %s; use an RFC 3339 string such as %s", key, kindOf(raw), timeExample)
	}
	s := unquote(raw)
	t, err = ParseTime(s)
	if err != nil {
		return time.Time{}, false, invalid(key, "%s %s is not an RFC 3339 time such as %s", key, quote(s), timeExample)
	}
	// Computed timestamps are written as four-digit UTC years; an offset that pushes the
	// year out of that range would make the output unreadable to the next parser.
	if y := t.UTC().Year(); y < 0 || y > 9999 {
		return time.Time{}, false, invalid(key, "%s %s falls outside the years 0000 to 9999 in UTC", key, quote(s))
	}
	return t, true, nil
}

// ParseTime parses a time as Normalize accepts it: RFC 3339, or ISO 8601 with
// an offset written +0530. Later stages use it to read a normalized timestamp.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t, err = time.Parse(isoLayout, s)
	}
	return t, err
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, '"')
	dst = t.UTC().AppendFormat(dst, timeLayout)
	return append(dst, '"')
}

// appendString writes s as a JSON string. s must be valid UTF-8, which holds for keys
// decoded by encoding/json and for the ids and times this package makes.
func appendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}

// encode writes fields as one JSON object with sorted keys, so the same event always
// yields the same bytes.
func encode(fields map[string]json.RawMessage, sizeHint int) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	// Room for the fields this package adds: messageId, receivedAt, timestamp, version.
	out := make([]byte, 0, sizeHint+160)
	out = append(out, '{')
	for i, k := range keys {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendString(out, k)
		out = append(out, ':')
		out = append(out, fields[k]...)
	}
	return append(out, '}')
}
