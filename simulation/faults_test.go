package simulation

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/journal"
)

// dice decides faults from the seed and what is being done, not from the
// order calls happen in: the n-th call of one kind on one key gets the same
// roll in every run of a seed, whatever the goroutine schedule.
type dice struct {
	seed  uint64
	mu    sync.Mutex
	calls map[string]int
}

func newDice(seed uint64) *dice { return &dice{seed: seed, calls: map[string]int{}} }

// roll returns a number in [0, 1) for the next call of what.
func (d *dice) roll(what string) float64 {
	d.mu.Lock()
	n := d.calls[what]
	d.calls[what]++
	d.mu.Unlock()
	h := fnv.New64a()
	fmt.Fprintf(h, "%d|%s|%d", d.seed, what, n)
	// FNV's high bits barely move with the last byte: mix them (splitmix64).
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / float64(1<<53)
}

// journalFaults are the journal's fault rates, per call.
type journalFaults struct {
	transient float64 // fail, nothing written
	ambiguous float64 // write, then fail: the reply is lost
	slow      float64 // take up to 20ms
}

var errInjected = errors.New("simulation: injected journal fault")

// faultyJournal is one host incarnation's view of the shared journal. Once
// killed it writes nothing more, as a dead process would not.
type faultyJournal struct {
	journal.Journal
	dice   *dice
	faults journalFaults
	dead   atomic.Bool
	stats  *runStats
	// crashAt reports whether the process dies right after a step, and
	// if so has killed it.
	crashAt func(step, key string) bool
}

func (j *faultyJournal) kill() { j.dead.Store(true) }

// before decides the fault of one call; key names what it touches.
func (j *faultyJournal) before(what, key string) (ambiguous bool, err error) {
	if j.dead.Load() {
		return false, journal.ErrClosed
	}
	r := j.dice.roll(what + "|" + key)
	if r < j.faults.slow {
		time.Sleep(time.Duration(r / j.faults.slow * float64(20*time.Millisecond)))
	}
	r = j.dice.roll("fault|" + what + "|" + key)
	switch {
	case r < j.faults.transient:
		j.stats.journalFaults.Add(1)
		return false, errInjected
	case r < j.faults.transient+j.faults.ambiguous && what == "append":
		j.stats.ambiguous.Add(1)
		return true, nil
	}
	return false, nil
}

func (j *faultyJournal) Append(ctx context.Context, batches ...journal.Batch) error {
	key := ""
	if len(batches) > 0 && len(batches[0].Entries) > 0 {
		e := batches[0].Entries[0]
		key = fmt.Sprintf("%s#%d", e.Actor, e.Seq)
	}
	ambiguous, err := j.before("append", key)
	if err != nil {
		return err
	}
	err = j.Journal.Append(ctx, batches...)
	if err == nil && j.crashAt(stepAppend, key) {
		return journal.ErrClosed
	}
	if ambiguous && err == nil {
		return fmt.Errorf("%w: reply lost after the write landed", errInjected)
	}
	return err
}

func (j *faultyJournal) Read(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) error {
	if _, err := j.before("read", actor); err != nil {
		return err
	}
	return j.Journal.Read(ctx, actor, from, fn)
}

func (j *faultyJournal) LastSeq(ctx context.Context, actor string) (int64, error) {
	if _, err := j.before("lastseq", actor); err != nil {
		return 0, err
	}
	return j.Journal.LastSeq(ctx, actor)
}

func (j *faultyJournal) Outcome(ctx context.Context, actor, msgID string) (journal.Entry, bool, error) {
	if _, err := j.before("outcome", actor+"|"+msgID); err != nil {
		return journal.Entry{}, false, err
	}
	return j.Journal.Outcome(ctx, actor, msgID)
}

func (j *faultyJournal) LoadCheckpoint(ctx context.Context, actor string, at int64) (journal.Checkpoint, bool, error) {
	if _, err := j.before("checkpoint", actor); err != nil {
		return journal.Checkpoint{}, false, err
	}
	return j.Journal.LoadCheckpoint(ctx, actor, at)
}

func (j *faultyJournal) Epoch(ctx context.Context, partition string) (int64, error) {
	if _, err := j.before("epoch", partition); err != nil {
		return 0, err
	}
	return j.Journal.Epoch(ctx, partition)
}

func (j *faultyJournal) CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error) {
	if j.dead.Load() {
		return false, journal.ErrClosed
	}
	ok, err := j.Journal.CompareAndSetEpoch(ctx, partition, old, next)
	if err == nil && j.dice.roll("cas|"+partition) < j.faults.ambiguous {
		// The epoch moved, the reply is lost.
		j.stats.ambiguous.Add(1)
		return false, errInjected
	}
	return ok, err
}

