// Command worker runs postbox actors and inspects their mailbox, journal
// and dead letters.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/postbox-dev/postbox/internal/cli"
)

const usage = `worker runs postbox actors.

Usage:
  worker run     [flags]               consume the mailbox until SIGINT/SIGTERM
  worker demo                          crash a worker mid-run, recover, prove the results
  worker state   TYPE/ID [flags]       print an actor's state as JSON
  worker journal TYPE/ID [--until SEQ] print an actor's journal, or its state at SEQ
  worker dlq list|show ID|redrive ID…|purge [ID…]

Every command takes --mailbox URL and --journal URL (default sqlite:postbox.db;
also settable as POSTBOX_MAILBOX and POSTBOX_JOURNAL). Run "worker CMD -h"
for the flags of one command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return cli.ExitUsage
		}
		return cli.ExitOK
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(args[1:], stdout, stderr)
	case "demo":
		err = cmdDemo(args[1:], stdout, stderr)
	case "state":
		err = cmdState(args[1:], stdout)
	case "journal":
		err = cmdJournal(args[1:], stdout)
	case "dlq":
		err = cmdDLQ(args[1:], stdout)
	default:
		err = cli.Usagef("unknown command %q; want run, demo, state, journal or dlq", args[0])
	}
	return cli.Exit("worker", err, stderr)
}
