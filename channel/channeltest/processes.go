//go:build unix

package channeltest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

// The test binary doubles as a helper consumer process when
// helperMailboxEnv is set; see IsProcessHelper.
const (
	helperMailboxEnv = "POSTBOX_CHANNELTEST_HELPER_MAILBOX"
	helperLogEnv     = "POSTBOX_CHANNELTEST_HELPER_LOG"
	helperOwnerEnv   = "POSTBOX_CHANNELTEST_HELPER_OWNER"
)

// helperLeaseTTL is short so that a killed helper's partitions move within
// seconds, and long enough that a loaded machine renews in time.
const helperLeaseTTL = 2 * time.Second

// OpenHelperConsumer opens, in a helper process, a consumer of the mailbox
// that ProcessMailbox.Name names, with the given owner and lease TTL. closer
// closes what was opened for it once the consumer has stopped. ctx is
// cancelled when the helper is told to stop.
type OpenHelperConsumer func(ctx context.Context, mailbox, owner string, leaseTTL time.Duration) (c channel.Consumer, closer io.Closer, err error)

// IsProcessHelper reports whether this test binary was started by
// RunAcrossProcesses as a helper consumer process. A backend's TestMain
// then runs ProcessHelperMain instead of its tests, as Main does:
//
//	func TestMain(m *testing.M) { os.Exit(channeltest.Main(m, openHelperConsumer)) }
func IsProcessHelper() bool { return os.Getenv(helperMailboxEnv) != "" }

// Main runs ProcessHelperMain in a helper process, else the tests, and
// returns the exit code.
func Main(m *testing.M, open OpenHelperConsumer) int {
	if IsProcessHelper() {
		return ProcessHelperMain(open)
	}
	return m.Run()
}

// ProcessHelperMain consumes the mailbox until SIGTERM and returns the exit
// code. It writes one line per event to the log file, each written before
// the event's effect:
//
//	open P START           the claim of partition P began (unix ns)
//	msg ID P DELIVERIES    a message was received, before its ack
//	interval P START END   the claim ended, before Release
//	lost P T               the lease was lost: the claim ended at T
func ProcessHelperMain(open OpenHelperConsumer) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	log, err := os.OpenFile(os.Getenv(helperLogEnv), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return fail(err)
	}
	defer log.Close()
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(log, format+"\n", args...)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	c, closer, err := open(ctx, os.Getenv(helperMailboxEnv), os.Getenv(helperOwnerEnv), helperLeaseTTL)
	if err != nil {
		return fail(err)
	}
	defer closer.Close()

	var errMu sync.Mutex
	var claimErr error
	// Run returns once every onClaim call has returned.
	err = c.Run(ctx, func(cl channel.Claim) {
		p := cl.Partition()
		start := time.Now().UnixNano()
		logf("open %d %d", p, start)
		for {
			select {
			case m, ok := <-cl.Messages():
				if !ok {
					select {
					case <-cl.Lost(): // closes Messages too
						logf("lost %d %d", p, time.Now().UnixNano())
						return
					default:
					}
					logf("interval %d %d %d", p, start, time.Now().UnixNano())
					rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if err := cl.Release(rctx); err != nil {
						errMu.Lock()
						claimErr = err
						errMu.Unlock()
					}
					return
				}
				logf("msg %s %d %d", m.ID, p, m.Offset)
				if err := cl.Ack(context.Background(), m); err != nil {
					errMu.Lock()
					claimErr = err
					errMu.Unlock()
				}
			case <-cl.Lost():
				logf("lost %d %d", p, time.Now().UnixNano())
				return
			}
		}
	})
	if err != nil {
		return fail(err)
	}
	if claimErr != nil {
		return fail(claimErr)
	}
	return 0
}

// ProcessMailbox is what RunAcrossProcesses needs of the mailbox under test.
type ProcessMailbox struct {
	// Name is handed to OpenHelperConsumer in every helper process.
	Name string
	// Partitions is the mailbox's partition count.
	Partitions int
	// Publisher publishes to the mailbox from the test process.
	Publisher channel.Publisher
	// Drained reports whether every published message has been acked, as
	// the backend's storage shows it. It is polled once publishing stopped.
	Drained func(t *testing.T) bool
}