// Close leaves the shared journal open: it outlives the incarnation.
func (j *faultyJournal) Close() error { return nil }

// deadLetters is one incarnation's view of the shared DLQ.
type deadLetters struct {
	dlq.Writer
	dead    *atomic.Bool
	crashAt func(step, key string) bool
}

func (d deadLetters) Put(ctx context.Context, env dlq.Envelope) error {
	if d.dead.Load() {
		return errProcessDead
	}
	err := d.Writer.Put(ctx, env)
	if err == nil && d.crashAt(stepDeadLetter, env.MessageID) {
		return errProcessDead
	}
	return err
}

var errProcessDead = errors.New("simulation: process is dead")

// checkedConsumer checks every ack against the journal: nothing is acked
// before its outcome is durable. It also loses acks on their way.
type checkedConsumer struct {
	channel.Consumer
	j       journal.Journal // the shared journal, no faults
	dlq     dlq.Store
	lost    *lostAcks
	crashAt func(step, key string) bool
	fault   func(string)
}

func (c checkedConsumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	return c.Consumer.Run(ctx, func(cl channel.Claim) { onClaim(checkedClaim{cl, c}) })
}

type checkedClaim struct {
	channel.Claim
	c checkedConsumer
}

func (cl checkedClaim) Ack(ctx context.Context, msgs ...channel.Message) error {
	for _, m := range msgs {
		if checkIdentity(m) != nil {
			// Its outcome is under a key of the host's own.
			if !inDLQ(cl.c.dlq, m.ID) {
				cl.c.fault(fmt.Sprintf("message %q (address %+v) acked before it reached the DLQ", m.ID, m.Address))
			}
			continue
		}
		if _, ok, err := cl.c.j.Outcome(context.Background(), m.Address.String(), m.ID); err != nil || !ok {
			cl.c.fault(fmt.Sprintf("message %s of %s acked without a journaled outcome", m.ID, m.Address))
		}
	}
	if len(msgs) > 0 {
		if cl.c.crashAt(stepAck, fmt.Sprintf("%d|%s", cl.Partition(), msgs[0].ID)) {
			return errProcessDead
		}
		if lost, lands := cl.c.lost.lose(cl.Partition(), msgs[0].ID); lost {
			if lands {
				cl.Claim.Ack(ctx, msgs...)
			}
			return errLostAck
		}
	}
	return cl.Claim.Ack(ctx, msgs...)
}

var errLostAck = errors.New("simulation: ack lost on its way")

// lostAcks loses a share of the acks: some never reach the mailbox, some
// land and lose their reply. It remembers the partitions that lost one.
type lostAcks struct {
	dice  *dice
	rate  float64
	count atomic.Int64

	mu    sync.Mutex
	parts map[int32]bool
}

func (l *lostAcks) lose(p int32, firstID string) (lost, lands bool) {
	if l.rate == 0 {
		return false, false
	}
	r := l.dice.roll(fmt.Sprintf("ack|%d|%s", p, firstID))
	if r >= l.rate {
		return false, false
	}
	l.count.Add(1)
	l.mu.Lock()
	l.parts[p] = true
	l.mu.Unlock()
	return true, r < l.rate/2
}

// take returns the partitions that lost acks since the last take.
func (l *lostAcks) take() []int32 {
	l.mu.Lock()
	defer l.mu.Unlock()
	ps := slices.Sorted(maps.Keys(l.parts))
	clear(l.parts)
	return ps
}

// checkIdentity reports whether m breaks the identifier limits.
func checkIdentity(m channel.Message) error {
	if err := channel.CheckAddress(m.Address); err != nil {
		return err
	}
	return channel.CheckMessageID(m.ID)
}

func inDLQ(store dlq.Store, msgID string) bool {
	envs, _ := store.List(context.Background())
	for _, e := range envs {
		if e.MessageID == msgID {
			return true
		}
	}
	return false
}

// corrupt writes journals that do not replay for brokenActors, as a bad
// disk or a buggy older version could leave them: one with an entry that
// does not decode, one with a checkpoint that does not.
func corrupt(j journal.Journal, partitions int) error {
	for i, a := range brokenActors {
		b := journal.Batch{
			Partition: fmt.Sprintf("memory:sim/%d", channel.HomePartition(a.String(), partitions)),
			Entries:   []journal.Entry{{Actor: a.String(), Seq: 1, Kind: journal.KindAttempt, MsgID: "before", Data: []byte{0xff, 0xfe, 0xfd}}},
		}
		if i == 1 {
			b.Checkpoints = []journal.Checkpoint{{Actor: a.String(), Seq: 1, State: []byte("not json")}}
		}
		if err := j.Append(context.Background(), b); err != nil {
			return fmt.Errorf("corrupt %s: %w", a, err)
		}
	}
	return nil
}
