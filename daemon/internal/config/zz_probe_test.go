package config

import (
	"fmt"
	"testing"
)

func TestZZProbe(t *testing.T) {
	for _, text := range []string{
		"[dedupe]\nwindow = \"12 hours\"\n",
		"[dedupe]\nwindow = 12\n",
		"[retry]\nmax = 5\n",
		"[dedupe]\nwindow = \"-1s\"\n",
		"[dedupe]\nwindow = 1.5\n",
		"[dedupe]\nwindow = true\n",
		"[dedupe]\nwindow = \"0s\"\n",
		"[destinations.file]\nplugin = \"file\"\ndirect_timeout = \"-2s\"\n",
		"[destinations.file]\nplugin = \"file\"\ndirect_timeout = 7\n",
		"[destinations.file]\nplugin = \"file\"\n[destinations.file.retry]\ninitial = 3\n",
		"[destinations.file]\nplugin = \"file\"\n[destinations.file.retry]\ninitial = \"-3s\"\n",
		"[dlq]\nmax_age = \"-1h\"\n",
		"[shutdown]\ntimeout = -1\n",
		"[ingest]\nmax_event_bytes = \"big\"\n",
		"dedupe = { window = 5 }\n",
		"[destinations.file]\nplugin = \"file\"\nbatch_size = 0\nmax_in_flight = 0\ndirect_timeout = \"0s\"\n",
	} {
		cfg, err := parse(t, fixture(t), text, nil)
		if err != nil {
			fmt.Printf("%q\n  => %v\n", text, err)
		} else {
			d := cfg.Destinations["file"]
			if d != nil {
				fmt.Printf("%q\n  => ok %d %d %v\n", text, d.BatchSize, d.MaxInFlight, d.DirectTimeout)
			} else {
				fmt.Printf("%q\n  => ok\n", text)
			}
		}
	}
}
