package redis_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/redis"
	"github.com/postbox-dev/postbox/internal/backendtest"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// errLostReply is what a command whose reply was lost returns.
var errLostReply = errors.New("i/o timeout (injected: the server ran the command, its reply was lost)")

// replyLoss is a go-redis hook that runs every command and then, for those
// lose picks (it sees the reply), drops the reply: the caller gets a
// timeout although the server ran the command, as after a network blip.
// With rerun set it runs the command once more and returns that reply
// instead, as go-redis itself does when it retries a read timeout.
type replyLoss struct {
	lose  func(cmd goredis.Cmder) bool
	rerun bool

	mu   sync.Mutex
	lost []string // the lost commands, for failure messages
	hit  chan struct{}
}

func newReplyLoss(lose func(goredis.Cmder) bool) *replyLoss {
	return &replyLoss{lose: lose, hit: make(chan struct{}, 1)}
}

func (h *replyLoss) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (h *replyLoss) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		if err := next(ctx, cmd); err != nil || !h.lose(cmd) {
			return err
		}
		h.note(cmd)
		if h.rerun {
			return next(ctx, cmd)
		}
		cmd.SetErr(errLostReply)
		return errLostReply
	}
}

// ProcessPipelineHook loses the replies of a whole pipeline (the flusher
// sends acks in one) when lose picks any of its commands.
func (h *replyLoss) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		if err := next(ctx, cmds); err != nil || !slices.ContainsFunc(cmds, h.lose) {
			return err
		}
		h.note(cmds[0])
		if h.rerun {
			return next(ctx, cmds)
		}
		for _, c := range cmds {
			c.SetErr(errLostReply)
		}
		return errLostReply
	}
}

func (h *replyLoss) note(cmd goredis.Cmder) {
	h.mu.Lock()
	h.lost = append(h.lost, fmt.Sprint(cmd.Args()[:min(len(cmd.Args()), 2)]))
	h.mu.Unlock()
	select {
	case h.hit <- struct{}{}:
	default:
	}
}

func (h *replyLoss) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.lost)
}

// lossyMailbox opens mailbox name on a client of its own with hook h.
func lossyMailbox(t *testing.T, name string, h *replyLoss) *redis.Mailbox {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: testenv.Redis(t), PoolSize: 32})
	c.AddHook(h)
	mb, err := redis.New(t.Context(), c, name, redis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mb.Close()
		c.Close()
	})
	return mb
}

// isScript reports whether cmd runs the script with hash sha.
func isScript(cmd goredis.Cmder, sha string) bool {
	a := cmd.Args()
	return len(a) > 1 && strings.EqualFold(fmt.Sprint(a[0]), "evalsha") && a[1] == sha
}

// holdsID reports whether a script reply holds an entry with message ID id
// (a field list with "id", id in it).
func holdsID(v any, id string) bool {
	s, ok := v.([]any)
	if !ok {
		return false
	}
	for i, x := range s {
		if x == "id" && i+1 < len(s) && s[i+1] == id {
			return true
		}
		if holdsID(x, id) {
			return true
		}
	}
	return false
}

// loseOnce picks the first run of the script sha whose reply holds id.
func loseOnce(sha, id string) func(goredis.Cmder) bool {
	var once sync.Once
	return func(cmd goredis.Cmder) bool {
		if !isScript(cmd, sha) {
			return false
		}
		c, ok := cmd.(*goredis.Cmd)
		if !ok || !holdsID(c.Val(), id) {
			return false
		}
		picked := false
		once.Do(func() { picked = true })
		return picked
	}
}

// oneActor publishes messages with the given IDs to the actor t/1.
func oneActor(t *testing.T, mb *redis.Mailbox, ids ...string) {
	t.Helper()
	var msgs []channel.Message
	for _, id := range ids {
		msgs = append(msgs, channel.Message{ID: id, Address: channel.Address{Type: "t", ID: "1"}, Payload: []byte(id)})
	}
	if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// ids lists the message IDs of msgs.
func ids(msgs []channel.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID
	}
	return out
}

// expectIDs waits until r received at least len(want) messages (or 10s
// passed), gives a straggler a moment, and checks what arrived, in order.
func expectIDs(t *testing.T, r *backendtest.Recorder, want ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.Received()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // a duplicate or straggler would show by now
	if got := ids(r.Received()); !slices.Equal(got, want) {
		t.Fatalf("received %v, want %v: in order, none missing, none twice", got, want)
	}
}

// waitEmpty waits for the partition stream to be empty: everything acked.
func waitEmpty(t *testing.T, name string) {
	t.Helper()
	c := testenv.RedisClient(t)
	waitfor.Until(t, 10*time.Second, "the stream to empty (every entry acked)", func() bool {
		n, err := c.XLen(t.Context(), "{postbox:"+name+"}:s:0").Result()
		return err == nil && n == 0
	})
}

