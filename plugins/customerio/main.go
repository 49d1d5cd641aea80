// Command customerio is the trackd destination plugin that forwards every
// call, unchanged, to Customer.io Data Pipelines or any other API that speaks
// Segment's tracking API. See README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() {
	sdk.Serve(&CustomerIO{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"api_key"}})
}
