package main

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestColumnName(t *testing.T) {
	tests := []struct{ key, want string }{
		{"firstName", "first_name"},
		{"first_name", "first_name"},
		{"FirstName", "first_name"},
		{"userID", "user_id"},
		{"user_ID", "user_id"},
		{"HTMLParser", "html_parser"},
		{"page2Count", "page2_count"},
		{"Order Completed", "order_completed"},
		{"order-completed!", "order_completed"},
		{"$email", "email"},
		{"__private__key__", "private_key"},
		{"X-Forwarded-For", "x_forwarded_for"},
		{"context_page_url", "context_page_url"},
		{"2fa", "_2fa"},
		{"Ünïcode Straße", "ünïcode_straße"},
		{"ÄpfelBirnen", "äpfel_birnen"},
		{"!!!", "_"},
		{"", "_"},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
		// Cut on a character boundary: 62 bytes of "a" and a 2-byte "é".
		{strings.Repeat("a", 62) + "é", strings.Repeat("a", 62)},
	}
	for _, tt := range tests {
		if got := columnName(tt.key); got != tt.want {
			t.Errorf("columnName(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

func TestEventTableName(t *testing.T) {
	tests := []struct{ event, want string }{
		{"Order Completed", "order_completed"},
		{"Tracks", "_tracks"},
		{"users", "_users"},
		{"Discards", "_discards"},
		{"3D Secure Passed", "_3d_secure_passed"},
		{"🎉", "_"},
		{strings.Repeat("Long ", 20), strings.Repeat("long_", 12) + "lon"},
	}
	for _, tt := range tests {
		if got := eventTableName(tt.event); got != tt.want {
			t.Errorf("eventTableName(%q) = %q, want %q", tt.event, got, tt.want)
		}
	}
}

func TestScannerLeaf(t *testing.T) {
	tests := []struct {
		raw  string
		want any
	}{
		{`"plain"`, "plain"},
		{`"esc\"aped\u00e9"`, `esc"apedé`},
		{`12.5`, 12.5},
		{`-3`, -3.0},
		{`true`, true},
		{`false`, false},
		{`null`, nil},
		{`[1, "two", {"three": 3}]`, `[1,"two",{"three":3}]`},
		{`1e400`, unfit("1e400")},
	}
	for _, tt := range tests {
		s := scanner{b: []byte(tt.raw)}
		got, err := s.leaf()
		if err != nil || got != tt.want {
			t.Errorf("leaf(%s) = %#v, %v; want %#v", tt.raw, got, err, tt.want)
		}
	}
}

// The one-pass reader reads any object as encoding/json does, flattened by
// the rules of the layout.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{}`,
		`{"a":1,"b":"two","c":true,"d":null,"e":[1,{"x":2}],"f":{"g":{"h":"deep"}}}`,
		`{"firstName":"Ada","address":{"city":"London","geo":{"lat":51.5,"lng":-0.12}}}`,
		`{ "spaced" : [ 1 , 2 ] , "esc\"aped" : "line\nbreak\u00e9" , "big" : 1e400 , "neg" : -0.5e-3 }`,
		`{"":1,"!!!":{"":2},"é":"ü","\u0041B":"x"}`,
		`{"html":"<b>&amp;</b>","arr":["<"],"empty":{},"nested":{"empty":{}}}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, object string) {
		var decoded map[string]any
		d := json.NewDecoder(strings.NewReader(object))
		d.UseNumber()
		if !json.Valid([]byte(object)) || d.Decode(&decoded) != nil || decoded == nil || hasDuplicateKeys(object) {
			return
		}
		want := map[string]any{}
		paths := map[string]string{}
		if !reference(t, want, paths, "", decoded, 1) {
			return // two keys make one name: which wins depends on their order
		}
		var n namer
		p, err := n.parse([]byte(`{"type":"track","properties":`+object+`}`), "properties")
		if err != nil {
			t.Fatalf("parse %s: %v", object, err)
		}
		members := map[string]any{}
		for _, f := range p.members {
			members[f.name] = f.value
		}
		if len(members) != len(want) {
			t.Fatalf("parse %s: %v, want %v", object, members, want)
		}
		for name, w := range want {
			got := members[name]
			if arr, ok := w.([]any); ok {
				var g []any
				s, _ := got.(string)
				if err := json.Unmarshal([]byte(s), &g); err != nil || !reflect.DeepEqual(numbers(g), numbers(arr)) {
					t.Errorf("parse %s: %s = %#v, want the array %v", object, name, got, arr)
				}
				continue
			}
			if got != w {
				t.Errorf("parse %s: %s = %#v, want %#v", object, name, got, w)
			}
		}
	})
}

// reference flattens a value decoded by encoding/json as flatten does,
// reporting false when two paths make one name or objects nest too deep.
func reference(t *testing.T, out map[string]any, paths map[string]string, prefix string, obj map[string]any, depth int) bool {
	if depth > maxDepth {
		return false
	}
	for k, v := range obj {
		path := k
		if prefix != "" {
			path = prefix + "_" + k
		}
		if sub, ok := v.(map[string]any); ok {
			if !reference(t, out, paths, path, sub, depth+1) {
				return false
			}
			continue
		}
		name := columnName(path)
		if other, ok := paths[name]; ok && other != path {
			return false
		}
		paths[name] = path
		switch v := v.(type) {
		case nil:
		case json.Number:
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil {
				out[name] = unfit(v)
			} else {
				out[name] = f
			}
		default:
			out[name] = v
		}
	}
	return true
}

// numbers makes the json.Numbers of a decoded value float64, as a plain
// json.Unmarshal reads them.
func numbers(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = numbers(e)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			out[k] = numbers(e)
		}
		return out
	}
	return v
}

// hasDuplicateKeys says whether an object of the valid JSON text js has a key
// twice, whose value encoding/json decodes as the last one's alone.
func hasDuplicateKeys(js string) bool {
	type frame struct {
		keys    map[string]bool // nil for an array
		wantKey bool
	}
	var stack []*frame
	d := json.NewDecoder(strings.NewReader(js))
	for {
		tok, err := d.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if s, ok := tok.(string); ok && top != nil && top.keys != nil && top.wantKey {
			if top.keys[s] {
				return true
			}
			top.keys[s], top.wantKey = true, false
			continue
		}
		if top != nil && top.keys != nil {
			top.wantKey = true // a value was read, or the object ends
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}
