package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/actors/counter"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
)

// kafkaBrokers returns the brokers as worker URLs and kcat take them:
// host:port[,host:port].
func kafkaBrokers(t *testing.T) string {
	t.Helper()
	return strings.Join(testenv.Kafka(t), ",")
}

// requireKcat fails (under CI) or skips the test when kcat is missing.
func requireKcat(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("kcat"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed, and CI must run the Kafka interop tests: apt-get install kcat")
		}
		t.Skip("kcat is not installed: apt-get install kcat")
	}
}

var nonTopicChars = regexp.MustCompile(`[^a-z0-9]+`)

// kafkaTopic returns a topic name that no other test, and no earlier run,
// uses, and deletes the topic and its dead-letter topic when the test ends.
func kafkaTopic(t *testing.T, brokers string) string {
	t.Helper()
	name := strings.Trim(nonTopicChars.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 60 {
		name = name[len(name)-60:]
	}
	topic := fmt.Sprintf("it-%s-%s", name, strconv.FormatInt(time.Now().UnixNano(), 36))
	t.Cleanup(func() {
		if os.Getenv("POSTBOX_IT_KEEP") != "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
		if err != nil {
			return
		}
		defer cl.Close()
		kadm.NewClient(cl).DeleteTopics(ctx, topic, topic+".dlq")
	})
	return topic
}

// workerArgs are the flags of one `worker run`.
type workerArgs struct {
	mailbox, journal string
	sink             string
	concurrency      int
	admin            string
	extra            []string
}

// kafkaSessionTimeout is the workers' Kafka group session: the broker's
// smallest allowed by default is 6s.
const kafkaSessionTimeout = 10 * time.Second

func startWorker(t *testing.T, dir, name string, w workerArgs) *process {
	t.Helper()
	args := []string{"run", "--mailbox", w.mailbox, "--journal", w.journal,
		"--concurrency", strconv.Itoa(max(w.concurrency, 1)), "--checkpoint-every", "25",
		"--backoff-initial", "5ms", "--backoff-max", "50ms", "--log-level", "info", "--shutdown-timeout", "30s"}
	if w.sink != "" {
		args = append(args, "--counter-sink", w.sink)
	}
	if w.admin == "" {
		w.admin = testenv.FreeAddr(t) // for GET /partitions
	}
	args = append(args, "--admin", w.admin)
	if strings.HasPrefix(w.mailbox, "kafka:") {
		// A killed or paused worker keeps its partitions this long.
		args = append(args, "--session-timeout", kafkaSessionTimeout.String())
	}
	p := startProcess(t, dir, name, workerBin, append(args, w.extra...)...)
	p.admin = w.admin
	return p
}

// metric scrapes one unlabelled counter or gauge from a worker's /metrics.
func metric(adminAddr, name string) (float64, bool) {
	code, body := testenv.Get("http://" + adminAddr + "/metrics")
	if code != 200 {
		return 0, false
	}
	return sample(body, name)
}

// sample finds one unlabelled sample in a Prometheus text page.
func sample(page, name string) (float64, bool) {
	for _, line := range strings.Split(page, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// sqliteJournal returns a journal URL for a new SQLite file in dir.
func sqliteJournal(dir string) string { return "sqlite:" + filepath.Join(dir, "journal.db") }

// postgresJournal returns a journal URL for a new schema of POSTGRES_DSN,
// dropped when the test ends.
func postgresJournal(t *testing.T) string {
	t.Helper()
	dsn := testenv.Postgres(t)
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("POSTGRES_DSN %q: want a postgres:// URL, as scripts/services.sh prints", dsn)
	}
	schema := fmt.Sprintf("pbit_%s", strconv.FormatInt(time.Now().UnixNano(), 36))
	runSQL := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	ident := pgx.Identifier{schema}.Sanitize()
	if err := runSQL("CREATE SCHEMA " + ident); err != nil {
		t.Fatalf("create schema for the journal: %v", err)
	}
	t.Cleanup(func() {
		if os.Getenv("POSTBOX_IT_KEEP") == "" {
			runSQL("DROP SCHEMA IF EXISTS " + ident + " CASCADE")
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// openJournal opens a journal URL in-process, closed when the test ends.
func openJournal(t *testing.T, url string) journal.Journal {
	t.Helper()
	j, err := backend.OpenJournal(context.Background(), url, backend.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// wrongCounters replays every counter of want from j and returns how many
// differ from it, with one example.
func wrongCounters(reg *actorhost.Registry, j journal.Journal, want map[string]counter.State) (int, string) {
	n, example := 0, ""
	for _, addr := range sortedKeys(want) {
		a, err := channel.ParseAddress(addr)
		var got counter.State
		if err == nil {
			var r actorhost.Replayed
			r, err = reg.Replay(context.Background(), j, a, actorhost.ReplayOptions{})
			if err == nil {
				err = json.Unmarshal(r.State, &got)
			}
		}
		if err != nil || got != want[addr] {
			n++
			if example == "" {
				example = fmt.Sprintf("%s = %+v (err %v), want %+v", addr, got, err, want[addr])
			}
		}
	}
	return n, example
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// dlqRow is one line of `worker dlq list`.
type dlqRow struct{ id, address, attempts, lastError string }

// dlqList runs `worker dlq list` on a mailbox.
func dlqList(t *testing.T, mailbox string) []dlqRow {
	t.Helper()
	r := run(t, "", workerBin, "dlq", "list", "--mailbox", mailbox)
	if r.code != 0 {
		t.Fatalf("worker dlq list: status %d: %s", r.code, r.stderr)
	}
	return parseDLQList(t, r.stdout)
}

// parseDLQList reads what `worker dlq list` prints.
func parseDLQList(t *testing.T, stdout string) []dlqRow {
	t.Helper()
	var rows []dlqRow
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 4)
		if len(f) != 4 {
			t.Fatalf("worker dlq list: unexpected line %q", line)
		}
		rows = append(rows, dlqRow{id: f[0], address: f[1], attempts: f[2], lastError: f[3]})
	}
	return rows
}

// dlqEnvelopes lists a mailbox's dead letters in-process: the CLI does not
// print message IDs.
func dlqEnvelopes(t *testing.T, mailbox string) []dlq.Envelope {
	t.Helper()
	mb, err := backend.OpenMailbox(context.Background(), mailbox, backend.MailboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	envs, err := mb.DLQ.List(ctx)
	if err != nil {
		t.Fatalf("list dead letters: %v", err)
	}
	return envs
}

// sinkStats reads a counter sink: its lines and distinct idempotency keys.
func sinkStats(t *testing.T, path string) (lines, distinct int) {
	t.Helper()
	ls, err := counter.ReadSink(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, l := range ls {
		keys[l.Key] = true
	}
	return len(ls), len(keys)
}

// sinkLines counts a sink's lines cheaply, for progress.
func sinkLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\n")
}

// groupLag returns, for the mailbox group of topic, the sum over its
// partitions of end offset minus committed offset.
func groupLag(t *testing.T, brokers, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	committed, err := adm.FetchOffsets(ctx, "postbox."+topic)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		t.Fatalf("committed offsets of group postbox.%s: %v", topic, err)
	}
	var lag int64
	ends.Each(func(o kadm.ListedOffset) {
		c, ok := committed.Lookup(topic, o.Partition)
		switch {
		case !ok:
			lag += o.Offset
		default:
			lag += o.Offset - c.At
		}
	})
	return lag
}

// endOffsetSum returns how many records a topic's partitions hold in all.
func endOffsetSum(t *testing.T, brokers, topic string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// outcome is an outcome entry of an actor's journal.
type outcome struct {
	kind, message string
	payload       json.RawMessage
	headers       map[string]string
}

// journalOutcomes runs `worker journal ADDR` and returns the outcome entries
// (completions and dead letters) in journal order.
func journalOutcomes(t *testing.T, journalURL, addr string) []outcome {
	t.Helper()
	r := run(t, "", workerBin, "journal", addr, "--journal", journalURL)
	if r.code != 0 {
		t.Fatalf("worker journal %s: status %d: %s", addr, r.code, r.stderr)
	}
	var out []outcome
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e struct {
			Kind    string `json:"kind"`
			Message string `json:"message"`
			Data    struct {
				Payload json.RawMessage   `json:"payload"`
				Headers map[string]string `json:"headers"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("worker journal %s: line %q: %v", addr, line, err)
		}
		if e.Kind == "complete" || e.Kind == "dead-letter" {
			out = append(out, outcome{kind: e.Kind, message: e.Message, payload: e.Data.Payload, headers: e.Data.Headers})
		}
	}
	return out
}

// partitionList formats a set of partitions.
func partitionList(ps map[int32]bool) string {
	var s []int
	for p := range ps {
		s = append(s, int(p))
	}
	sort.Ints(s)
	return fmt.Sprint(s)
}

// stopBetweenJournalWrites SIGSTOPs a worker just after one of its writes
// to the SQLite journal at journalPath has committed, and returns how many
// tries that took. Stopped there, it holds no lock: a worker stopped
// inside a journal transaction would block every other worker's journal
// writes (SQLite has one writer) until it resumes, so none could take its
// partitions over, which is what a zombie test needs. And under load its
// next group commit, gathered during the last one, is then waiting to be
// written with the old epoch as soon as it resumes. In WAL mode the write
// lock is an exclusive POSIX lock on byte 120 of the -shm file, which
// /proc/locks shows.
func stopBetweenJournalWrites(t *testing.T, p *process, journalPath string) int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(journalPath+"-shm", &st); err != nil {
		t.Fatalf("stat the journal's shared memory file: %v", err)
	}
	pid := strconv.Itoa(p.cmd.Process.Pid)
	inode := ":" + strconv.FormatUint(st.Ino, 10)
	holding := func() bool {
		b, err := os.ReadFile("/proc/locks")
		if err != nil {
			t.Fatalf("read /proc/locks: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// 1: POSIX  ADVISORY  WRITE 2266 fe:00:9994369 120 120
			f := strings.Fields(line)
			if len(f) >= 8 && f[1] == "POSIX" && f[3] == "WRITE" && f[4] == pid &&
				strings.HasSuffix(f[5], inode) && f[6] == "120" {
				return true
			}
		}
		return false
	}
	for try := 1; try <= 200; try++ {
		waitfor.Until(t, 10*time.Second, p.name+" to write to the journal", holding)
		deadline := time.Now().Add(10 * time.Second)
		for holding() {
			if time.Now().After(deadline) {
				t.Fatalf("%s held the journal's write lock for 10s", p.name)
			}
		}
		p.signal(t, syscall.SIGSTOP)
		waitfor.Until(t, 5*time.Second, p.name+" to stop", func() bool { return allThreadsStopped(p.cmd.Process.Pid) })
		if !holding() {
			return try
		}
		p.signal(t, syscall.SIGCONT)
	}
	t.Fatalf("%s held the journal's write lock at each of 200 tries to stop it between two writes", p.name)
	return 0
}

// allThreadsStopped reports whether every thread of pid is stopped by a
// signal (state T in /proc/PID/task/*/stat).
func allThreadsStopped(pid int) bool {
	stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if len(stats) == 0 {
		return false
	}
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		// pid (comm) S ...: the state follows the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// testDir is t.TempDir, unless POSTBOX_IT_KEEP is set: then a directory
// that outlives the test (logs, journal, sink), named in the test's log.
func testDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("POSTBOX_IT_KEEP") == "" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("", "postbox-it-")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("POSTBOX_IT_KEEP: files kept in %s", dir)
	return dir
}
