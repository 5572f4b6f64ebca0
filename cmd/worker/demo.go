package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/cli"
	"github.com/postbox-dev/postbox/internal/workload"
	"github.com/postbox-dev/postbox/journal"
)

// cmdDemo publishes a counter workload, runs a real worker process, kills
// it mid-run, recovers with a second one, and checks every result.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := cli.NewFlagSet("demo", "")
	actors := fs.Int("actors", 40, "counter actors")
	count := fs.Int("count", 4000, "messages")
	concurrency := fs.Int("concurrency", 8, "worker --concurrency")
	keep := fs.Bool("keep", false, "keep the temporary directory and print its path")
	mailbox := fs.String("mailbox", "", "mailbox URL to run on instead of a SQLite file in the temporary directory: "+backend.MailboxForms)
	journalURL := fs.String("journal", "", "journal URL to run on instead of that SQLite file: "+backend.JournalForms)
	if err := cli.Parse(fs, args); err != nil {
		if errors.As(err, new(*cli.HelpRequested)) {
			fmt.Fprintf(stdout, "worker demo [flags]\n\n%s", cli.FlagHelp(fs))
		}
		return err
	}
	if *actors < 1 || *count < 100 || *concurrency < 1 {
		return cli.Usagef("demo: need --actors >= 1, --count >= 100, --concurrency >= 1")
	}
	dir, err := os.MkdirTemp("", "postbox-demo-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(stdout, "files in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	d := &demo{out: stdout, dir: dir, sink: filepath.Join(dir, "sink.ndjson"), concurrency: *concurrency,
		mailbox: *mailbox, journal: *journalURL}
	spec := workload.Spec{Actors: *actors, Count: *count, Seed: 7, PoisonEvery: 997, FailEvery: 101, IDPrefix: "demo"}
	d.id = spec.IDPrefix
	if d.mailbox != "" || d.journal != "" {
		// Names of this run's own: a mailbox or journal given by URL may
		// hold earlier runs' messages and actors.
		d.id = fmt.Sprintf("demo%d", time.Now().UnixNano()%1_000_000_000)
		spec.IDPrefix, spec.ActorPrefix = d.id, d.id+"-"
	}
	local := "sqlite:" + filepath.Join(dir, "postbox.db")
	if d.mailbox == "" {
		d.mailbox = local
	}
	if d.journal == "" {
		d.journal = local
	}
	return d.run(spec)
}

type demo struct {
	out              io.Writer
	dir              string
	mailbox, journal string // URLs
	id               string // starts this run's message and actor IDs
	sink             string
	concurrency      int
	failed           []string
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

func (d *demo) check(ok bool, format string, args ...any) {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		d.failed = append(d.failed, fmt.Sprintf(format, args...))
	}
	fmt.Fprintf(d.out, "  [%s] %s\n", mark, fmt.Sprintf(format, args...))
}

