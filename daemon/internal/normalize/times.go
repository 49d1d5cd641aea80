package normalize

import (
	"time"

	"trackd.dev/trackd/daemon/internal/jsonscan"
	"trackd.dev/trackd/sdk"
)

const (
	// RFC 3339 wants "+05:30", but producers often write ISO 8601's "+0530".
	isoLayout   = "2006-01-02T15:04:05Z0700"
	timeExample = "2020-01-24T11:59:02.403Z"
)

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
