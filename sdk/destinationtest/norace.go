//go:build !race

package destinationtest

const race = false
