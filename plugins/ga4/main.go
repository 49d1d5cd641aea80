// Command ga4 is the trackd destination plugin that sends events to Google
// Analytics 4 through the Measurement Protocol. See README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() {
	sdk.Serve(&GA4{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"api_secret"}})
}