// RunAcrossProcesses runs consumers in separate processes on one mailbox
// while messages keep coming: A alone, then A and B (they split), then B
// alone after A stops gracefully, then B and C, then B alone again after C
// is killed. No partition may be worked on by two processes at once, and
// every message must be consumed.
//
// setup returns a new, empty mailbox, cleaned up when t ends; it is not
// called when the test is skipped. The helpers are this test binary started
// again; its TestMain must dispatch to ProcessHelperMain (see
// IsProcessHelper).
func RunAcrossProcesses(t *testing.T, setup func(t *testing.T) ProcessMailbox) {
	if testing.Short() {
		t.Skip("starts helper processes")
	}
	mb := setup(t)
	partitions := mb.Partitions
	dir := t.TempDir()

	// Publish batches until the scenario is over.
	var (
		pubMu     sync.Mutex
		published []string
		pubErr    error
	)
	pubCtx, stopPub := context.WithCancel(context.Background())
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for k := 0; ; k++ {
			select {
			case <-pubCtx.Done():
				return
			case <-tick.C:
			}
			var batch []channel.Message
			for i := range 20 {
				n := k*20 + i
				batch = append(batch, channel.Message{
					ID:      fmt.Sprintf("m-%d", n),
					Address: channel.Address{Type: "proc", ID: strconv.Itoa(n % 64)},
					Payload: []byte(strconv.Itoa(n)),
				})
			}
			if err := mb.Publisher.Publish(pubCtx, batch...); err != nil {
				if pubCtx.Err() == nil {
					pubMu.Lock()
					pubErr = err
					pubMu.Unlock()
				}
				return
			}
			pubMu.Lock()
			for _, m := range batch {
				published = append(published, m.ID)
			}
			pubMu.Unlock()
		}
	}()
	defer stopPub()

	held := func(h *helper) int { return len(readHelperLog(t, h.log).open) }
	const wait = 60 * time.Second

	a := startHelper(t, dir, mb.Name, "A")
	waitfor.Until(t, wait, "A to hold every partition", func() bool { return held(a) == partitions })

	b := startHelper(t, dir, mb.Name, "B")
	waitfor.Until(t, wait, "A and B to split the partitions", func() bool {
		ha, hb := held(a), held(b)
		return ha > 0 && hb > 0 && ha+hb == partitions
	})
	waitfor.Until(t, wait, "B to consume", func() bool { return len(readHelperLog(t, b.log).msgs) > 0 })

	a.stop(t, syscall.SIGTERM)
	waitfor.Until(t, wait, "B to take over A's partitions", func() bool { return held(b) == partitions })

	c := startHelper(t, dir, mb.Name, "C")
	waitfor.Until(t, wait, "B and C to split the partitions", func() bool { return held(c) > 0 })
	waitfor.Until(t, wait, "C to consume", func() bool { return len(readHelperLog(t, c.log).msgs) > 0 })
	c.stop(t, syscall.SIGKILL)
	waitfor.Until(t, wait, "B to take over the killed C's partitions", func() bool { return held(b) == partitions })

	stopPub()
	<-pubDone
	pubMu.Lock()
	if pubErr != nil {
		t.Fatalf("publish: %v", pubErr)
	}
	want := published
	pubMu.Unlock()

	waitfor.Until(t, wait, "every message to be acked", func() bool { return mb.Drained(t) })
	b.stop(t, syscall.SIGTERM)

	// Every message was received by some process.
	logs := map[string]helperLog{}
	seen := map[string]bool{}
	redelivered := 0
	for _, h := range []*helper{a, b, c} {
		l := readHelperLog(t, h.log)
		logs[h.name] = l
		for _, id := range l.msgs {
			if seen[id] {
				redelivered++
			}
			seen[id] = true
		}
		if l.lost > 0 {
			t.Errorf("helper %s lost %d leases: renewals were late", h.name, l.lost)
		}
	}
	missing := 0
	for _, id := range want {
		if !seen[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d published messages were never received", missing, len(want))
	}

	// No partition was held by two processes at once. C was killed: its
	// open claims end when it was known dead.
	type span struct {
		who        string
		start, end int64
	}
	spans := map[int32][]span{}
	for _, h := range []*helper{a, b, c} {
		l := logs[h.name]
		for _, iv := range l.intervals {
			spans[int32(iv[0])] = append(spans[int32(iv[0])], span{h.name, iv[1], iv[2]})
		}
		for p, start := range l.open {
			spans[p] = append(spans[p], span{h.name, start, h.endAt.UnixNano()})
		}
	}
	for p, ss := range spans {
		for i, x := range ss {
			for _, y := range ss[i+1:] {
				if x.who != y.who && x.start < y.end && y.start < x.end {
					t.Errorf("partition %d held by %s [%d, %d] and %s [%d, %d] at once",
						p, x.who, x.start, x.end, y.who, y.start, y.end)
				}
			}
		}
	}
	t.Logf("%d messages (%d redelivered); claims per process: A %d, B %d, C %d (C killed)", len(want), redelivered,
		len(logs["A"].intervals), len(logs["B"].intervals), len(logs["C"].intervals)+len(logs["C"].open))
}

