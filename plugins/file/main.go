// Command file is the trackd destination plugin that appends events to a file
// as JSON Lines. See README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() { sdk.Serve(&File{}, sdk.ServeOptions{SampleConfig: sampleConfig}) }
