package route

import (
	"slices"
	"testing"
)

func TestRoute(t *testing.T) {
	table := NewTable([]Destination{
		{ID: "amplitude", Name: "Amplitude"},
		{ID: "ga4", Name: "Google Analytics 4", Aliases: []string{"GA4"}},
		{ID: "hook", Name: "Webhook", Events: []string{"Order *", "Product Added"}, ExcludeEvents: []string{"Order Refunded"}},
		{ID: "mixpanel", Name: "Mixpanel", Aliases: []string{"mp"}},
	})
	every := []string{"amplitude", "ga4", "hook", "mixpanel"}
	tests := []struct {
		name         string
		event        string
		integrations map[string]bool
		want         []string
	}{
		{"no integrations reaches all", "Order Completed", nil, every},
		{"All false, one true", "Order Completed", map[string]bool{"all": false, "mixpanel": true}, []string{"mixpanel"}},
		{"one false reaches the rest", "Order Completed", map[string]bool{"amplitude": false}, []string{"ga4", "hook", "mixpanel"}},
		// normalize turns an options object into true.
		{"options object enables", "Order Completed", map[string]bool{"all": false, "amplitude": true}, []string{"amplitude"}},
		// normalize leaves null out: "not said", so All decides.
		{"All false, X null", "Order Completed", map[string]bool{"all": false}, nil},
		{"alias matches", "Order Completed", map[string]bool{"all": false, "ga4": true, "mp": true}, []string{"ga4", "mixpanel"}},
		{"full name with spaces", "Order Completed", map[string]bool{"google analytics 4": false}, []string{"amplitude", "hook", "mixpanel"}},
		{"All true, one false", "Order Completed", map[string]bool{"all": true, "webhook": false}, []string{"amplitude", "ga4", "mixpanel"}},
		{"event glob excludes", "Signed Up", nil, []string{"amplitude", "ga4", "mixpanel"}},
		{"exclude wins over include", "Order Refunded", nil, []string{"amplitude", "ga4", "mixpanel"}},
		{"exact include", "Product Added", map[string]bool{"all": false, "webhook": true}, []string{"hook"}},
		{"own key beats All even when globbed out", "Signed Up", map[string]bool{"all": false, "webhook": true}, nil},
		{"unknown keys are ignored", "Order Completed", map[string]bool{"salesforce": false}, every},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := table.Route(nil, tt.event, tt.integrations)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Route(%q, %v) = %v, want %v", tt.event, tt.integrations, got, tt.want)
			}
		})
	}
}

func BenchmarkRoute(b *testing.B) {
	table := NewTable([]Destination{
		{ID: "amplitude", Name: "Amplitude"},
		{ID: "ga4", Name: "Google Analytics 4", Aliases: []string{"GA4"}},
		{ID: "mixpanel", Name: "Mixpanel", Events: []string{"Order *"}},
	})
	integrations := map[string]bool{"all": true, "amplitude": false}
	buf := make([]string, 0, 4)
	b.ReportAllocs()
	for b.Loop() {
		buf = table.Route(buf[:0], "Order Completed", integrations)
	}
}

func TestExplainAgreesWithRoute(t *testing.T) {
	table := NewTable([]Destination{
		{ID: "a", Name: "A"},
		{ID: "b", Name: "B", Events: []string{"Order *"}},
		{ID: "c", Name: "C"},
	})
	got := table.Explain("Signed Up", map[string]bool{"c": false})
	want := []Verdict{{ID: "a", Routed: true}, {ID: "b", Reason: ReasonFilter}, {ID: "c", Reason: ReasonIntegrations}}
	if !slices.Equal(got, want) {
		t.Fatalf("Explain = %v, want %v", got, want)
	}
	var routed []string
	for _, v := range got {
		if v.Routed {
			routed = append(routed, v.ID)
		}
	}
	if r := table.Route(nil, "Signed Up", map[string]bool{"c": false}); !slices.Equal(r, routed) {
		t.Fatalf("Route = %v, Explain routed %v", r, routed)
	}
}
