package router

import (
	"time"

	"trackd.dev/trackd/daemon/internal/normalize"
	"trackd.dev/trackd/daemon/internal/route"
	"trackd.dev/trackd/daemon/internal/tap"
)

// tapInvalid tells a listening `trackd tap` about an invalid event.
func (r *Router) tapInvalid(at time.Time, err error) {
	if !r.tap.Active() {
		return
	}
	r.tap.Publish(tap.Decision{Time: at, Outcome: tap.Invalid, Error: err.Error()})
}

// tapEvent tells a listening `trackd tap` what became of a valid event.
func (r *Router) tapEvent(at time.Time, ev *normalize.Event, outcome string, routes *route.Table) {
	if !r.tap.Active() {
		return
	}
	d := tap.Decision{Time: at, Type: ev.Type, Event: ev.Name, MessageID: ev.MessageID, Outcome: outcome}
	if outcome != tap.Duplicate {
		d.Destinations = routes.Explain(ev.Type, ev.Name, ev.Integrations)
	}
	r.tap.Publish(d)
}
