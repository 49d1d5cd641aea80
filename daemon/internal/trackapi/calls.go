package trackapi

import (
	"encoding/json"
	"fmt"

	"trackd.dev/trackd/daemon/internal/jsonscan"
)

// The limits of Segment's tracking API, which the SDKs size their batches by.
const (
	MaxCallBytes  = 32 << 10
	MaxBatchBytes = 500 << 10
	MaxBatchCalls = 2500
	// maxMergedBytes bounds a batch's calls once its context and integrations
	// are merged into each: 2,500 calls of 1 KB with 1 KB merged in, and more.
	maxMergedBytes = 8 << 20
)

// badRequest is the message of a 400 answer: the body is not what the API takes.
type badRequest string

func (e badRequest) Error() string { return string(e) }

func badf(format string, args ...any) error { return badRequest(fmt.Sprintf(format, args...)) }

// envelope is what a batch request gives each of its calls that lacks it:
// raw JSON values, nil when the batch has none.
type envelope struct {
	context      []byte
	integrations []byte
	sentAt       []byte
	writeKey     string
}

// call is one call of a request, as it will be published.
type call struct {
	body []byte  // writeKey removed, the batch's fields merged in
	key  string  // its own writeKey; "" when it has none
	size int     // its size as the client sent it
	src  *source // whose key it came with, once authenticated
}

// parseBatch splits a batch request into its envelope and its calls.
func parseBatch(body []byte) (envelope, [][]byte, error) {
	var env envelope
	var batch []byte
	var fault error
	ok := jsonscan.EachMember(body, func(key []byte, plain bool, value []byte) {
		switch string(jsonscan.Key(key, plain)) {
		case "batch":
			batch = value
		case "context":
			env.context = nonNull(value)
		case "integrations":
			env.integrations = nonNull(value)
		case "sentAt":
			env.sentAt = nonNull(value)
		case "writeKey":
			env.writeKey, fault = stringMember("writeKey", value)
		}
	})
	if !ok {
		return env, nil, notAnObject("body", body)
	}
	if fault != nil {
		return env, nil, fault
	}
	for _, f := range [...]struct {
		name  string
		value []byte
		want  byte
	}{{"context", env.context, '{'}, {"integrations", env.integrations, '{'}, {"sentAt", env.sentAt, '"'}} {
		if f.value != nil && f.value[0] != f.want {
			return env, nil, badf("the batch's %s is %s; send %s or leave it out", f.name, jsonscan.Kind(f.value), jsonscan.Kind([]byte{f.want}))
		}
	}
	if batch == nil {
		return env, nil, badRequest(`body has no "batch" array of calls`)
	}
	var calls [][]byte
	if !jsonscan.EachElement(batch, func(v []byte) { calls = append(calls, v) }) {
		return env, nil, badf(`"batch" is %s, not an array of calls`, jsonscan.Kind(batch))
	}
	if len(calls) > MaxBatchCalls {
		return env, nil, badf("batch has %d calls, over the limit of %d; send them in several requests", len(calls), MaxBatchCalls)
	}
	for i, c := range calls {
		if c[0] != '{' {
			return env, nil, badf("batch[%d] is %s, not a call object", i, jsonscan.Kind(c))
		}
	}
	return env, calls, nil
}

