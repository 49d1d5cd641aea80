// Command trackd routes Segment-style track events from NATS to destination plugins.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one of trackd's subcommands; each lives in its own file.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

// commands lists the subcommands in the order --help shows them.
var commands = []command{
	runCmd,
	validateCmd,
	sendCmd,
	dlqCmd,
	tapCmd,
}

func main() {
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func usage() string {
	var b strings.Builder
	b.WriteString("trackd routes Segment-style track events from NATS to destination plugins.\n\n")
	b.WriteString("Usage:\n  trackd <command> [flags]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(&b, "  %-9s %s\n", c.name, c.summary)
	}
	b.WriteString("\nRun \"trackd <command> --help\" for a command's flags and an example.\n")
	return b.String()
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage())
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "trackd %s: %v\n", c.name, err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "trackd: unknown command %q\n\n%s", args[0], usage())
	return 2
}

// newFlagSet is a command's flag set whose --help shows its usage line,
// what it does, an example and its flags.
func newFlagSet(name, synopsis, summary, example string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: trackd %s %s\n\n%s\n\nExample:\n  %s\n\nFlags:\n", name, synopsis, summary, example)
		fs.PrintDefaults()
	}
	return fs
}
