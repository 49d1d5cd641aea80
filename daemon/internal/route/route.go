// Package route decides which destinations an event goes to: the event's own
// integrations object first, then each destination's event-name globs.
package route

import (
	"path"
	"strings"
)

// Destination is what routing needs to know of one destination.
type Destination struct {
	ID            string
	Name          string   // the key matched in an event's integrations object
	Aliases       []string // further keys, matched like Name
	Events        []string // name globs; empty means every event
	ExcludeEvents []string // name globs that win over Events
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
}

// NewTable builds a table; globs must already be valid (config checks them).
func NewTable(ds []Destination) *Table {
	t := &Table{dests: make([]dest, len(ds))}
	for i, d := range ds {
		keys := []string{strings.ToLower(d.Name)}
		for _, a := range d.Aliases {
			keys = append(keys, strings.ToLower(a))
		}
		t.dests[i] = dest{id: d.ID, keys: keys, events: d.Events, exclude: d.ExcludeEvents}
	}
	return t
}

// Route appends to dst the ids of the destinations the event goes to.
// integrations holds the event's integrations with lower-cased keys, true for
// an object, and null values left out (see normalize.Event).
func (t *Table) Route(dst []string, event string, integrations map[string]bool) []string {
	all, ok := integrations["all"]
	if !ok {
		all = true
	}
	for _, d := range t.dests {
		if !d.enabledBy(integrations, all) || !d.wants(event) {
			continue
		}
		dst = append(dst, d.id)
	}
	return dst
}

func (d *dest) enabledBy(integrations map[string]bool, all bool) bool {
	for _, k := range d.keys {
		if on, ok := integrations[k]; ok {
			return on
		}
	}
	return all
}

func (d *dest) wants(event string) bool {
	if len(d.events) > 0 && !matchAny(d.events, event) {
		return false
	}
	return !matchAny(d.exclude, event)
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}
