package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// The plugin reads each call's JSON once, flattening context, properties and
// traits into columns as it goes. encoding/json would read it four or five
// times (the call, then each object and each nested object again) and spent
// more time than the database did on a row; see README.md, "What it costs".
// The daemon has checked the JSON already, so this reader is strict only as
// far as it must be not to misread it: what it cannot read is an error.

// maxDepth bounds how deep objects nest before a call is refused.
const maxDepth = 64

var errSyntax = errors.New("not valid JSON")

// scanner reads one JSON text.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next byte that is not space, 0 at the end.
func (s *scanner) peek() byte {
	s.space()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		return s.errorf("want %q", c)
	}
	s.i++
	return nil
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, s.i, fmt.Sprintf(format, args...))
}

// object reads an object, calling member for each member with its key;
// member must read the member's value.
func (s *scanner) object(member func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		key, err := s.key()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return s.errorf("want , or }")
		}
	}
}

// key reads a member's name. It is a slice of the input unless it has
// escapes.
func (s *scanner) key() ([]byte, error) {
	raw, escaped, err := s.quoted()
	if err != nil || !escaped {
		return raw[1 : len(raw)-1], err
	}
	str, err := unquote(raw)
	return []byte(str), err
}

// quoted reads a string, returning it with its quotes and whether it has
// escapes.
func (s *scanner) quoted() (raw []byte, escaped bool, err error) {
	if s.peek() != '"' {
		return nil, false, s.errorf("want a string")
	}
	start := s.i
	s.i++
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			s.i++
			return s.b[start:s.i], escaped, nil
		case '\\':
			escaped = true
			s.i += 2
		default:
			s.i++
		}
	}
	return nil, false, s.errorf("unterminated string")
}

// unquote decodes a JSON string with its quotes. A string with no escapes,
// in UTF-8, is its bytes; encoding/json decodes any other (and puts U+FFFD
// for bytes that are not UTF-8, as the daemon reads them).
func unquote(raw []byte) (string, error) {
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), nil
	}
	var str string
	if err := json.Unmarshal(raw, &str); err != nil {
		return "", fmt.Errorf("%w: %v", errSyntax, err)
	}
	return str, nil
}

// str reads a string or null ("").
func (s *scanner) str() (string, error) {
	if s.peek() == 'n' {
		return "", s.literal("null")
	}
	raw, _, err := s.quoted()
	if err != nil {
		return "", err
	}
	return unquote(raw)
}

func (s *scanner) literal(word string) error {
	if !bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		return s.errorf("want %s", word)
	}
	s.i += len(word)
	return nil
}

// skip reads a value of any kind and returns its bytes.
func (s *scanner) skip() ([]byte, error) {
	c := s.peek()
	start := s.i
	switch c {
	case '"':
		_, _, err := s.quoted()
		return s.b[start:s.i], err
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case '"':
				if _, _, err := s.quoted(); err != nil {
					return nil, err
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return s.b[start:s.i], nil
				}
			}
			s.i++
		}
		return nil, s.errorf("unterminated %c", c)
	case 't':
		return s.b[start : start+4], s.literal("true")
	case 'f':
		return s.b[start : start+5], s.literal("false")
	case 'n':
		return s.b[start : start+4], s.literal("null")
	}
	for s.i < len(s.b) && isNumberByte(s.b[s.i]) {
		s.i++
	}
	if s.i == start {
		return nil, s.errorf("want a value")
	}
	return s.b[start:s.i], nil
}

func isNumberByte(c byte) bool {
	return c >= '0' && c <= '9' || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E'
}

// leaf reads a value that is not an object: a string, float64 or bool, nil
// for null, an array as its JSON text (compacted), a number beyond double
// precision as unfit.
func (s *scanner) leaf() (any, error) {
	switch s.peek() {
	case '"':
		return s.str()
	case 't':
		return true, s.literal("true")
	case 'f':
		return false, s.literal("false")
	case 'n':
		return nil, s.literal("null")
	case '[':
		raw, err := s.skip()
		if err != nil {
			return nil, err
		}
		if bytes.ContainsAny(raw, " \t\r\n") {
			var b bytes.Buffer
			if err := json.Compact(&b, raw); err != nil {
				return nil, fmt.Errorf("%w: %v", errSyntax, err)
			}
			return b.String(), nil
		}
		return string(raw), nil
	}
	raw, err := s.skip()
	if err != nil {
		return nil, err
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	var numErr *strconv.NumError
	switch {
	case errors.As(err, &numErr) && errors.Is(numErr.Err, strconv.ErrRange):
		return unfit(raw), nil
	case err != nil:
		return nil, s.errorf("%s is not a number", raw)
	}
	return f, nil
}

// optString reads a string, or skips a value of another kind ("").
func (s *scanner) optString() (string, error) {
	if s.peek() == '"' {
		return s.str()
	}
	_, err := s.skip()
	return "", err
}
