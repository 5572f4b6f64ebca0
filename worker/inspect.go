package worker

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/cli"
	"github.com/postbox-dev/postbox/journal"
)

// parseFlagsAround parses flags that may come before or after positional
// arguments (worker state counter/1 --journal …).
func parseFlagsAround(fsParse func([]string) error, args []string) ([]string, error) {
	var positional, flags []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if strings.HasPrefix(a, "-") && a != "-" {
			flags = append(flags, a)
			if !strings.Contains(a, "=") && i+1 < len(args) {
				flags = append(flags, args[i+1])
				i++
			}
			continue
		}
		positional = append(positional, a)
	}
	return positional, fsParse(flags)
}

func parseAddressArg(cmd string, pos []string) (channel.Address, error) {
	if len(pos) != 1 {
		return channel.Address{}, Usagef("%s: want exactly one TYPE/ID, e.g. order/7", cmd)
	}
	addr, err := channel.ParseAddress(pos[0])
	if err != nil {
		return channel.Address{}, Usagef("%s: %v", cmd, err)
	}
	return addr, nil
}

// openActor parses the flags of an actor command (state, journal) and its
// one TYPE/ID argument, runs check once they are parsed, and opens the
// journal for reading.
func openActor(cmd string, fs *flag.FlagSet, store *storeFlags, args []string, check func() error) (channel.Address, journal.Journal, error) {
	pos, err := parseFlagsAround(func(a []string) error { return cli.Parse(fs, a) }, args)
	if err != nil {
		return channel.Address{}, nil, err
	}
	addr, err := parseAddressArg(cmd, pos)
	if err == nil {
		err = check()
	}
	if err != nil {
		return channel.Address{}, nil, err
	}
	j, err := store.openJournal(true)
	return addr, j, err
}

// replay replays addr from j; an actor type the registry does not know is
// a usage error.
func replay(cmd string, reg *actorhost.Registry, j journal.Journal, addr channel.Address, opts actorhost.ReplayOptions) (actorhost.Replayed, error) {
	st, err := reg.Replay(context.Background(), j, addr, opts)
	if errors.Is(err, actorhost.ErrUnknownActorType) {
		return st, Usagef("%s: %v", cmd, err)
	}
	return st, err
}

func cmdState(reg *actorhost.Registry, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("state", "")
	addr, j, err := openActor("state", fs, addStoreFlags(fs), args, func() error { return nil })
	if err != nil {
		return err
	}
	defer j.Close()
	st, err := replay("state", reg, j, addr, actorhost.ReplayOptions{})
	if err != nil {
		return err
	}
	return printJSON(stdout, st.State)
}

func cmdJournal(reg *actorhost.Registry, args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("journal", "")
	store := addStoreFlags(fs)
	until := fs.Int64("until", 0, "print the state replayed up to this sequence instead of the entries")
	addr, j, err := openActor("journal", fs, store, args, func() error {
		if *until < 0 {
			return Usagef("--until %d: want a sequence of 1 or more", *until)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer j.Close()
	if *until > 0 {
		st, err := replay("journal", reg, j, addr, actorhost.ReplayOptions{Until: *until})
		if err != nil {
			return err
		}
		return printJSON(stdout, map[string]any{"seq": st.Seq, "state": st.State})
	}
	enc := json.NewEncoder(stdout)
	n := 0
	err = j.Read(context.Background(), addr.String(), 1, func(e journal.Entry) error {
		n++
		return enc.Encode(actorhost.ViewEntry(e))
	})
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("journal: no entries for %s", addr)
	}
	return nil
}

func cmdDLQ(args []string, stdout io.Writer) error {
	fs := cli.NewFlagSet("dlq", "")
	store := addStoreFlags(fs)
	pos, err := parseFlagsAround(func(a []string) error { return cli.Parse(fs, a) }, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return Usagef("dlq: want list, show ID, redrive ID… or purge [ID…]")
	}
	verb, ids := pos[0], pos[1:]
	switch verb {
	case "list":
		if len(ids) > 0 {
			return Usagef("dlq list takes no arguments")
		}
	case "show":
		if len(ids) != 1 {
			return Usagef("dlq show: want exactly one dead-letter ID (see dlq list)")
		}
	case "redrive":
		if len(ids) == 0 {
			return Usagef("dlq redrive: want one or more dead-letter IDs (see dlq list)")
		}
	case "purge":
	default:
		return Usagef("dlq: unknown action %q; want list, show, redrive or purge", verb)
	}
	mb, err := store.openMailbox(true, 0)
	if err != nil {
		return err
	}
	defer mb.Close()
	ctx := context.Background()
	switch verb {
	case "list":
		envs, err := mb.DLQ.List(ctx)
		if err != nil {
			return err
		}
		for _, e := range envs {
			fmt.Fprintf(stdout, "%s\t%s\tattempts=%d\t%s\n", e.ID, e.Address, e.Attempts, strconv.Quote(e.LastError()))
		}
	case "show":
		env, err := mb.DLQ.Get(ctx, ids[0])
		if errors.Is(err, dlq.ErrNotFound) {
			return Usagef("dlq show: no dead letter %q (see dlq list)", ids[0])
		}
		if err != nil {
			return err
		}
		return printJSON(stdout, envelopeView(env))
	case "redrive":
		n, err := mb.DLQ.Redrive(ctx, ids...)
		if errors.Is(err, dlq.ErrNotFound) {
			return Usagef("dlq redrive: %v (see dlq list)", err)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "redrove %d\n", n)
	case "purge":
		n, err := mb.DLQ.Purge(ctx, ids...)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "purged %d\n", n)
	}
	return nil
}

// envelopeView shows a JSON payload as JSON rather than base64.
func envelopeView(e dlq.Envelope) any {
	type view struct {
		dlq.Envelope
		Payload any `json:"payload"`
	}
	var p any = string(e.Payload)
	if json.Valid(e.Payload) {
		p = json.RawMessage(e.Payload)
	}
	return view{Envelope: e, Payload: p}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
