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
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"trackd.dev/trackd/daemon/internal/jsonscan"
	"trackd.dev/trackd/sdk"
)

const (
	defaultMaxEventBytes = 32768
	// A numeric id is expanded to plain decimal digits; the cap stops a body such as
	// {"userId": 1e999999999} from asking for a gigabyte of zeros.
	maxNumericIDLen = 100
	// RFC 3339 wants "+05:30", but producers often write ISO 8601's "+0530".
	isoLayout   = "2006-01-02T15:04:05Z0700"
	timeExample = "2020-01-24T11:59:02.403Z"
)

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

// The top-level keys Normalize reads or writes. Other keys are carried through.
const (
	keyType = iota
	keyEvent
	keyUserID
	keyAnonymousID
	keyMessageID
	keyProperties
	keyContext
	keyIntegrations
	keyTimestamp
	keySentAt
	keyOriginalTimestamp
	keyReceivedAt
	keyVersion
	keyTraits
	keyName
	keyCategory
	keyGroupID
	keyPreviousID
	numKeys
)

var keyNames = [numKeys]string{
	"type", "event", "userId", "anonymousId", "messageId", "properties", "context",
	"integrations", "timestamp", "sentAt", "originalTimestamp", "receivedAt", "version",
	"traits", "name", "category", "groupId", "previousId",
}

// keyIndex is the index in keyNames of key, or -1.
func keyIndex(key []byte) int {
	switch string(key) {
	case "type":
		return keyType
	case "event":
		return keyEvent
	case "userId":
		return keyUserID
	case "anonymousId":
		return keyAnonymousID
	case "messageId":
		return keyMessageID
	case "properties":
		return keyProperties
	case "context":
		return keyContext
	case "integrations":
		return keyIntegrations
	case "timestamp":
		return keyTimestamp
	case "sentAt":
		return keySentAt
	case "originalTimestamp":
		return keyOriginalTimestamp
	case "receivedAt":
		return keyReceivedAt
	case "version":
		return keyVersion
	case "traits":
		return keyTraits
	case "name":
		return keyName
	case "category":
		return keyCategory
	case "groupId":
		return keyGroupID
	case "previousId":
		return keyPreviousID
	}
	return -1
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

// field is one top-level member of the event.
type field struct {
	key   []byte // the key decoded; for the usual plain key, the bytes between its quotes
	plain bool   // key is written as it reads: no escapes, valid UTF-8
	value []byte // the raw JSON value, without surrounding space
}

// object is an event split into its top-level members. Later duplicates of a key win, as
// they do for every encoding/json consumer downstream.
type object struct {
	fields []field
	last   [numKeys]int // index in fields of the last member with each known key, or -1
	// gen holds the values Normalize writes (numeric ids as strings, times); members and
	// lower are integrationsOf's. All are reused, through objects, from event to event.
	gen     []byte
	members []field
	lower   []byte
	order   []int // lastOfEach's, for integrationsOf and then encode
}

// objects saves the router an allocation of each of object's slices per event.
var objects = sync.Pool{New: func() any {
	return &object{fields: make([]field, 0, 32), gen: make([]byte, 0, 256), members: make([]field, 0, 16), order: make([]int, 0, 32)}
}}

// maxPooled keeps an object that a huge event grew out of the pool.
const maxPooled = 1024

func getObject() *object {
	o := objects.Get().(*object)
	for k := range o.last {
		o.last[k] = -1
	}
	return o
}

func putObject(o *object) {
	if cap(o.fields) > maxPooled || cap(o.members) > maxPooled || cap(o.order) > maxPooled || cap(o.gen) > 64*maxPooled {
		return
	}
	// Drop the references into the event's body so the pool does not keep it alive.
	clear(o.fields)
	clear(o.members)
	o.fields, o.members, o.gen, o.lower, o.order = o.fields[:0], o.members[:0], o.gen[:0], o.lower[:0], o.order[:0]
	objects.Put(o)
}

// keyBytes are keyNames as the keys of added fields.
var keyBytes = func() (b [numKeys][]byte) {
	for k, name := range keyNames {
		b[k] = []byte(name)
	}
	return b
}()

// get returns the value of a known key, nil when it is absent.
func (o *object) get(k int) json.RawMessage {
	if i := o.last[k]; i >= 0 {
		return o.fields[i].value
	}
	return nil
}

// set replaces the value of a known key, adding the key when it is absent.
func (o *object) set(k int, value []byte) {
	if i := o.last[k]; i >= 0 {
		o.fields[i].value = value
		return
	}
	o.last[k] = len(o.fields)
	o.fields = append(o.fields, field{key: keyBytes[k], plain: true, value: value})
}

// setGenerated sets a known key to what was just appended to o.gen: gen is o.gen with
// the value added at its end.
func (o *object) setGenerated(k int, gen []byte) {
	o.set(k, gen[len(o.gen):])
	o.gen = gen
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

// parseObject splits body into its top-level members, checking that the whole body is
// valid JSON as encoding/json defines it. The scan is done here rather than by
// encoding/json because it is the hot path of the router: one pass, and nothing copied.
func parseObject(body []byte, o *object) error {
	i := jsonscan.SkipSpace(body, 0)
	if i == len(body) {
		return invalid("", "event is empty; send one JSON object")
	}
	if body[i] != '{' {
		var raw json.RawMessage
		if err := json.Unmarshal(body, &raw); err != nil {
			return syntaxError(err)
		}
		return invalid("", "event is %s, not a JSON object", jsonscan.Kind(raw))
	}
	ok := jsonscan.EachMember(body[i:], func(key []byte, plain bool, value []byte) {
		f := field{key: jsonscan.Key(key, plain), plain: plain, value: value}
		if k := keyIndex(f.key); k >= 0 {
			o.last[k] = len(o.fields)
		}
		o.fields = append(o.fields, f)
	})
	if !ok {
		// The scanner only says where it stopped; encoding/json says why, in the words
		// the reasons have always used.
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			return syntaxError(err)
		}
		return invalid("", "event is not valid JSON")
	}
	return nil
}

func syntaxError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return invalid("", "event is not valid JSON: %v (at byte %d)", se, se.Offset)
	}
	return invalid("", "event is not valid JSON: %v", err)
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

