package sdk

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestEventPropertiesAndTraits(t *testing.T) {
	tests := []struct {
		json string
		want string // the properties re-encoded; "" with err
		err  string
	}{
		{json: `{"event":"A","KEY":{"revenue":9.99, "currency":"EUR"}}`, want: `{"currency":"EUR","revenue":9.99}`},
		{json: `{"event":"A"}`, want: `{}`},
		{json: `{"event":"A","KEY":null}`, want: `{}`},
		{json: `{"event":"A","KEY":[1]}`, err: "event JSON is invalid"},
		{json: `{"event":`, err: "event JSON is invalid"},
	}
	for key, decode := range map[string]func(Event) (map[string]json.RawMessage, error){
		"properties": Event.Properties, "traits": Event.Traits,
	} {
		for _, tt := range tests {
			tt.json = strings.ReplaceAll(tt.json, "KEY", key)
			props, err := decode(Event{JSON: []byte(tt.json)})
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.err) {
					t.Errorf("%s: %s error %v, want one starting %q", key, tt.json, err, tt.err)
				}
				continue
			}
			if err != nil || props == nil {
				t.Errorf("%s: %s = %v, %v; want a map", key, tt.json, props, err)
				continue
			}
			if got, _ := json.Marshal(props); string(got) != tt.want {
				t.Errorf("%s: %s = %s, want %s", key, tt.json, got, tt.want)
			}
		}
	}
}
