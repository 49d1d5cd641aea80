package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// The scanner must agree with encoding/json on every input, or Normalize would accept
// events that later stages cannot read, or refuse good ones.
func FuzzScan(f *testing.F) {
	for _, s := range []string{
		`{"event":"Order Completed","userId":"u1","properties":{"revenue":18.9,"currency":"USD"}}`, `{}`, ` { } `, `{"a":1}x`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":1e}`,
		`{"a":1.5E+3}`, `{"a":"\u00e9\n"}`, `{"a":"\x"}`, `{"a":"` + "\x01" + `"}`, `{"a":"\xff"}`,
		`{"a":[1,2,]}`, `{"a":{"b":[]},"c":nul}`, `{"a":true,"b":false,"c":null}`, `{"a" 1}`, `{,}`,
		`{"a":1,}`, `{"\ud800":"x"}`, `[1]`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var keys, values []string
		ok := EachMember(b, func(key []byte, plain bool, value []byte) {
			if plain != (!strings.Contains(string(key), `\`) && utf8.Valid(key)) {
				t.Fatalf("key %q: plain = %v", key, plain)
			}
			keys, values = append(keys, string(key)), append(values, string(value))
		})
		var m map[string]json.RawMessage
		want := json.Unmarshal(b, &m) == nil && m != nil
		if ok != want {
			t.Fatalf("EachMember says %v, encoding/json says %v, for %q", ok, want, b)
		}
		for i, v := range values {
			if !json.Valid([]byte(v)) || strings.TrimSpace(v) != v {
				t.Fatalf("member %q has value %q", keys[i], v)
			}
		}
	})
}

func TestScanDepth(t *testing.T) {
	for _, depth := range []int{MaxDepth - 1, MaxDepth, MaxDepth + 1} {
		// The top-level object is one level; depth-1 arrays nest inside it.
		b := `{"a":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
		if got, want := EachMember([]byte(b), func([]byte, bool, []byte) {}), json.Valid([]byte(b)); got != want {
			t.Errorf("depth %d: EachMember says %v, encoding/json %v", depth, got, want)
		}
	}
}

// EachElement must agree with encoding/json on arrays, as EachMember does on objects.
func FuzzEachElement(f *testing.F) {
	for _, s := range []string{`[]`, ` [ ] `, `[1]`, `[1,]`, `[,1]`, `[{"a":1},{"b":[2]}]`, `[1]x`, `[1 2]`, `{}`, `"x"`, `[`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var values []string
		ok := EachElement(b, func(value []byte) { values = append(values, string(value)) })
		var a []json.RawMessage
		want := json.Unmarshal(b, &a) == nil && a != nil
		if ok != want {
			t.Fatalf("EachElement says %v, encoding/json says %v, for %q", ok, want, b)
		}
		if !ok {
			return
		}
		if len(values) != len(a) {
			t.Fatalf("EachElement found %d elements, encoding/json %d, in %q", len(values), len(a), b)
		}
		for i, v := range values {
			if v != string(a[i]) {
				t.Fatalf("element %d is %q, encoding/json says %q", i, v, a[i])
			}
		}
	})
}

func TestKeyAndKind(t *testing.T) {
	for _, tt := range []struct {
		key   string
		plain bool
		want  string
	}{
		{"userId", true, "userId"},
		{`user\u0049d`, false, "userId"},
		{"\xff", false, "\uFFFD"},
	} {
		if got := string(Key([]byte(tt.key), tt.plain)); got != tt.want {
			t.Errorf("Key(%q, %v) = %q, want %q", tt.key, tt.plain, got, tt.want)
		}
	}
	for v, want := range map[string]string{`{}`: "an object", `[1]`: "an array", `"x"`: "a string", `true`: "a boolean", `null`: "null", `-1`: "a number", ``: "empty"} {
		if got := Kind([]byte(v)); got != want {
			t.Errorf("Kind(%q) = %q, want %q", v, got, want)
		}
	}
}
