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
		{ID: "pages", Name: "Pages", Events: []string{"Home"}, Takes: func(t string) bool { return t == "page" || t == "identify" }},
	})
	every := []string{"amplitude", "ga4", "hook", "mixpanel"}
	tests := []struct {
		name         string
		callType     string // "" is track
		event        string
		integrations map[string]bool
		want         []string
	}{
		{"no integrations reaches all", "", "Order Completed", nil, every},
		{"All false, one true", "", "Order Completed", map[string]bool{"all": false, "mixpanel": true}, []string{"mixpanel"}},
		{"one false reaches the rest", "", "Order Completed", map[string]bool{"amplitude": false}, []string{"ga4", "hook", "mixpanel"}},
		// normalize turns an options object into true.
		{"options object enables", "", "Order Completed", map[string]bool{"all": false, "amplitude": true}, []string{"amplitude"}},
		// normalize leaves null out: "not said", so All decides.
		{"All false, X null", "", "Order Completed", map[string]bool{"all": false}, nil},
		{"alias matches", "", "Order Completed", map[string]bool{"all": false, "ga4": true, "mp": true}, []string{"ga4", "mixpanel"}},
		{"full name with spaces", "", "Order Completed", map[string]bool{"google analytics 4": false}, []string{"amplitude", "hook", "mixpanel"}},
		{"All true, one false", "", "Order Completed", map[string]bool{"all": true, "webhook": false}, []string{"amplitude", "ga4", "mixpanel"}},
		{"event glob excludes", "", "Signed Up", nil, []string{"amplitude", "ga4", "mixpanel"}},
		{"exclude wins over include", "", "Order Refunded", nil, []string{"amplitude", "ga4", "mixpanel"}},
		{"exact include", "", "Product Added", map[string]bool{"all": false, "webhook": true}, []string{"hook"}},
		{"own key beats All even when globbed out", "", "Signed Up", map[string]bool{"all": false, "webhook": true}, nil},
		{"unknown keys are ignored", "", "Order Completed", map[string]bool{"salesforce": false}, every},
		{"a page reaches who takes pages, by its name", "page", "Home", nil, []string{"amplitude", "ga4", "mixpanel", "pages"}},
		{"a page's name is globbed", "page", "About", nil, []string{"amplitude", "ga4", "mixpanel"}},
		{"a page without a name is globbed as empty", "page", "", map[string]bool{"all": false, "webhook": true}, nil},
		{"identify is not globbed", "identify", "", nil, []string{"amplitude", "ga4", "hook", "mixpanel", "pages"}},
		{"integrations decide for other types", "identify", "", map[string]bool{"all": false, "pages": true}, []string{"pages"}},
		{"a type not taken is not routed, whatever integrations say", "group", "", map[string]bool{"pages": true}, every},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := tt.callType
			if typ == "" {
				typ = "track"
			}
			got := table.Route(nil, typ, tt.event, tt.integrations)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Route(%q, %q, %v) = %v, want %v", typ, tt.event, tt.integrations, got, tt.want)
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
		buf = table.Route(buf[:0], "track", "Order Completed", integrations)
	}
}

func TestExplainAgreesWithRoute(t *testing.T) {
	table := NewTable([]Destination{
		{ID: "a", Name: "A"},
		{ID: "b", Name: "B", Events: []string{"Order *"}},
		{ID: "c", Name: "C"},
		{ID: "d", Name: "D", Takes: func(t string) bool { return t == "page" }},
	})
	got := table.Explain("track", "Signed Up", map[string]bool{"c": false})
	want := []Verdict{{ID: "a", Routed: true}, {ID: "b", Reason: ReasonFilter}, {ID: "c", Reason: ReasonIntegrations}, {ID: "d", Reason: ReasonType}}
	if !slices.Equal(got, want) {
		t.Fatalf("Explain = %v, want %v", got, want)
	}
	var routed []string
	for _, v := range got {
		if v.Routed {
			routed = append(routed, v.ID)
		}
	}
	if r := table.Route(nil, "track", "Signed Up", map[string]bool{"c": false}); !slices.Equal(r, routed) {
		t.Fatalf("Route = %v, Explain routed %v", r, routed)
	}
}
