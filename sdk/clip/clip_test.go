package clip_test

import (
	"fmt"
	"testing"

	"trackd.dev/trackd/sdk/clip"
)

func TestClip(t *testing.T) {
	tests := []struct {
		name  string
		s     string
		n     int
		runes string
		text  string
		quote string
	}{
		{name: "empty", s: "", n: 3, runes: "", text: "", quote: `""`},
		{name: "shorter", s: "ab", n: 3, runes: "ab", text: "ab", quote: `"ab"`},
		{name: "exact", s: "abc", n: 3, runes: "abc", text: "abc", quote: `"abc"`},
		{name: "longer", s: "abcd", n: 3, runes: "abc", text: "abc…", quote: `"abc"…`},
		{name: "zero", s: "a", n: 0, runes: "", text: "…", quote: `""…`},
		{name: "runes not bytes", s: "éé€", n: 3, runes: "éé€", text: "éé€", quote: `"éé€"`},
		{name: "cut between runes", s: "é€x", n: 2, runes: "é€", text: "é€…", quote: `"é€"…`},
		{name: "escapes", s: "a\"\nb", n: 3, runes: "a\"\n", text: "a\"\n…", quote: `"a\"\n"…`},
		{name: "invalid byte is one rune", s: "a\xffbc", n: 3, runes: "a\xffb", text: "a\xffb…", quote: `"a\xffb"…`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := clip.Runes(tt.s, tt.n); got != tt.runes {
				t.Errorf("Runes(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.runes)
			}
			if got := clip.Text(tt.s, tt.n); got != tt.text {
				t.Errorf("Text(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.text)
			}
			if got := clip.Quote(tt.s, tt.n); got != tt.quote {
				t.Errorf("Quote(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.quote)
			}
		})
	}
}

func ExampleQuote() {
	fmt.Println(clip.Quote("Order Completed", 64))
	fmt.Println(clip.Quote("Order Completed", 5))
	// Output:
	// "Order Completed"
	// "Order"…
}
