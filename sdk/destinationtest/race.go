//go:build race

package destinationtest

// Under -race, plugins are built with -race too, so that the race detector
// also watches the plugin process.
const race = true
