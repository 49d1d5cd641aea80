package route

// Why a destination did not get an event.
const (
	ReasonType         = "type"         // it does not take calls of the event's type
	ReasonIntegrations = "integrations" // the event's integrations object turned it off
	ReasonFilter       = "filter"       // its events / exclude_events globs left the event out
)

// Verdict is the routing decision for one destination.
type Verdict struct {
	ID     string `json:"destination"`
	Routed bool   `json:"routed"`
	Reason string `json:"reason,omitempty"` // a Reason constant when not routed
}

// Explain is Route with the reason for every destination left out.
func (t *Table) Explain(callType, name string, integrations map[string]bool) []Verdict {
	all := allOf(integrations)
	out := make([]Verdict, len(t.dests))
	for i := range t.dests {
		why := t.dests[i].why(callType, name, integrations, all)
		out[i] = Verdict{ID: t.dests[i].id, Routed: why == "", Reason: why}
	}
	return out
}
