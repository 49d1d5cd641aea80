package normalize

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"trackd.dev/trackd/daemon/internal/jsonscan"
	"trackd.dev/trackd/sdk"
	"trackd.dev/trackd/sdk/clip"
)

// A numeric id is expanded to plain decimal digits; the cap stops a body such as
// {"userId": 1e999999999} from asking for a gigabyte of zeros.
const maxNumericIDLen = 100

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
func quote(s string) string { return clip.Quote(s, 64) }

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
