//go:build !crashtest

package router

// crashAfterClaim is a test hook; see crash_on.go.
func crashAfterClaim() {}
