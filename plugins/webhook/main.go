// Command webhook is the trackd destination plugin that POSTs each event, as
// JSON, to a URL. See README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() {
	sdk.Serve(&Webhook{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"secret", "headers"}})
}
