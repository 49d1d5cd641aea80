package normalize

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"sync"

	"trackd.dev/trackd/daemon/internal/jsonscan"
)

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
