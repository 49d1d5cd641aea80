package normalize

import (
	"encoding/json"
	"strings"
	"unicode/utf8"

	"trackd.dev/trackd/daemon/internal/jsonscan"
)

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
