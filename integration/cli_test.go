package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
)

func TestBadInputGetsOneLineErrorAndStatus2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := "sqlite:" + filepath.Join(dir, "missing.db")
	cases := []struct {
		bin  string
		args []string
		want string // in the error line
	}{
		{workerBin, []string{"frobnicate"}, "unknown command"},
		{workerBin, []string{"run", "--mailbox", "bogus://x/y"}, "--mailbox"},
		{workerBin, []string{"run", "--journal", "bogus:"}, "--journal"},
		{workerBin, []string{"run", "--mailbox", "sqlite:"}, "missing path"},
		{workerBin, []string{"run", "--mailbox", "sqlite:" + filepath.Join(dir, "no/such/dir/x.db")}, "does not exist"},
		{workerBin, []string{"run", "--mailbox", "sqlite:" + dir}, "is a directory"},
		{workerBin, []string{"run", "--mailbox", "memory:"}, "for a journal only"},
		{workerBin, []string{"run", "--concurrency", "0"}, "--concurrency"},
		{workerBin, []string{"run", "--backoff-initial", "soon"}, "backoff-initial"},
		{workerBin, []string{"state", "counter/1", "--journal", missing}, "does not exist"},
		{workerBin, []string{"state", "nonsense", "--journal", missing}, "TYPE/ID"},
		{workerBin, []string{"journal", "--until", "-3", "counter/1"}, "--until"},
		{workerBin, []string{"dlq"}, "want list"},
		{workerBin, []string{"dlq", "show"}, "exactly one"},
		{workerBin, []string{"dlq", "list", "--mailbox", missing}, "does not exist"},
		{producerBin, []string{"send", "counter/1", "{not json"}, "not valid JSON"},
		{producerBin, []string{"send", "counter/1"}, "missing JSON"},
		{producerBin, []string{"send", "counter", `{"add":1}`}, "TYPE/ID"},
		{producerBin, []string{"load", "--actors", "0", "--count", "5"}, "--actors"},
		{producerBin, []string{"load", "--mailbox", "kafka:nope", "--actors", "1", "--count", "1"}, "--mailbox"},
	}
	for _, c := range cases {
		r := run(t, "", c.bin, c.args...)
		line := strings.TrimSpace(r.stderr)
		if r.code != 2 || !strings.Contains(line, c.want) || strings.Count(line, "\n") != 0 {
			t.Errorf("%s %q: status %d, stderr %q; want status 2 and one line containing %q",
				filepath.Base(c.bin), c.args, r.code, r.stderr, c.want)
		}
	}
	// A bad NDJSON line is refused with its line number.
	mb := "sqlite:" + filepath.Join(dir, "m.db")
	r := run(t, "{\"actor\":\"counter/1\",\"data\":{\"add\":1}}\nnot json\n", producerBin, "send", "--mailbox", mb)
	if r.code != 2 || !strings.Contains(r.stderr, "line 2") {
		t.Errorf("bad NDJSON: status %d stderr %q", r.code, r.stderr)
	}
	// Environment variables are checked like flags.
	cmd := exec.Command(workerBin, "run")
	cmd.Dir = dir
	cmd.Env = append(cleanEnv(), "POSTBOX_CONCURRENCY=lots")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "POSTBOX_CONCURRENCY") {
		t.Errorf("bad env: status %d output %q", cmd.ProcessState.ExitCode(), out)
	}
}

func TestWorkerAndProducerCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "postbox.db")
	store := []string{"--mailbox", db, "--journal", db}

	if r := run(t, "", producerBin, "send", "--mailbox", db, "counter/7", `{"add":5}`); r.code != 0 {
		t.Fatalf("send: %+v", r)
	}
	lines := `{"actor":"counter/7","data":{"add":2}}
{"actor":"counter/8","data":{"add":1}}
{"actor":"counter/9","id":"bad-1","data":{"add":"x"}}
`
	if r := run(t, lines, producerBin, "send", "--mailbox", db); r.code != 0 || !strings.Contains(r.stdout, "published 3") {
		t.Fatalf("send NDJSON: %+v", r)
	}

	admin := testenv.FreeAddr(t)
	worker := exec.Command(workerBin, append([]string{"run", "--admin", admin, "--log-level", "warn"}, store...)...)
	worker.Env = cleanEnv()
	logf, _ := os.Create(filepath.Join(dir, "worker.log"))
	worker.Stdout, worker.Stderr = logf, logf
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	defer worker.Process.Kill()
	base := "http://" + admin
	waitfor.Until(t, 20*time.Second, "counter/7 = 7 over the admin API", func() bool {
		code, body := testenv.Get(base + "/actors/counter/7")
		return code == 200 && strings.Contains(body, `"value":7`)
	})
	if code, _ := testenv.Get(base + "/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _ := testenv.Get(base + "/readyz"); code != 200 {
		t.Errorf("/readyz = %d", code)
	}
	waitfor.Until(t, 10*time.Second, "metrics", func() bool {
		_, m := testenv.Get(base + "/metrics")
		return strings.Contains(m, "postbox_messages_processed_total 3") && strings.Contains(m, "postbox_messages_dead_lettered_total 1")
	})
	_, m := testenv.Get(base + "/metrics")
	for _, name := range []string{"postbox_messages_retried_total", "postbox_handler_duration_seconds_bucket",
		"postbox_journal_flush_entries_bucket", "postbox_journal_flush_duration_seconds_bucket",
		"postbox_messages_in_flight", "postbox_actors_active"} {
		if !strings.Contains(m, name) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if code, _ := testenv.Get(base + "/actors/nobody/1"); code != 404 {
		t.Errorf("unknown actor type: %d, want 404", code)
	}
	worker.Process.Signal(syscall.SIGTERM)
	if err := worker.Wait(); err != nil {
		t.Fatalf("worker did not stop cleanly on SIGTERM: %v", err)
	}

	r := run(t, "", workerBin, append([]string{"state", "counter/7"}, store...)...)
	var st struct{ Value, Applied int }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &st) != nil || st.Value != 7 || st.Applied != 2 {
		t.Fatalf("state: %+v", r)
	}
	r = run(t, "", workerBin, append([]string{"journal", "counter/7"}, store...)...)
	if r.code != 0 || strings.Count(r.stdout, `"kind":"complete"`) != 2 || strings.Count(r.stdout, `"kind":"effect"`) != 2 {
		t.Fatalf("journal: %+v", r)
	}
	r = run(t, "", workerBin, append([]string{"journal", "counter/7", "--until", "2"}, store...)...)
	if r.code != 0 || !strings.Contains(r.stdout, `"value": 5`) {
		t.Fatalf("journal --until 2: %+v", r)
	}

	r = run(t, "", workerBin, append([]string{"dlq", "list"}, store...)...)
	fields := strings.Split(strings.TrimSpace(r.stdout), "\t")
	if r.code != 0 || len(fields) != 4 || fields[1] != "counter/9" || fields[2] != "attempts=1" || !strings.Contains(fields[3], "not {") {
		t.Fatalf("dlq list: %+v", r)
	}
	id := fields[0]
	r = run(t, "", workerBin, append([]string{"dlq", "show", id}, store...)...)
	if r.code != 0 || !strings.Contains(r.stdout, `"message_id": "bad-1"`) || !strings.Contains(r.stdout, `"backend": "sqlite"`) {
		t.Fatalf("dlq show: %+v", r)
	}
	if r = run(t, "", workerBin, append([]string{"dlq", "show", "nope"}, store...)...); r.code != 2 {
		t.Errorf("dlq show unknown: %+v", r)
	}
	r = run(t, "", workerBin, append([]string{"dlq", "redrive", id}, store...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "redrove 1") {
		t.Fatalf("dlq redrive: %+v", r)
	}
	if r = run(t, "", workerBin, append([]string{"dlq", "list"}, store...)...); strings.TrimSpace(r.stdout) != "" {
		t.Fatalf("dlq after redrive: %+v", r)
	}
	// Redriven, it fails again (still poison) and comes back with a new ID.
	worker = exec.Command(workerBin, append([]string{"run", "--log-level", "error"}, store...)...)
	worker.Env = cleanEnv()
	worker.Start()
	defer worker.Process.Kill()
	waitfor.Until(t, 20*time.Second, "redriven message dead-lettered again", func() bool {
		r := run(t, "", workerBin, append([]string{"dlq", "list"}, store...)...)
		return strings.Contains(r.stdout, "counter/9")
	})
	worker.Process.Signal(syscall.SIGTERM)
	worker.Wait()
	r = run(t, "", workerBin, append([]string{"dlq", "purge"}, store...)...)
	if r.code != 0 || !strings.Contains(r.stdout, "purged 1") {
		t.Fatalf("dlq purge: %+v", r)
	}
	_ = fmt.Sprint
}