// When the reply of a read is lost after Redis ran it, the entries it read
// sit in the consumer's pending list. The claim must deliver them before
// anything later of the partition, not strand them while later messages of the
// same actor overtake them.
func TestLostReadReplyKeepsOrder(t *testing.T) {
	one := testConsumerOptions
	one.BatchSize = 1
	for _, tc := range []struct {
		name  string
		opts  redis.ConsumerOptions
		rerun bool
		early []string // published before the consumer starts
		late  []string // published once the reply was lost
	}{
		// Every read takes one entry: the read after the lost one would
		// take m2.
		{"one per read", one, false, []string{"m1", "m2", "m3"}, nil},
		// m2 and m3 arrive after the read of m1 lost its reply.
		{"later messages", testConsumerOptions, false, []string{"m1"}, []string{"m2", "m3"}},
		// go-redis retries a command whose reply timed out: the retry's
		// read runs on the server after the first one read m1.
		{"retried by the client", testConsumerOptions, true, []string{"m1"}, []string{"m2", "m3"}},
		{"retried, one per read", one, true, []string{"m1", "m2", "m3"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := freshMailbox(t)
			mb := open(t, name, redis.Options{Partitions: 1})
			oneActor(t, mb, tc.early...)
			h := newReplyLoss(loseOnce(redis.ReadScriptSHA, "m1"))
			h.rerun = tc.rerun
			r := backendtest.Record(t, lossyMailbox(t, name, h).Consumer(tc.opts), true)
			select {
			case <-h.hit:
			case <-time.After(10 * time.Second):
				t.Fatal("no read of m1 within 10s")
			}
			oneActor(t, mb, tc.late...)
			expectIDs(t, r, append(slices.Clone(tc.early), tc.late...)...)
			waitEmpty(t, name)
		})
	}
}

// Lost replies of the script that claims the partition's pending entries:
// a previous owner's, and the consumer's own from its previous claim.
func TestLostClaimReplyKeepsOrder(t *testing.T) {
	t.Run("takeover", func(t *testing.T) {
		name := freshMailbox(t)
		mb := open(t, name, redis.Options{Partitions: 1})
		oneActor(t, mb, "m1", "m2", "m3")
		a := backendtest.Record(t, open(t, name, redis.Options{}).Consumer(testConsumerOptions), false)
		waitfor.Until(t, 10*time.Second, "A to receive 3", func() bool { return len(a.Received()) == 3 })
		if err := a.Claim(t).Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		h := newReplyLoss(loseOnce(redis.ClaimScriptSHA, "m1"))
		b := backendtest.Record(t, lossyMailbox(t, name, h).Consumer(testConsumerOptions), true)
		select {
		case <-h.hit:
		case <-time.After(10 * time.Second):
			t.Fatal("no claim of m1 within 10s")
		}
		oneActor(t, mb, "m4")
		expectIDs(t, b, "m1", "m2", "m3", "m4")
		waitEmpty(t, name)
	})
	t.Run("same owner", func(t *testing.T) {
		name := freshMailbox(t)
		mb := open(t, name, redis.Options{Partitions: 1})
		h := newReplyLoss(loseOnce(redis.ClaimScriptSHA, "m1"))
		c := lossyMailbox(t, name, h).Consumer(testConsumerOptions)
		var (
			mu  sync.Mutex
			got []string
		)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- c.Run(ctx, func(cl channel.Claim) {
				for m := range cl.Messages() {
					mu.Lock()
					giveUp := m.ID == "m1" && !slices.Contains(got, "m1")
					got = append(got, m.ID)
					mu.Unlock()
					if giveUp {
						// Give the partition up with m1 unacked: the
						// consumer takes it again and claims m1 back.
						break
					}
					_ = cl.Ack(context.Background(), m)
				}
				_ = cl.Release(context.Background())
			})
		}()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		oneActor(t, mb, "m1")
		waitfor.Until(t, 10*time.Second, "the first delivery of m1", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
		oneActor(t, mb, "m2", "m3")
		waitfor.Until(t, 10*time.Second, "4 deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 4 })
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"m1", "m1", "m2", "m3"}; !slices.Equal(got, want) {
			t.Errorf("delivered %v, want %v", got, want)
		}
		if h.count() != 1 {
			t.Errorf("%d replies lost, want the claim's", h.count())
		}
	})
}

// Replies of reads, claims and acks are lost at random, some
// retried by the client: every actor still gets each of its messages once,
// in order. LOSTREPLY_SEED replays a run.
func TestRandomLostRepliesKeepOrder(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LOSTREPLY_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (LOSTREPLY_SEED=%d replays it)", seed, seed)
	var rmu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, 1))
	scripts := []string{redis.ReadScriptSHA, redis.ClaimScriptSHA, redis.AckScriptSHA}
	h := newReplyLoss(func(cmd goredis.Cmder) bool {
		if !slices.ContainsFunc(scripts, func(sha string) bool { return isScript(cmd, sha) }) {
			return false
		}
		rmu.Lock()
		defer rmu.Unlock()
		return rng.IntN(4) == 0
	})

	name := freshMailbox(t)
	mb := open(t, name, redis.Options{Partitions: 1})
	const actors, each = 4, 40
	publish := func(from, to int) {
		var msgs []channel.Message
		for i := from; i < to; i++ {
			for a := range actors {
				id := fmt.Sprintf("a%d-%03d", a, i)
				msgs = append(msgs, channel.Message{ID: id, Address: channel.Address{Type: "t", ID: strconv.Itoa(a)}})
			}
		}
		if err := mb.Publisher().Publish(t.Context(), msgs...); err != nil {
			t.Fatal(err)
		}
	}
	publish(0, each/2)
	opts := testConsumerOptions
	opts.BatchSize = 5
	r := backendtest.Record(t, lossyMailbox(t, name, h).Consumer(opts), true)
	for i := each / 2; i < each; i += 4 {
		publish(i, i+4)
		time.Sleep(5 * time.Millisecond)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(r.Received()) < actors*each && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	per := make(map[string][]string)
	for _, m := range r.Received() {
		per[m.Address.ID] = append(per[m.Address.ID], m.ID)
	}
	for a := range actors {
		var want []string
		for i := range each {
			want = append(want, fmt.Sprintf("a%d-%03d", a, i))
		}
		if got := per[strconv.Itoa(a)]; !slices.Equal(got, want) {
			t.Errorf("actor t/%d received %v, want %v", a, got, want)
		}
	}
	t.Logf("%d replies lost", h.count())
	if !t.Failed() {
		waitEmpty(t, name)
	}
}
