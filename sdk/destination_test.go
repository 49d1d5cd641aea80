package sdk

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestEventProperties(t *testing.T) {
	tests := []struct {
		json string
		want string // the properties re-encoded; "" with err
		err  string
	}{
		{json: `{"event":"A","properties":{"revenue":9.99, "currency":"EUR"}}`, want: `{"currency":"EUR","revenue":9.99}`},
		{json: `{"event":"A"}`, want: `{}`},
		{json: `{"event":"A","properties":null}`, want: `{}`},
		{json: `{"event":"A","properties":[1]}`, err: "event JSON is invalid"},
		{json: `{"event":`, err: "event JSON is invalid"},
	}
	for _, tt := range tests {
		props, err := Event{JSON: []byte(tt.json)}.Properties()
		if tt.err != "" {
			if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
				t.Errorf("%s: Properties error %v, want one starting %q", tt.json, err, tt.err)
			}
			continue
		}
		if err != nil || props == nil {
			t.Errorf("%s: Properties = %v, %v; want a map", tt.json, props, err)
			continue
		}
		if got, _ := json.Marshal(props); string(got) != tt.want {
			t.Errorf("%s: Properties = %s, want %s", tt.json, got, tt.want)
		}
	}
}
