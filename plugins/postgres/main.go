// Command postgres is the trackd destination plugin that writes every call
// into PostgreSQL, in the warehouse layout of Segment and RudderStack. See
// README.md.
package main

import (
	_ "embed"

	"trackd.dev/trackd/sdk"
)

//go:embed sample.toml
var sampleConfig string

func main() {
	sdk.Serve(&Postgres{}, sdk.ServeOptions{SampleConfig: sampleConfig, Secrets: []string{"dsn"}})
}
