package normalize

import (
	"testing"
	"time"
)

// What parseUTC accepts it must read as time.Parse does.
func FuzzParseUTC(f *testing.F) {
	for _, s := range []string{
		"2024-01-24T11:59:02.403Z", "2024-01-24T11:59:02Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
		"2024-04-31T00:00:00Z", "2024-13-01T00:00:00Z", "2024-01-24T24:00:00Z", "2024-01-24T11:59:60Z",
		"2024-01-24T11:59:02.123456789Z", "2024-01-24T11:59:02.1234567891Z", "2024-01-24T11:59:02.Z",
		"2024-01-24t11:59:02z", "0000-01-01T00:00:00Z", "2024-01-24T11:59:02+01:00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parseUTC([]byte(s))
		if !ok {
			return
		}
		want, err := ParseTime(s)
		if err != nil {
			t.Fatalf("parseUTC accepted %q, which ParseTime refuses: %v", s, err)
		}
		if !got.Equal(want) || got.Location() != want.Location() {
			t.Fatalf("parseUTC(%q) = %v, ParseTime = %v", s, got, want)
		}
	})
}

func TestParseUTC(t *testing.T) {
	got, ok := parseUTC([]byte("2024-01-24T11:59:02.403Z"))
	if want := time.Date(2024, 1, 24, 11, 59, 2, 403e6, time.UTC); !ok || !got.Equal(want) {
		t.Errorf("parseUTC = %v, %v; want %v", got, ok, want)
	}
}