func (d *demo) run(spec workload.Spec) error {
	ctx := context.Background()
	mb, err := backend.OpenMailbox(context.Background(), d.mailbox, backend.MailboxOptions{CreateTopics: true})
	if err != nil {
		return err
	}
	defer mb.Close()
	if d.mailbox != d.journal || !strings.HasPrefix(d.mailbox, "sqlite:") {
		d.say("mailbox %s, journal %s; this run's IDs start with %s", d.mailbox, d.journal, d.id)
	}

	// One message that always fails: it must end in the DLQ after max attempts.
	hopeless := channel.Message{ID: d.id + "-hopeless", Address: channel.Address{Type: counter.Type, ID: d.id + "-hopeless"},
		Payload: []byte(`{"add":1,"failTimes":1000}`)}
	var msgs []channel.Message
	exp, _ := spec.Generate(func(m channel.Message) error { msgs = append(msgs, m); return nil })
	msgs = append(msgs, hopeless)
	for i := 0; i < len(msgs); i += 500 {
		if err := mb.Publisher.Publish(ctx, msgs[i:min(i+500, len(msgs))]...); err != nil {
			return err
		}
	}
	wantDLQ := exp.Poison + 1
	d.say("published %d messages to %d counter actors (%d invalid, 1 that always fails, 1 in %d fails once)",
		len(msgs), spec.Actors, exp.Poison, spec.FailEvery)

	// First worker: killed with SIGKILL once a third of the work is done.
	w1, err := d.startWorker("worker-1.log")
	if err != nil {
		return err
	}
	killAt := exp.Valid / 3
	if err := waitFor(60*time.Second, func() bool { return d.sinkLines() >= killAt }); err != nil {
		w1.Process.Kill()
		return fmt.Errorf("first worker made no progress: %w (log: %s)", err, filepath.Join(d.dir, "worker-1.log"))
	}
	w1.Process.Signal(syscall.SIGKILL)
	w1.Wait()
	killedAfter := d.sinkLines()
	d.say("killed worker 1 (pid %d) with SIGKILL after %d side effects", w1.Process.Pid, killedAfter)

	// Second worker recovers and finishes.
	j, err := backend.OpenJournal(context.Background(), d.journal, backend.JournalOptions{})
	if err != nil {
		return err
	}
	defer j.Close()
	reg := builtinRegistry()
	w2, err := d.startWorker("worker-2.log")
	if err != nil {
		return err
	}
	start := time.Now()
	done := func() bool {
		for addr, want := range exp.States {
			a, _ := channel.ParseAddress(addr)
			got, err := replayCounter(ctx, reg, j, a)
			if err != nil || got != want {
				return false
			}
		}
		envs, err := d.ownDeadLetters(ctx, mb.DLQ)
		return err == nil && len(envs) >= wantDLQ
	}
	waitErr := waitFor(120*time.Second, done)
	d.say("worker 2 finished the rest in %s", time.Since(start).Round(time.Millisecond))
	w2.Process.Signal(syscall.SIGTERM)
	w2.Wait()
	stats := d.finalStats("worker-2.log")

	d.say("\nchecks:")
	d.check(waitErr == nil, "all work done before the deadline")
	wrong := 0
	for addr, want := range exp.States {
		a, _ := channel.ParseAddress(addr)
		if got, err := replayCounter(ctx, reg, j, a); err != nil || got != want {
			wrong++
			if wrong <= 3 {
				d.say("    %s: got %+v (%v), want %+v", addr, got, err, want)
			}
		}
	}
	d.check(wrong == 0, "state of all %d counters exact (value and applied count): %d wrong", len(exp.States), wrong)

	lines, _ := counter.ReadSink(d.sink)
	keys := map[string]bool{}
	own := 0 // lines of this run's messages; a shared mailbox may hold others
	for _, l := range lines {
		if strings.HasPrefix(l.Key, d.id) {
			keys[l.Key] = true
			own++
		}
	}
	extra := own - len(keys)
	// Valid messages each make one side effect; so does the hopeless one, on
	// its first attempt (later attempts are answered from the journal).
	d.check(len(keys) == exp.Valid+1, "side effects: %d distinct idempotency keys for %d valid messages and the hopeless one", len(keys), exp.Valid)
	d.check(extra <= d.concurrency, "side effects run twice: %d (bound: effects in flight at the kill, at most --concurrency %d)", extra, d.concurrency)
	d.say("    side effects executed: %d; answered from the journal instead: %d (retries and replay after the crash)",
		own, stats.EffectsAnswered)
	d.say("    redeliveries recognised as done and acked without running: %d", stats.Deduplicated)

	envs, err := d.ownDeadLetters(ctx, mb.DLQ)
	if err != nil {
		return err
	}
	d.check(len(envs) == wantDLQ, "dead-letter queue holds exactly the %d bad messages: %d", wantDLQ, len(envs))
	for _, e := range envs {
		d.say("    %s  %-16s attempts=%d  reason=%q  last error=%q  from %s partition %d offset %d",
			e.ID, e.Address, e.Attempts, e.Reason, e.LastError(), e.Source.Backend, e.Source.Partition, e.Source.Offset)
	}

	// Recovery: activate the busiest actor from its checkpoint, and by
	// replaying its whole journal.
	busiest, most := "", int64(-1)
	for addr, st := range exp.States {
		if st.Applied > most || (st.Applied == most && addr < busiest) {
			busiest, most = addr, st.Applied
		}
	}
	a, _ := channel.ParseAddress(busiest)
	withCP, err1 := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
	full, err2 := reg.Replay(ctx, j, a, actorhost.ReplayOptions{IgnoreCheckpoints: true})
	d.check(err1 == nil && err2 == nil && string(withCP.State) == string(full.State),
		"recovery of %s: from checkpoint at seq %d replays %d messages in %s; full replay of %d messages takes %s; same state",
		busiest, withCP.Checkpoint, withCP.Messages, withCP.Duration.Round(time.Microsecond), full.Messages, full.Duration.Round(time.Microsecond))

	if len(d.failed) > 0 {
		return fmt.Errorf("demo: %d check(s) failed (files kept in %s)", len(d.failed), d.keepDir())
	}
	d.say("\nall checks passed")
	return nil
}

// ownDeadLetters lists the dead letters of this run's messages.
func (d *demo) ownDeadLetters(ctx context.Context, store dlq.Store) ([]dlq.Envelope, error) {
	envs, err := store.List(ctx)
	if err != nil {
		return nil, err
	}
	own := envs[:0]
	for _, e := range envs {
		if strings.HasPrefix(e.MessageID, d.id) {
			own = append(own, e)
		}
	}
	return own, nil
}

func (d *demo) keepDir() string {
	keep := d.dir + "-failed"
	os.Rename(d.dir, keep)
	return keep
}

func (d *demo) startWorker(logName string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(d.dir, logName))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "run", "--mailbox", d.mailbox, "--journal", d.journal, "--counter-sink", d.sink,
		"--concurrency", fmt.Sprint(d.concurrency), "--checkpoint-every", "20", "--lease-ttl", "1s", "--session-timeout", "6s",
		"--backoff-initial", "10ms", "--backoff-max", "100ms", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	return cmd, nil
}

func (d *demo) sinkLines() int {
	f, err := os.Open(d.sink)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
	}
	return n
}

// finalStats reads the counters a worker logs when it stops.
func (d *demo) finalStats(logName string) actorhost.Stats {
	var st actorhost.Stats
	b, err := os.ReadFile(filepath.Join(d.dir, logName))
	if err != nil {
		return st
	}
	for _, line := range strings.Split(string(b), "\n") {
		var rec struct {
			Msg      string `json:"msg"`
			Answered int64  `json:"effects_answered"`
			Dedup    int64  `json:"deduplicated"`
		}
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "worker stopped" {
			st.EffectsAnswered, st.Deduplicated = rec.Answered, rec.Dedup
		}
	}
	return st
}

func replayCounter(ctx context.Context, reg *actorhost.Registry, j journal.Journal, a channel.Address) (counter.State, error) {
	r, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
	if err != nil {
		return counter.State{}, err
	}
	var st counter.State
	err = json.Unmarshal(r.State, &st)
	return st, err
}

func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
