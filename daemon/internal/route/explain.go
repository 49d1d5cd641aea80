package route

// Why a destination did not get an event.
const (
	ReasonIntegrations = "integrations" // the event's integrations object turned it off
	ReasonFilter       = "filter"       // its events / exclude_events globs left the event out
)

// Verdict is the routing decision for one destination.
type Verdict struct {
	ID     string `json:"destination"`
	Routed bool   `json:"routed"`
	Reason string `json:"reason,omitempty"` // ReasonIntegrations or ReasonFilter when not routed
}

// Explain is Route with the reason for every destination left out.
func (t *Table) Explain(event string, integrations map[string]bool) []Verdict {
	all, ok := integrations["all"]
	if !ok {
		all = true
	}
	out := make([]Verdict, len(t.dests))
	for i, d := range t.dests {
		out[i] = Verdict{ID: d.id, Routed: true}
		switch {
		case !d.enabledBy(integrations, all):
			out[i] = Verdict{ID: d.id, Reason: ReasonIntegrations}
		case !d.wants(event):
			out[i] = Verdict{ID: d.id, Reason: ReasonFilter}
		}
	}
	return out
}
