package jsonscan

import "encoding/json"

// Key is a member's key as EachMember gives it, decoded: as it is when
// plain, else with its escapes resolved and bytes that are not UTF-8 made
// U+FFFD, as encoding/json reads it.
func Key(key []byte, plain bool) []byte {
	if plain {
		return key
	}
	var s string
	if err := json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &s); err != nil {
		panic("jsonscan: a key EachMember accepted does not decode: " + err.Error())
	}
	return []byte(s)
}

// Kind names the JSON type of a valid value, for error messages: "an
// object", "an array", "a string", "a boolean", "null" or "a number"; "empty"
// for no value.
func Kind(v []byte) string {
	switch {
	case len(v) == 0:
		return "empty"
	case v[0] == '{':
		return "an object"
	case v[0] == '[':
		return "an array"
	case v[0] == '"':
		return "a string"
	case v[0] == 't' || v[0] == 'f':
		return "a boolean"
	case v[0] == 'n':
		return "null"
	}
	return "a number"
}
