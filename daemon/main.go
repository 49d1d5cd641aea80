// Command trackd routes Segment-style track events from NATS to destination plugins.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const usage = `trackd routes Segment-style track events from NATS to destination plugins.

Usage:
  trackd <command> [flags]

Commands:
  run       run the daemon until SIGINT or SIGTERM

Run "trackd <command> --help" for a command's flags.
`

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "run":
		err = runCommand(args[1:], stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "trackd: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "trackd %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// newFlagSet is a command's flag set whose --help names the command.
func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: trackd %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}
