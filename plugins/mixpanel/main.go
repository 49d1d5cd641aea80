// Command mixpanel is the trackd destination plugin that sends every call
// type to Mixpanel: events to /import, user profiles (traits, groups,
// revenue) to /engage and group profiles to /groups. See README.md.
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
