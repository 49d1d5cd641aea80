package normalize

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The scanner must agree with encoding/json on every input, or Normalize would accept
// events that later stages cannot read, or refuse good ones.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		orderCompleted, minimal, `{}`, ` { } `, `{"a":1}x`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`,
		`{"a":1.5E+3}`, `{"a":"\u00e9\n"}`, `{"a":"\x"}`, `{"a":"` + "\x01" + `"}`, `{"a":"\xff"}`,
		`{"a":[1,2,]}`, `{"a":{"b":[]},"c":nul}`, `{"a":true,"b":false,"c":null}`, `{"a" 1}`, `{,}`,
		`{"a":1,}`, `{"\ud800":"x"}`, `[1]`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var keys, values []string
		ok := eachMember(b, func(key []byte, plain bool, value []byte) {
			if plain != (!strings.Contains(string(key), `\`) && utf8.Valid(key)) {
				t.Fatalf("key %q: plain = %v", key, plain)
			}
			keys, values = append(keys, string(key)), append(values, string(value))
		})
		var m map[string]json.RawMessage
		want := json.Unmarshal(b, &m) == nil && m != nil
		if ok != want {
			t.Fatalf("eachMember says %v, encoding/json says %v, for %q", ok, want, b)
		}
		for i, v := range values {
			if !json.Valid([]byte(v)) || strings.TrimSpace(v) != v {
				t.Fatalf("member %q has value %q", keys[i], v)
			}
		}
	})
}

func TestScanDepth(t *testing.T) {
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		// The top-level object is one level; depth-1 arrays nest inside it.
		b := `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
		if got, want := eachMember([]byte(b), func([]byte, bool, []byte) {}), json.Valid([]byte(b)); got != want {
			t.Errorf("depth %d: eachMember says %v, encoding/json %v", depth, got, want)
		}
	}
}

// What parseUTC accepts it must read as time.Parse does.
func FuzzParseUTC(f *testing.F) {
	for _, s := range []string{
		"2024-01-24T11:59:02.403Z", "2024-01-24T11:59:02Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
		"2024-04-31T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-24T24:00:00Z", "2024-01-24T11:59:60Z",
		"2024-01-24T11:59:02.123456789Z", "2024-01-24T11:59:02.1234567891Z", "2024-01-24T11:59:02.Z",
		"2024-01-24t11:59:02z", "0000-01-01T00:00:00Z", "2024-01-24T11:59:02+01:00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUTC([]byte(s))
		if !ok {
			return
		}
		want, err := ParseTime(s)
		if err != nil {
			t.Fatalf("parseUTC accepted %q, which ParseTime refuses: %v", s, err)
		}
		if !got.Equal(want) || got.Location() != want.Location() {
			t.Fatalf("parseUTC(%q) = %v, ParseTime = %v", s, got, want)
		}
	})
}

func TestParseUTC(t *testing.T) {
	got, ok := parseUTC([]byte("2024-01-24T11:59:02.403Z"))
	if want := time.Date(2024, 1, 24, 11, 59, 2, 403e6, time.UTC); !ok || !got.Equal(want) {
		t.Errorf("parseUTC = %v, %v; want %v", got, ok, want)
	}
}
