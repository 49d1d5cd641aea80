// Package jsonscan splits JSON objects and arrays into their members in one pass, without
// copying or allocating: the router's and the HTTP front's hot paths read an event's
// top-level fields with it. It agrees with encoding/json on what is valid (FuzzScan checks
// that): RFC 8259, any bytes other than control characters inside strings, and at most
// MaxDepth nested objects and arrays.
package jsonscan

import "unicode/utf8"

// MaxDepth is encoding/json's nesting limit, the top-level value counting as one.
const MaxDepth = 10000

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// SkipSpace returns the index of the first byte at or after b[i] that is not JSON white space.
func SkipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// EachMember reads the JSON object that b holds (with white space around it allowed),
// calling fn with each member in the order written: the key as written between its
// quotes, whether that is also its decoded form (no escapes, valid UTF-8), and the raw
// value. It reports whether b is one valid JSON object; fn may have been called for the
// members before a fault.
func EachMember(b []byte, fn func(key []byte, plain bool, value []byte)) bool {
	i := SkipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	end := members(b, i, 1, fn)
	return end >= 0 && SkipSpace(b, end) == len(b)
}

// EachElement reads the JSON array that b holds (with white space around it allowed),
// calling fn with each element's raw value in order. It reports whether b is one valid
// JSON array; fn may have been called for the elements before a fault.
func EachElement(b []byte, fn func(value []byte)) bool {
	i := SkipSpace(b, 0)
	if i == len(b) || b[i] != '[' {
		return false
	}
	end := elements(b, i, 1, fn)
	return end >= 0 && SkipSpace(b, end) == len(b)
}

// members reads the object whose opening brace is b[i] and whose own nesting is
// depth, calling fn (when not nil) with each member, and returns the index just past
// its closing brace, or -1 if it is not a valid object.
func members(b []byte, i, depth int, fn func(key []byte, plain bool, value []byte)) int {
	i = SkipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1
	}
	for {
		if i == len(b) || b[i] != '"' {
			return -1
		}
		end, escaped := scanString(b, i)
		if end < 0 {
			return -1
		}
		key := b[i+1 : end-1]
		i = SkipSpace(b, end)
		if i == len(b) || b[i] != ':' {
			return -1
		}
		i = SkipSpace(b, i+1)
		start := i
		if i = skipValue(b, i, depth); i < 0 {
			return -1
		}
		if fn != nil {
			fn(key, !escaped && utf8.Valid(key), b[start:i])
		}
		i = SkipSpace(b, i)
		if i == len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = SkipSpace(b, i+1)
		case '}':
			return i + 1
		default:
			return -1
		}
	}
}

// elements is members for the array whose opening bracket is b[i].
func elements(b []byte, i, depth int, fn func(value []byte)) int {
	i = SkipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1
	}
	for {
		start := i
		if i = skipValue(b, i, depth); i < 0 {
			return -1
		}
		if fn != nil {
			fn(b[start:i])
		}
		i = SkipSpace(b, i)
		if i == len(b) {
			return -1
		}
		switch b[i] {
		case ',':
			i = SkipSpace(b, i+1)
		case ']':
			return i + 1
		default:
			return -1
		}
	}
}

// skipValue returns the index just past the value starting at b[i], or -1 if there is
// no valid value there. depth is the nesting of the container the value is in.
func skipValue(b []byte, i, depth int) int {
	if i >= len(b) {
		return -1
	}
	switch c := b[i]; {
	case c == '"':
		end, _ := scanString(b, i)
		return end
	case c == '{':
		if depth+1 > MaxDepth {
			return -1
		}
		return members(b, i, depth+1, nil)
	case c == '[':
		if depth+1 > MaxDepth {
			return -1
		}
		return elements(b, i, depth+1, nil)
	case c == 't':
		return literal(b, i, "true")
	case c == 'f':
		return literal(b, i, "false")
	case c == 'n':
		return literal(b, i, "null")
	case c == '-' || '0' <= c && c <= '9':
		return skipNumber(b, i)
	}
	return -1
}

func literal(b []byte, i int, word string) int {
	if len(b)-i < len(word) || string(b[i:i+len(word)]) != word {
		return -1
	}
	return i + len(word)
}

// skipNumber returns the index past the number at b[i], or -1:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) int {
	if b[i] == '-' {
		i++
	}
	switch {
	case i == len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = digits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func digits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// stringSafe marks the bytes a string may hold without a closer look.
var stringSafe = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// scanString returns the index past the string whose opening quote is b[i] (or -1 if it
// is not a valid string) and whether it holds escapes.
func scanString(b []byte, i int) (end int, escaped bool) {
	i++
	for {
		for i < len(b) && stringSafe[b[i]] {
			i++
		}
		if i == len(b) {
			return -1, escaped
		}
		switch b[i] {
		case '"':
			return i + 1, escaped
		case '\\':
			escaped = true
			if i+1 == len(b) {
				return -1, escaped
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHex(b[i+2]) || !isHex(b[i+3]) || !isHex(b[i+4]) || !isHex(b[i+5]) {
					return -1, escaped
				}
				i += 6
			default:
				return -1, escaped
			}
		default: // a control character
			return -1, escaped
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
