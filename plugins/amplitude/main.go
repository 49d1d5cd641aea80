// Command amplitude is the trackd destination plugin that sends every call
// type to Amplitude: events to its HTTP V2 API, users, groups and aliases to
// its Identify, Group Identify and User Mapping APIs. See README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() {
	sdk.Serve(&Amplitude{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"api_key"}})
}