// callName is a track call's event, required, or a page or screen call's
// name, optional; "" for the other types.
func callName(o *object, rule *callRule) (string, error) {
	if rule.nameKey < 0 {
		return "", nil
	}
	raw := o.get(rule.nameKey)
	key := keyNames[rule.nameKey]
	switch {
	case raw == nil && rule.nameRequired:
		return "", invalid(key, "%s is missing; set it to the event's name", key)
	case raw == nil || raw[0] == 'n' && !rule.nameRequired:
		return "", nil
	case raw[0] != '"' && rule.nameRequired:
		return "", invalid(key, "%s is %s; use the event's name as a string", key, jsonscan.Kind(raw))
	case raw[0] != '"':
		return "", invalid(key, "%s is %s; use a string or null", key, jsonscan.Kind(raw))
	}
	name := unquote(raw)
	if name == "" && rule.nameRequired {
		return "", invalid(key, "%s is empty; set it to the event's name", key)
	}
	return name, nil
}

// identity returns an id (userId, anonymousId, groupId, previousId) as a string. A
// numeric id is rewritten in the event as a JSON string, so destinations need not
// guess whether 123 and "123" are one user.
func identity(o *object, k int) (string, error) {
	raw := o.get(k)
	key := keyNames[k]
	switch {
	case raw == nil || raw[0] == 'n':
		return "", nil
	case raw[0] == '"':
		return unquote(raw), nil
	case raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9':
		id, ok := decimal(raw)
		if !ok {
			return "", invalid(key, "%s %s is over %d digits written out; send it as a string", key, raw, maxNumericIDLen)
		}
		o.setGenerated(k, appendString(o.gen, id))
		return id, nil
	default:
		return "", invalid(key, "%s is %s; use a string or a number", key, jsonscan.Kind(raw))
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
		return "", invalid("messageId", "messageId is %s; use a string of at most %d characters", jsonscan.Kind(raw), sdk.MaxMessageIDRunes)
	}
	id := unquote(raw)
	if n := utf8.RuneCountInString(id); n > sdk.MaxMessageIDRunes {
		return "", invalid("messageId", "messageId is %d characters, over the limit of %d", n, sdk.MaxMessageIDRunes)
	}
	return id, nil
}

