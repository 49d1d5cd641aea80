// Package clip shortens a value a client sent so that an error or a reason
// can show it without a huge one swamping the message. Lengths are counted in
// runes, an invalid byte counting as one as in a range over a string, so a
// cut never splits a character.
//
// Plugins use it in the reasons of the events they drop; the daemon in its
// own.
package clip

import "strconv"

// Ellipsis is what marks a value that was cut.
const Ellipsis = "…"

// Runes returns s cut to at most n runes.
func Runes(s string, n int) string {
	for i := range s {
		if n <= 0 {
			return s[:i]
		}
		n--
	}
	return s
}

// Text returns s cut to at most n runes, with Ellipsis appended when it was
// cut.
func Text(s string, n int) string {
	if c := Runes(s, n); len(c) < len(s) {
		return c + Ellipsis
	}
	return s
}

// Quote returns s as strconv.Quote writes it, cut to at most n runes, with
// Ellipsis appended after the closing quote when it was cut: "abc"….
func Quote(s string, n int) string {
	c := Runes(s, n)
	if len(c) < len(s) {
		return strconv.Quote(c) + Ellipsis
	}
	return strconv.Quote(s)
}
