// Package route decides which destinations an event goes to: the call types
// each takes, the event's own integrations object, then each destination's
// event-name globs.
package route

import (
	"path"
	"strings"

	"trackd.dev/trackd/sdk"
)

// Destination is what routing needs to know of one destination.
type Destination struct {
	ID            string
	Name          string   // the key matched in an event's integrations object
	Aliases       []string // further keys, matched like Name
	Events        []string // name globs; empty means every event
	ExcludeEvents []string // name globs that win over Events
	// Takes reports whether the destination takes calls of a type; it may
	// change its answer while the table is in use (a plugin says what it
	// takes when it starts). nil takes every type.
	Takes func(callType string) bool
}

// Table routes events to a fixed set of destinations.
type Table struct {
	dests []dest
}

type dest struct {
	id      string
	keys    []string // lower-cased name and aliases
	events  []string
	exclude []string
	takes   func(string) bool
}

// NewTable builds a table; globs must already be valid (config checks them).
func NewTable(ds []Destination) *Table {
	t := &Table{dests: make([]dest, len(ds))}
	for i, d := range ds {
		keys := []string{strings.ToLower(d.Name)}
		for _, a := range d.Aliases {
			keys = append(keys, strings.ToLower(a))
		}
		t.dests[i] = dest{id: d.ID, keys: keys, events: d.Events, exclude: d.ExcludeEvents, takes: d.Takes}
	}
	return t
}

// Route appends to dst the ids of the destinations a call goes to. name is
// a track call's event or a page or screen call's name, which the globs
// match; integrations holds the call's integrations with lower-cased keys,
// true for an object, and null values left out (see normalize.Event).
func (t *Table) Route(dst []string, callType, name string, integrations map[string]bool) []string {
	all := allOf(integrations)
	for i := range t.dests {
		if t.dests[i].why(callType, name, integrations, all) == "" {
			dst = append(dst, t.dests[i].id)
		}
	}
	return dst
}

// allOf is what the integrations' "All" says of the destinations they do not name.
func allOf(integrations map[string]bool) bool {
	all, ok := integrations["all"]
	return all || !ok
}

// why says why d does not get a call: one of the Reason constants, or "" when it does.
func (d *dest) why(callType, name string, integrations map[string]bool, all bool) string {
	switch {
	case d.takes != nil && !d.takes(callType):
		return ReasonType
	case !d.enabledBy(integrations, all):
		return ReasonIntegrations
	case !d.wants(callType, name):
		return ReasonFilter
	}
	return ""
}

func (d *dest) enabledBy(integrations map[string]bool, all bool) bool {
	for _, k := range d.keys {
		if on, ok := integrations[k]; ok {
			return on
		}
	}
	return all
}

// wants applies the globs to the calls that have a name to match: track,
// page and screen.
func (d *dest) wants(callType, name string) bool {
	switch callType {
	case sdk.TypeTrack, sdk.TypePage, sdk.TypeScreen:
	default:
		return true
	}
	if len(d.events) > 0 && !matchAny(d.events, name) {
		return false
	}
	return !matchAny(d.exclude, name)
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}
