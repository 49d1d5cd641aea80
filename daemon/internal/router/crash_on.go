//go:build crashtest

package router

import (
	"os"
	"syscall"
)

// crashAfterClaim kills the daemon between the dedupe claim and the hand-off
// when TRACKD_CRASH_AFTER_CLAIM is set: the crash tests' way to reach the
// moment DESIGN.md calls the dedupe trap. Only binaries built with the
// crashtest tag have it.
func crashAfterClaim() {
	if os.Getenv("TRACKD_CRASH_AFTER_CLAIM") != "" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}
