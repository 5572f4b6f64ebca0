// Package cli holds what the worker and producer commands share: flags
// that fall back to POSTBOX_* environment variables, exit statuses, and
// logging.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/postbox-dev/postbox/backend"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and failed
	ExitUsage   = 2 // the command line was wrong
)

// UsageError is bad input from the command line: the message names the
// flag and what it accepts. Commands exit with ExitUsage on it.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns an error that makes the command exit with ExitUsage.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// NewFlagSet returns a flag set that reports errors instead of exiting.
func NewFlagSet(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	_ = synopsis
	return fs
}

// EnvName is the environment variable that sets a flag: POSTBOX_ and the
// flag's name in capitals with dashes as underscores.
func EnvName(flagName string) string {
	return "POSTBOX_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Parse sets flags from POSTBOX_* variables, then from args (which win).
// Errors are usage errors that name the flag or variable.
func Parse(fs *flag.FlagSet, args []string) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = Usagef("%s=%q: invalid value for --%s: %v", EnvName(f.Name), v, f.Name, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return &HelpRequested{}
		}
		return Usagef("%s: %v", fs.Name(), err)
	}
	return nil
}

// HelpRequested is returned by Parse for -h/--help.
type HelpRequested struct{}

func (*HelpRequested) Error() string { return "help requested" }

// FlagHelp renders a flag set's flags, for help text.
func FlagHelp(fs *flag.FlagSet) string {
	var b strings.Builder
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s %s\n    \t%s", f.Name, name, usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(&b, " [$%s]\n", EnvName(f.Name))
	})
	return b.String()
}

// Exit prints err the way every postbox command does and returns the
// status to exit with.
func Exit(prog string, err error, stderr io.Writer) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, new(*HelpRequested)):
		return ExitOK
	case errors.As(err, new(*UsageError)):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitUsage
	case errors.As(err, new(*backend.URLError)):
		// Named by the flag that took the URL.
		var u *backend.URLError
		errors.As(err, &u)
		fmt.Fprintf(stderr, "%s: --%s %q: %s\n", prog, u.Role, u.URL, u.Why)
		return ExitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitFailure
	}
}

// NewLogger returns a JSON logger at level ("debug", "info", "warn",
// "error") writing to stderr.
func NewLogger(level string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.Set(level); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Sampling = nil
	cfg.EncoderConfig.TimeKey = "time"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}
