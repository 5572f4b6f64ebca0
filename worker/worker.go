// Package worker turns a registry of actor types into a worker program:
// the subcommands run, state, journal and dlq, with every flag and
// POSTBOX_* variable of the postbox worker, signal handling, a graceful
// stop, admin endpoints and metrics. A user's program is
//
//	func main() {
//		reg := actorhost.NewRegistry()
//		actorhost.Register(reg, "order", handleOrder)
//		os.Exit(worker.Main(reg))
//	}
//
// Programs that own their flags and main loop call Run instead, and may
// mount AdminHandler in a mux of their own.
package worker

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/internal/cli"
)

// Option adjusts Main or Run.
type Option func(*options)

type options struct {
	name       string
	logger     *zap.Logger
	metrics    prometheus.Registerer
	routes     []route
	hostConfig []func(*actorhost.Config)
	commands   []command
	runFlags   []func(*flag.FlagSet)
	runHooks   []func(context.Context) (func(), error)
	args       []string
	argsSet    bool
	stdout     io.Writer
	stderr     io.Writer
}

type route struct {
	pattern string
	handler http.Handler
}

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) error
}

func newOptions(opts []Option) *options {
	o := &options{name: "worker", stdout: os.Stdout, stderr: os.Stderr}
	for _, opt := range opts {
		opt(o)
	}
	if !o.argsSet {
		o.args = os.Args[1:]
	}
	return o
}

// WithName names the program in usage text and error messages (default
// "worker").
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithLogger logs through l instead of the JSON logger that --log-level
// sets up.
func WithLogger(l *zap.Logger) Option { return func(o *options) { o.logger = l } }

// WithMetrics registers the host's collectors on r instead of a registry
// of the worker's own. /metrics serves r when it is also a
// prometheus.Gatherer (a *prometheus.Registry is).
func WithMetrics(r prometheus.Registerer) Option { return func(o *options) { o.metrics = r } }

// WithAdminRoute adds a route to the --admin server, with a pattern as
// http.ServeMux takes it ("GET /orders/{id}").
func WithAdminRoute(pattern string, h http.Handler) Option {
	return func(o *options) { o.routes = append(o.routes, route{pattern, h}) }
}

// WithHostConfig lets adjust change the actorhost.Config that run builds
// from its flags, just before the host is made.
func WithHostConfig(adjust func(*actorhost.Config)) Option {
	return func(o *options) { o.hostConfig = append(o.hostConfig, adjust) }
}

// WithCommand adds a subcommand to Main. run gets the arguments after the
// command's name; a *UsageError from it exits with status 2.
func WithCommand(name, summary string, run func(args []string, stdout, stderr io.Writer) error) Option {
	return func(o *options) { o.commands = append(o.commands, command{name, summary, run}) }
}

// WithRunFlags adds flags of the program's own to the run subcommand;
// they can be set by POSTBOX_* variables too.
func WithRunFlags(add func(fs *flag.FlagSet)) Option {
	return func(o *options) { o.runFlags = append(o.runFlags, add) }
}

// WithRunHook calls start once run's flags are parsed and before the host
// starts (to open what the program's flags name); stop, if not nil, runs
// after the host has stopped.
func WithRunHook(start func(ctx context.Context) (stop func(), err error)) Option {
	return func(o *options) { o.runHooks = append(o.runHooks, start) }
}

// WithArgs makes Main parse args instead of os.Args[1:].
func WithArgs(args ...string) Option {
	return func(o *options) { o.args, o.argsSet = args, true }
}

// WithOutput makes Main write to stdout and stderr instead of the
// process's.
func WithOutput(stdout, stderr io.Writer) Option {
	return func(o *options) { o.stdout, o.stderr = stdout, stderr }
}

// UsageError is bad input to a command: Main prints it and exits with
// status 2.
type UsageError = cli.UsageError

// Usagef returns a *UsageError, for commands added with WithCommand.
func Usagef(format string, args ...any) error { return cli.Usagef(format, args...) }

// Exit statuses Main returns.
const (
	ExitOK      = cli.ExitOK
	ExitFailure = cli.ExitFailure
	ExitUsage   = cli.ExitUsage
)

// Main runs the command line of a worker program over reg and returns the
// status to exit with: 0, 1 when the command failed, 2 when the command
// line (or the registry) was wrong.
func Main(reg *actorhost.Registry, opts ...Option) int {
	o := newOptions(opts)
	if err := checkRegistry(reg); err != nil {
		return cli.Exit(o.name, err, o.stderr)
	}
	args := o.args
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(o.stdout, o.usage(reg))
		if len(args) == 0 {
			return ExitUsage
		}
		return ExitOK
	}
	var err error
	switch args[0] {
	case "run":
		err = cmdRun(reg, o, args[1:])
	case "state":
		err = cmdState(reg, args[1:], o.stdout)
	case "journal":
		err = cmdJournal(reg, args[1:], o.stdout)
	case "dlq":
		err = cmdDLQ(args[1:], o.stdout)
	default:
		i := slices.IndexFunc(o.commands, func(c command) bool { return c.name == args[0] })
		if i < 0 {
			err = Usagef("unknown command %q; want %s", args[0], strings.Join(o.commandNames(), ", "))
			break
		}
		err = o.commands[i].run(args[1:], o.stdout, o.stderr)
	}
	return cli.Exit(o.name, err, o.stderr)
}

// checkRegistry says what to do about a registry a worker cannot run.
func checkRegistry(reg *actorhost.Registry) error {
	if reg == nil {
		return Usagef("no registry: pass actorhost.NewRegistry() with your actor types registered (actorhost.Register)")
	}
	if len(reg.Types()) == 0 {
		return Usagef("the registry has no actor types: register yours with actorhost.Register before starting the worker")
	}
	return nil
}

func (o *options) commandNames() []string {
	names := []string{"run", "state", "journal", "dlq"}
	for _, c := range o.commands {
		names = append(names, c.name)
	}
	return names
}

func (o *options) usage(reg *actorhost.Registry) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s runs postbox actors: %s.\n\nUsage:\n", o.name, strings.Join(reg.Types(), ", "))
	fmt.Fprintf(&b, "  %s run     [flags]               consume the mailbox until SIGINT/SIGTERM\n", o.name)
	for _, c := range o.commands {
		fmt.Fprintf(&b, "  %s %-7s %-21s %s\n", o.name, c.name, "", c.summary)
	}
	fmt.Fprintf(&b, "  %s state   TYPE/ID [flags]       print an actor's state as JSON\n", o.name)
	fmt.Fprintf(&b, "  %s journal TYPE/ID [--until SEQ] print an actor's journal, or its state at SEQ\n", o.name)
	fmt.Fprintf(&b, "  %s dlq list|show ID|redrive ID…|purge [ID…]\n\n", o.name)
	fmt.Fprintf(&b, "Every command takes --mailbox URL and --journal URL (default sqlite:postbox.db;\n")
	fmt.Fprintf(&b, "also settable as POSTBOX_MAILBOX and POSTBOX_JOURNAL). Run \"%s CMD -h\"\n", o.name)
	fmt.Fprintf(&b, "for the flags of one command.\n")
	return b.String()
}
