//go:build !crashtest

package ingest

// crashAfterClaim is a test hook; see crash_on.go.
func crashAfterClaim() {}
