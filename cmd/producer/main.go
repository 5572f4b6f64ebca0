// Command producer publishes messages to a postbox mailbox.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/cli"
	"github.com/postbox-dev/postbox/internal/workload"
)

const usage = `producer publishes messages to a postbox mailbox.

Usage:
  producer send TYPE/ID JSON           publish one message
  producer send < lines.ndjson         publish {"actor":"counter/1","data":{…}} lines
  producer load --actors N --count M [--type NAME] [--seed S] [--rate R] [--expect FILE]
                [--poison-every K] [--fail-every K] [--duplicate-every K]
                                       publish {"add": <int>} messages to NAME/0 … NAME/N-1

Both take --mailbox URL (default sqlite:postbox.db, or $POSTBOX_MAILBOX).
Every flag falls back to POSTBOX_<FLAG>. Run "producer CMD -h" for the
flags of one command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return cli.ExitUsage
		}
		return cli.ExitOK
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "send":
		err = cmdSend(ctx, args[1:], stdin, stdout)
	case "load":
		err = cmdLoad(ctx, args[1:], stdout, stderr)
	default:
		err = cli.Usagef("unknown command %q; want send or load", args[0])
	}
	return cli.Exit("producer", err, stderr)
}

type mailboxFlags struct {
	url, synchronous string
	partitions       int
}

func addMailboxFlags(fs interface {
	StringVar(*string, string, string, string)
	IntVar(*int, string, int, string)
}) *mailboxFlags {
	m := &mailboxFlags{}
	fs.StringVar(&m.url, "mailbox", backend.DefaultURL, "mailbox URL: "+backend.MailboxForms)
	fs.StringVar(&m.synchronous, "synchronous", "FULL", "SQLite durability: FULL or NORMAL")
	fs.IntVar(&m.partitions, "partitions", 0, "partitions of a new SQLite mailbox (0: 8); Kafka topics are created by worker run")
	return m
}

func (m *mailboxFlags) open() (*backend.Mailbox, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return backend.OpenMailbox(ctx, m.url, backend.MailboxOptions{Synchronous: m.synchronous, Partitions: m.partitions})
}

// sendLine is one NDJSON input line.
type sendLine struct {
	Actor string          `json:"actor"`
	ID    string          `json:"id,omitempty"`
	Data  json.RawMessage `json:"data"`
}

func cmdSend(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer) error {
	fs := cli.NewFlagSet("send", "")
	mf := addMailboxFlags(fs)
	id := fs.String("id", "", "message ID (default: a new unique one)")
	var pos []string
	// Flags may follow the positional arguments.
	rest := args
	for len(rest) > 0 {
		if err := cli.Parse(fs, rest); err != nil {
			if errors.As(err, new(*cli.HelpRequested)) {
				fmt.Fprintf(stdout, "producer send TYPE/ID JSON | producer send < lines.ndjson\n\n%s", cli.FlagHelp(fs))
			}
			return err
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos = append(pos, rest[0])
			rest = rest[1:]
		}
	}
	switch len(pos) {
	case 0:
		if *id != "" {
			return cli.Usagef("send: --id applies to one message; put \"id\" in each NDJSON line instead")
		}
		mb, err := mf.open()
		if err != nil {
			return err
		}
		defer mb.Close()
		return sendLines(ctx, mb.Publisher, stdin, stdout)
	case 1:
		return cli.Usagef("send %s: missing JSON payload, e.g. producer send %s '{\"add\":1}'", pos[0], pos[0])
	case 2:
		addr, err := parseAddress(pos[0])
		if err != nil {
			return cli.Usagef("send: %v", err)
		}
		if *id != "" {
			if err := channel.CheckMessageID(*id); err != nil {
				return cli.Usagef("send: --id: %v", err)
			}
		}
		if !json.Valid([]byte(pos[1])) {
			return cli.Usagef("send %s: payload %q is not valid JSON", pos[0], pos[1])
		}
		mb, err := mf.open()
		if err != nil {
			return err
		}
		defer mb.Close()
		msg := channel.Message{ID: *id, Address: addr, Payload: []byte(pos[1])}
		if err := publishOne(ctx, mb.Publisher, &msg); err != nil {
			return err
		}
		fmt.Fprintln(stdout, msg.ID)
		return nil
	default:
		return cli.Usagef("send: too many arguments; want TYPE/ID JSON (quote the JSON)")
	}
}

// parseAddress parses "type/id" and checks it against the identifier
// limits every backend shares.
func parseAddress(s string) (channel.Address, error) {
	a, err := channel.ParseAddress(s)
	if err == nil {
		err = channel.CheckAddress(a)
	}
	return a, err
}

// publishError makes a publisher's refusal of an identifier a usage error
// (exit status 2): the input is wrong, and retrying cannot help.
func publishError(err error) error {
	if errors.Is(err, channel.ErrBadAddress) || errors.Is(err, channel.ErrBadMessageID) {
		return cli.Usagef("%v", err)
	}
	return err
}

// publishOne publishes msg, giving it an ID first so it can be printed.
func publishOne(ctx context.Context, p channel.Publisher, msg *channel.Message) error {
	if msg.ID == "" {
		msg.ID = channel.NewMessageID()
	}
	return publishError(p.Publish(ctx, *msg))
}

// sendLines publishes NDJSON lines in batches. A bad line stops the run
// before its batch is published, and says how many went out before it.
func sendLines(ctx context.Context, p channel.Publisher, in io.Reader, stdout io.Writer) error {
	const batchSize = 500
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20)
	var batch []channel.Message
	published, lineNo := 0, 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := p.Publish(ctx, batch...); err != nil {
			return publishError(fmt.Errorf("publish (after %d messages were published): %w", published, err))
		}
		published += len(batch)
		batch = batch[:0]
		return nil
	}
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var l sendLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			return cli.Usagef("stdin line %d: not a JSON object like {\"actor\":\"counter/1\",\"data\":{\"add\":1}}: %v (%d messages before it were published)", lineNo, err, published)
		}
		addr, err := parseAddress(l.Actor)
		if err != nil {
			return cli.Usagef("stdin line %d: \"actor\": %v (%d messages before it were published)", lineNo, err, published)
		}
		if l.ID != "" {
			if err := channel.CheckMessageID(l.ID); err != nil {
				return cli.Usagef("stdin line %d: \"id\": %v (%d messages before it were published)", lineNo, err, published)
			}
		}
		if len(l.Data) == 0 {
			return cli.Usagef("stdin line %d: missing \"data\" (%d messages before it were published)", lineNo, published)
		}
		batch = append(batch, channel.Message{ID: l.ID, Address: addr, Payload: l.Data})
		if len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading stdin: %w", err)
	}
	if err := flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "published %d\n", published)
	return nil
}

func cmdLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("load", "")
	mf := addMailboxFlags(fs)
	typ := fs.String("type", counter.Type, "actor type: counter, tally, or any type that takes {\"add\": <int>}")
	actors := fs.Int("actors", 0, "number of actors (TYPE/0 … TYPE/N-1)")
	count := fs.Int("count", 0, "number of distinct messages")
	seed := fs.Uint64("seed", 1, "workload seed: the same seed gives the same messages and IDs")
	rate := fs.Float64("rate", 0, "messages per second (0: as fast as possible)")
	expect := fs.String("expect", "", "write each actor's expected final state to FILE as JSON")
	poisonEvery := fs.Int("poison-every", 0, "make every K-th message invalid (dead-lettered)")
	failEvery := fs.Int("fail-every", 0, "make every K-th message fail its first attempt (counter only)")
	duplicateEvery := fs.Int("duplicate-every", 0, "publish every K-th message again later in the run, with the same ID (counted once in --expect)")
	quiet := fs.Bool("quiet", false, "no progress bar")
	if err := cli.Parse(fs, args); err != nil {
		if errors.As(err, new(*cli.HelpRequested)) {
			fmt.Fprintf(stdout, "producer load --actors N --count M [flags]\n\n%s", cli.FlagHelp(fs))
		}
		return err
	}
	if fs.NArg() > 0 {
		return cli.Usagef("load: unexpected argument %q", fs.Arg(0))
	}
	if *actors < 1 || *count < 1 {
		return cli.Usagef("load: --actors and --count must both be at least 1 (got %d and %d)", *actors, *count)
	}
	if *rate < 0 || *poisonEvery < 0 || *failEvery < 0 || *duplicateEvery < 0 {
		return cli.Usagef("load: --rate, --poison-every, --fail-every and --duplicate-every cannot be negative")
	}
	if *typ == "" || strings.Contains(*typ, "/") {
		return cli.Usagef("load: --type %q: want an actor type with no slash, such as counter or tally", *typ)
	}
	if _, err := parseAddress(*typ + "/0"); err != nil {
		return cli.Usagef("load: --type %q: %v", *typ, err)
	}
	if *failEvery > 0 && *typ != counter.Type {
		return cli.Usagef("load: --fail-every needs --type counter: only the counter fails on request (\"failTimes\"); %s would apply those messages at once", *typ)
	}
	spec := workload.Spec{Type: *typ, Actors: *actors, Count: *count, Seed: *seed, PoisonEvery: *poisonEvery,
		FailEvery: *failEvery, DuplicateEvery: *duplicateEvery}
	total := spec.Total()
	if *expect != "" {
		// Write the expectation first: it must exist even if the load is
		// interrupted and resumed.
		exp, _ := spec.Generate(nil)
		if err := writeExpect(*expect, exp); err != nil {
			return cli.Usagef("--expect %q: %v", *expect, err)
		}
	}
	mb, err := mf.open()
	if err != nil {
		return err
	}
	defer mb.Close()

	batchSize := 500
	if *rate > 0 {
		batchSize = max(1, min(500, int(*rate/50)))
	}
	bar := newProgress(stderr, total, *quiet)
	start := time.Now()
	var batch []channel.Message
	sent := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := mb.Publisher.Publish(ctx, batch...); err != nil {
			return fmt.Errorf("publish (after %d of %d messages): %w", sent, total, err)
		}
		sent += len(batch)
		batch = batch[:0]
		bar.update(sent)
		if *rate > 0 {
			due := start.Add(time.Duration(float64(sent) / *rate * float64(time.Second)))
			select {
			case <-time.After(time.Until(due)):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	_, err = spec.Generate(func(m channel.Message) error {
		batch = append(batch, m)
		if len(batch) >= batchSize {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	bar.done(sent)
	if err != nil {
		return err
	}
	elapsed := time.Since(start)
	dups := ""
	if n := spec.Duplicates(); n > 0 {
		dups = fmt.Sprintf(" (%d of them duplicates)", n)
	}
	fmt.Fprintf(stdout, "published %d messages%s to %d actors in %s (%.0f msg/s)\n",
		sent, dups, *actors, elapsed.Round(time.Millisecond), float64(sent)/elapsed.Seconds())
	return nil
}

func writeExpect(path string, exp workload.Expected) error {
	b, err := json.MarshalIndent(exp.States, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
