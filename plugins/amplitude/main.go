// Command amplitude is the trackd destination plugin that sends events to
// Amplitude's HTTP V2 API. See README.md.
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