// parseCall is one call as published: writeKey removed, typ set when the call
// has no type (typ "" sets none), and the envelope's fields merged in. The
// result is appended to arena, whose earlier contents stay where they are.
func parseCall(raw []byte, env *envelope, typ string, arena *[]byte) (call, error) {
	c := call{body: raw, size: len(raw)}
	var hasKey, hasType, hasSentAt bool
	var own struct{ context, integrations []byte }
	var fault error
	ok := jsonscan.EachMember(raw, func(key []byte, plain bool, value []byte) {
		switch string(jsonscan.Key(key, plain)) {
		case "writeKey":
			hasKey = true
			c.key, fault = stringMember("writeKey", value)
		case "type":
			hasType = hasType || nonNull(value) != nil
		case "sentAt":
			hasSentAt = hasSentAt || nonNull(value) != nil
		case "context":
			own.context = value
		case "integrations":
			own.integrations = value
		}
	})
	if !ok {
		return c, notAnObject("body", raw)
	}
	if fault != nil {
		return c, fault
	}
	setType := typ != "" && !hasType
	setSentAt := env.sentAt != nil && !hasSentAt
	if !hasKey && !setType && !setSentAt && env.context == nil && env.integrations == nil {
		return c, nil
	}

	out := *arena
	start := len(out)
	out = append(out, '{')
	jsonscan.EachMember(raw, func(key []byte, plain bool, value []byte) {
		switch string(jsonscan.Key(key, plain)) {
		case "writeKey":
			return
		case "context":
			if env.context != nil {
				return
			}
		case "integrations":
			if env.integrations != nil {
				return
			}
		case "type":
			if setType {
				return
			}
		case "sentAt":
			if setSentAt {
				return
			}
		}
		out = appendMember(out, key, value)
	})
	if env.context != nil {
		out = appendMember(out, []byte("context"), nil)
		out = appendMerged(out, own.context, env.context)
	}
	if env.integrations != nil {
		out = appendMember(out, []byte("integrations"), nil)
		out = appendMerged(out, own.integrations, env.integrations)
	}
	if setType {
		out = appendMember(out, []byte("type"), nil)
		out = append(out, '"')
		out = append(out, typ...)
		out = append(out, '"')
	}
	if setSentAt {
		out = appendMember(out, []byte("sentAt"), env.sentAt)
	}
	out = append(out, '}')
	*arena = out
	c.body = out[start:]
	return c, nil
}

// appendMember appends "key":value to an object being written after its
// opening brace; a nil value leaves the value to the caller.
func appendMember(out, key, value []byte) []byte {
	if out[len(out)-1] != '{' {
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, key...)
	out = append(out, '"', ':')
	return append(out, value...)
}

// appendMerged appends the object own with the members of shared that own
// lacks. When own is absent or null it is shared; when it is not an object it
// is kept as it is, for the router to refuse with its reason.
func appendMerged(out, own, shared []byte) []byte {
	if nonNull(own) == nil {
		return append(out, shared...)
	}
	if own[0] != '{' {
		return append(out, own...)
	}
	// A set, not a list: own may hold tens of thousands of names and shared
	// thousands; comparing each with each cost half a second of CPU for one
	// 500 KB request.
	names := map[string]struct{}{}
	out = append(out, '{')
	jsonscan.EachMember(own, func(key []byte, plain bool, value []byte) {
		names[string(jsonscan.Key(key, plain))] = struct{}{}
		out = appendMember(out, key, value)
	})
	jsonscan.EachMember(shared, func(key []byte, plain bool, value []byte) {
		if _, ok := names[string(jsonscan.Key(key, plain))]; ok {
			return
		}
		out = appendMember(out, key, value)
	})
	return append(out, '}')
}

// nonNull returns value, or nil when it is JSON null.
func nonNull(value []byte) []byte {
	if string(value) == "null" {
		return nil
	}
	return value
}

func stringMember(name string, value []byte) (string, error) {
	var s string
	if err := json.Unmarshal(value, &s); err != nil {
		return "", badf("%s is %s, not a string", name, jsonscan.Kind(value))
	}
	return s, nil
}

// notAnObject is the 400 for what of a request that is not one JSON object,
// in encoding/json's words when it is not JSON at all.
func notAnObject(what string, b []byte) error {
	var v json.RawMessage
	if err := json.Unmarshal(b, &v); err != nil {
		return badf("%s is not JSON: %v", what, err)
	}
	return badf("%s is %s, not a JSON object", what, jsonscan.Kind(v))
}