// integrationsOf reads an integrations object already known to be an object or null.
func integrationsOf(o *object, raw json.RawMessage) (map[string]bool, error) {
	if raw == nil || raw[0] == 'n' {
		return nil, nil
	}
	members := o.members[:0]
	jsonscan.EachMember(raw, func(key []byte, plain bool, value []byte) {
		members = append(members, field{key: jsonscan.Key(key, plain), value: value})
	})
	o.members = members
	// As in a map decoded by encoding/json, the last of two identical keys wins.
	o.order = lastOfEach(members, o.order)
	bad := -1
	lower := o.lower[:0]
	for _, i := range o.order {
		m := &members[i]
		switch m.value[0] {
		case 'n':
		case 't', 'f', '{':
			lower = appendLower(lower, m.key)
		default:
			// Naming the first bad key in sort order keeps the reason the same on every
			// redelivery, whatever order the producer wrote the keys in.
			if bad < 0 {
				bad = i
			}
		}
	}
	o.lower = lower
	if bad >= 0 {
		field := "integrations." + string(members[bad].key)
		return nil, invalid(field, "%s is %s; use true, false, null or an object", field, jsonscan.Kind(members[bad].value))
	}
	if len(lower) == 0 {
		return nil, nil
	}
	// One string holds every lower-cased key; the map's keys are slices of it.
	keys := string(lower)
	enabled := make(map[string]bool, len(o.order))
	for _, i := range o.order {
		m := &members[i]
		if m.value[0] == 'n' {
			continue
		}
		key := keys[:lowerLen(m.key)]
		keys = keys[len(key):]
		on := m.value[0] != 'f'
		if prev, seen := enabled[key]; seen {
			on = on && prev
		}
		enabled[key] = on
	}
	return enabled, nil
}

// appendLower appends strings.ToLower(string(key)) to dst.
func appendLower(dst, key []byte) []byte {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return append(dst, strings.ToLower(string(key))...)
		}
	}
	for _, c := range key {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// lowerLen is the length appendLower gives key.
func lowerLen(key []byte) int {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return len(strings.ToLower(string(key)))
		}
	}
	return len(key)
}