// helper is a running helper process.
type helper struct {
	name   string
	cmd    *exec.Cmd
	log    string
	stderr bytes.Buffer
	exited chan struct{}
	endAt  time.Time // when it was known dead
}

// startHelper starts this test binary as helper name on the mailbox, logging
// to a file in dir. It is killed when t ends, if still running.
func startHelper(t *testing.T, dir, mailbox, name string) *helper {
	t.Helper()
	h := &helper{name: name, log: filepath.Join(dir, name+".log"), exited: make(chan struct{})}
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	h.cmd.Env = append(os.Environ(), helperMailboxEnv+"="+mailbox, helperLogEnv+"="+h.log, helperOwnerEnv+"="+name)
	h.cmd.Stderr = &h.stderr
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start helper %s: %v", name, err)
	}
	go func() {
		_ = h.cmd.Wait()
		h.endAt = time.Now()
		close(h.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-h.exited:
		default:
			_ = h.cmd.Process.Kill()
			<-h.exited
		}
	})
	return h
}

// stop sends sig and waits for the helper to exit.
func (h *helper) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal helper %s: %v", h.name, err)
	}
	select {
	case <-h.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("helper %s did not exit within 30s of %v", h.name, sig)
	}
	if sig == syscall.SIGTERM && h.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("helper %s exited with %v: %s", h.name, h.cmd.ProcessState, h.stderr.String())
	}
}

// helperLog is a parsed helper log.
type helperLog struct {
	open      map[int32]int64 // partition -> start of the claim still open
	intervals [][3]int64      // partition, start, end
	msgs      []string
	lost      int
}

func readHelperLog(t *testing.T, path string) helperLog {
	t.Helper()
	l := helperLog{open: make(map[int32]int64)}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return l
	}
	if err != nil {
		t.Fatal(err)
	}
	data = data[:bytes.LastIndexByte(data, '\n')+1] // drop a line still being written
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		num := func(i int) int64 {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				t.Fatalf("%s: bad line %q", path, sc.Text())
			}
			return n
		}
		switch f[0] {
		case "open":
			l.open[int32(num(1))] = num(2)
		case "interval":
			p := num(1)
			delete(l.open, int32(p))
			l.intervals = append(l.intervals, [3]int64{p, num(2), num(3)})
		case "msg":
			l.msgs = append(l.msgs, f[1])
		case "lost":
			p := num(1)
			if start, ok := l.open[int32(p)]; ok {
				l.intervals = append(l.intervals, [3]int64{p, start, num(2)})
				delete(l.open, int32(p))
			}
			l.lost++
		}
	}
	return l
}
