// Command mixpanel is the trackd destination plugin that imports events into
// Mixpanel and records their revenue on the user's profile. See README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() {
	sdk.Serve(&Mixpanel{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"api_secret", "service_account_secret"}})
}
