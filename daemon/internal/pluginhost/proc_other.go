//go:build !linux

package pluginhost

import "os/exec"

// dieWithParent is Linux-only; elsewhere a plugin outlives a daemon killed by kill -9.
func dieWithParent(*exec.Cmd) {}