// timeField parses an optional RFC 3339 field; ok is false when it is absent or null.
func timeField(o *object, k int) (t time.Time, ok bool, err error) {
	raw := o.get(k)
	key := keyNames[k]
	switch {
	case raw == nil || raw[0] == 'n':
		return time.Time{}, false, nil
	case raw[0] != '"':
		return time.Time{}, false, invalid(key, "%s is %s; use an RFC 3339 string such as %s", key, jsonscan.Kind(raw), timeExample)
	}
	if t, ok := parseUTC(raw[1 : len(raw)-1]); ok {
		return t, true, nil
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
	dst = t.UTC().AppendFormat(dst, sdk.TimeLayout)
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

// encode writes the fields as one JSON object with sorted keys, of each key
// the member written last, so the same event always yields the same bytes.
func (o *object) encode(sizeHint int) []byte {
	o.order = lastOfEach(o.fields, o.order)
	// Room for the fields this package adds: messageId, receivedAt, timestamp, version.
	out := make([]byte, 0, sizeHint+160)
	out = append(out, '{')
	for n, i := range o.order {
		f := &o.fields[i]
		if n > 0 {
			out = append(out, ',')
		}
		if f.plain {
			out = append(out, '"')
			out = append(out, f.key...)
			out = append(out, '"')
		} else {
			out = appendString(out, string(f.key))
		}
		out = append(out, ':')
		out = append(out, f.value...)
	}
	return append(out, '}')
}

// insertionSortMax is the most fields lastOfEach sorts by insertion:
// an event's top level has a dozen or two, and past a few dozen the
// quadratic sort would cost more than the general one.
const insertionSortMax = 32

// lastOfEach returns the indexes of fields sorted by key, keeping of each key
// the member written last, in order (its buffer). The fields stay where they
// are: sorting moves ints rather than fields, whose pointers would each go
// through the GC's write barrier.
func lastOfEach(fields []field, order []int) []int {
	order = order[:0]
	for i := range fields {
		order = append(order, i)
	}
	if len(order) <= insertionSortMax {
		// Stable: members with one key stay in the order written.
		for i := 1; i < len(order); i++ {
			for j := i; j > 0 && bytes.Compare(fields[order[j-1]].key, fields[order[j]].key) > 0; j-- {
				order[j-1], order[j] = order[j], order[j-1]
			}
		}
	} else {
		slices.SortStableFunc(order, func(a, b int) int { return bytes.Compare(fields[a].key, fields[b].key) })
	}
	out := order[:0]
	for n, i := range order {
		if n+1 < len(order) && bytes.Equal(fields[i].key, fields[order[n+1]].key) {
			continue
		}
		out = append(out, i)
	}
	return out
}

// Summarize reads back, from an event Normalize wrote, what a plugin gets and when
// the event was received, skipping over properties, context and the rest without
// decoding them. It refuses anything that is not a JSON object with string ids and
// valid timestamp and receivedAt.
func Summarize(event []byte) (s sdk.Event, receivedAt time.Time, err error) {
	s.JSON = event
	var (
		fault           string
		eventName, name string
		timestamp       []byte
		received        []byte
	)
	ok := jsonscan.EachMember(event, func(key []byte, plain bool, value []byte) {
		var dst *string
		switch string(key) {
		case "messageId":
			dst = &s.MessageID
		case "type":
			dst = &s.Type
		case "event":
			dst = &eventName
		case "name":
			dst = &name
		case "userId":
			dst = &s.UserID
		case "anonymousId":
			dst = &s.AnonymousID
		case "groupId":
			dst = &s.GroupID
		case "previousId":
			dst = &s.PreviousID
		case "timestamp":
			timestamp = value
			return
		case "receivedAt":
			received = value
			return
		default:
			return
		}
		switch value[0] {
		case '"':
			*dst = unquote(value)
		case 'n':
		default:
			if fault == "" {
				fault = string(key) + " is " + jsonscan.Kind(value) + ", not a string"
			}
		}
	})
	if !ok {
		return sdk.Event{}, time.Time{}, errors.New("not a valid JSON object")
	}
	if fault != "" {
		return sdk.Event{}, time.Time{}, errors.New(fault)
	}
	switch s.Type {
	case "":
		// Written before calls had other types than track.
		s.Type, s.Name = sdk.TypeTrack, eventName
	case sdk.TypeTrack:
		s.Name = eventName
	case sdk.TypePage, sdk.TypeScreen:
		s.Name = name
	}
	if s.Timestamp, err = summaryTime(timestamp, "timestamp"); err != nil {
		return sdk.Event{}, time.Time{}, err
	}
	if receivedAt, err = summaryTime(received, "receivedAt"); err != nil {
		return sdk.Event{}, time.Time{}, err
	}
	return s, receivedAt, nil
}

func summaryTime(raw []byte, key string) (time.Time, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return time.Time{}, fmt.Errorf("%s is missing or not a string", key)
	}
	if t, ok := parseUTC(raw[1 : len(raw)-1]); ok {
		return t, nil
	}
	t, err := ParseTime(unquote(raw))
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", key, err)
	}
	return t, nil
}
