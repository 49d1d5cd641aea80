package dedupe

import (
	"slices"
	"testing"
	"time"

	"trackd.dev/trackd/daemon/internal/bus/bustest"
)

func TestClaimAll(t *testing.T) {
	b, topo := bustest.Open(t, time.Hour)
	c := New(b.JS, topo.Dedupe)
	ctx := t.Context()

	steps := []struct {
		name   string
		claims []Claim
		want   []bool
	}{
		{"first sighting", []Claim{{"a", 1}}, []bool{true}},
		{"redelivery of the same ingest message is not a repeat", []Claim{{"a", 1}}, []bool{true}},
		{"another message with the same id is a repeat", []Claim{{"a", 2}}, []bool{false}},
		{"a repeat inside one batch", []Claim{{"b", 3}, {"c", 4}, {"b", 5}}, []bool{true, true, false}},
		{"ids with characters keys do not allow", []Claim{{"order #7 / ü", 6}, {"order #7 / ü", 7}}, []bool{true, false}},
		{"empty batch", nil, []bool{}},
	}
	for _, s := range steps {
		got, err := c.ClaimAll(ctx, s.claims)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !slices.Equal(got, s.want) {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
}

// With a short window, a messageId is accepted again once its claim expires.
func TestWindowExpires(t *testing.T) {
	b, topo := bustest.Open(t, 2*time.Second)
	c := New(b.JS, topo.Dedupe)
	ctx := t.Context()

	first, err := c.ClaimAll(ctx, []Claim{{"x", 1}})
	if err != nil || !first[0] {
		t.Fatalf("first claim = %v, %v", first, err)
	}
	again, err := c.ClaimAll(ctx, []Claim{{"x", 2}})
	if err != nil || again[0] {
		t.Fatalf("repeat inside the window = %v, %v; want a repeat", again, err)
	}
	// Expiry runs on the server's schedule; poll rather than assume when.
	deadline := time.Now().Add(30 * time.Second)
	for seq := uint64(3); ; seq++ {
		got, err := c.ClaimAll(ctx, []Claim{{"x", seq}})
		if err != nil {
			t.Fatal(err)
		}
		if got[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the messageId was never accepted again after the window")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestKey(t *testing.T) {
	k := Key("order #7 / ü")
	if len(k) != 22 {
		t.Errorf("Key length %d, want 22", len(k))
	}
	for _, r := range k {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			t.Fatalf("Key %q has %q, which KV keys do not allow", k, r)
		}
	}
	if Key("a") == Key("b") {
		t.Error("different ids share a key")
	}
}
