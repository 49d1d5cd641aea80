package dedupe

import (
	"fmt"
	"testing"

	"trackd.dev/trackd/daemon/internal/config"
)

// BenchmarkClaimAll is the dedupe claim path against an embedded server, in
// batches of 512 as the router sends them, 1% of them repeats; ns/op is per
// claim.
func BenchmarkClaimAll(b *testing.B) {
	c := openClaimer(b, func(*config.Dedupe) {})
	const batch = 512
	claims := make([]Claim, 0, batch)
	b.ReportAllocs()
	seq := uint64(0)
	for i := 0; i < b.N; {
		claims = claims[:0]
		for ; len(claims) < batch && i < b.N; i++ {
			seq++
			id := i
			if i%100 == 99 {
				id -= 50
			}
			claims = append(claims, Claim{MessageID: fmt.Sprintf("ajs-next-%08x-9b1d-4c55-8a7e-0b6f2d9c1e44", id), Seq: seq})
		}
		if _, err := c.ClaimAll(b.Context(), claims); err != nil {
			b.Fatal(err)
		}
	}
}
