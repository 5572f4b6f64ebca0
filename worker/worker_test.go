package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/worker"
)

// greeter is a user's actor type of its own, with no side effect.
type greeter struct {
	Greeted []string `json:"greeted"`
}

func greetings(t *testing.T) *actorhost.Registry {
	t.Helper()
	reg := actorhost.NewRegistry()
	err := actorhost.Register(reg, "greeter", func(c *actorhost.Context, s *greeter, m actorhost.Message) error {
		s.Greeted = append(s.Greeted, string(m.Payload))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestBadConfigurationSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		reg  *actorhost.Registry
		args []string
		want string
	}{
		{"no registry", nil, []string{"run"}, "no registry: pass actorhost.NewRegistry()"},
		{"empty registry", actorhost.NewRegistry(), []string{"run"}, "register yours with actorhost.Register"},
		{"unknown command", greetings(t), []string{"serve"}, `unknown command "serve"; want run, state, journal, dlq`},
		{"unknown scheme", greetings(t), []string{"run", "--mailbox", "bogus://x"}, `--mailbox "bogus://x": unknown form`},
		{"missing journal", greetings(t), []string{"state", "greeter/1", "--journal", "sqlite:" + filepath.Join(dir, "none.db")}, "does not exist"},
		{"bad flag", greetings(t), []string{"run", "--concurrency", "0"}, "--concurrency 0: must be at least 1"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := worker.Main(c.reg, worker.WithArgs(c.args...), worker.WithOutput(&stdout, &stderr))
		if code != worker.ExitUsage || !strings.Contains(stderr.String(), c.want) || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("%s: status %d, stderr %q; want status 2 and one line saying %q", c.name, code, stderr.String(), c.want)
		}
	}
	reg := greetings(t)
	err := actorhost.Register(reg, "greeter", func(*actorhost.Context, *greeter, actorhost.Message) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "register each type once") {
		t.Errorf("a type registered twice: %v", err)
	}
	if err := worker.Run(context.Background(), nil, worker.Config{}); err == nil || !strings.Contains(err.Error(), "no registry") {
		t.Errorf("Run without a registry: %v", err)
	}
}

// Run runs a user's own type, serves the admin endpoints with the user's
// routes, applies the host adjustments, and stops when ctx ends.
func TestRunServesAUsersActor(t *testing.T) {
	dir := t.TempDir()
	db := "sqlite:" + filepath.Join(dir, "postbox.db")
	ctx := context.Background()
	mb, err := backend.OpenMailbox(ctx, db, backend.MailboxOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	addr := testenv.FreeAddr(t)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- worker.Run(runCtx, greetings(t), worker.Config{MailboxURL: db, JournalURL: db, Admin: addr},
			worker.WithAdminRoute("GET /hello", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hi") })),
			worker.WithHostConfig(func(c *actorhost.Config) { c.CheckpointEvery = 1 }))
	}()
	for i, name := range []string{"ada", "grace", "edsger"} {
		msg := channel.Message{ID: fmt.Sprint("g", i), Address: channel.Address{Type: "greeter", ID: "1"}, Payload: []byte(name)}
		if err := mb.Publisher.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	var got greeter
	waitfor.Succeeds(t, 20*time.Second, 20*time.Millisecond, func() error {
		code, body := testenv.Get("http://" + addr + "/actors/greeter/1")
		if code == http.StatusOK && json.Unmarshal([]byte(body), &got) == nil && len(got.Greeted) == 3 {
			return nil
		}
		return fmt.Errorf("GET /actors/greeter/1: %d %s; want all three greeted", code, body)
	})
	if strings.Join(got.Greeted, ",") != "ada,grace,edsger" {
		t.Errorf("greeted %v, in publish order", got.Greeted)
	}
	for path, want := range map[string]int{"/hello": 200, "/healthz": 200, "/readyz": 200, "/metrics": 200, "/actors/nobody/1": 404} {
		if code, body := testenv.Get("http://" + addr + path); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, body, want)
		}
	}
	if _, body := testenv.Get("http://" + addr + "/metrics"); !strings.Contains(body, "postbox_messages_processed_total 3") {
		t.Errorf("/metrics does not count 3 processed messages")
	}
	// A lone worker holds every partition of the mailbox (8 by default).
	var claims []actorhost.PartitionClaim
	waitfor.Until(t, 10*time.Second, "GET /partitions to list the 8 partitions", func() bool {
		code, body := testenv.Get("http://" + addr + "/partitions")
		return code == http.StatusOK && json.Unmarshal([]byte(body), &claims) == nil && len(claims) == 8
	})
	for i, c := range claims {
		if c.Partition != int32(i) || c.Epoch < 1 {
			t.Errorf("GET /partitions: claim %d is %+v, want partition %d under an epoch", i, c, i)
		}
	}
	stop()
	if err := waitfor.Receive(t, 30*time.Second, "Run to return after its ctx ended", done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	j, err := backend.OpenJournal(ctx, db, backend.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if cp, ok, err := j.LoadCheckpoint(ctx, "greeter/1", journal.MaxSeq); err != nil || !ok || cp.Seq == 0 {
		t.Errorf("no checkpoint after 3 messages with CheckpointEvery adjusted to 1: %+v %v %v", cp, ok, err)
	}
	// The state tool knows the user's type.
	var out, errOut bytes.Buffer
	if code := worker.Main(greetings(t), worker.WithArgs("state", "greeter/1", "--journal", db), worker.WithOutput(&out, &errOut)); code != 0 ||
		!strings.Contains(out.String(), `"edsger"`) {
		t.Errorf("state greeter/1: %d %s %s", code, out.String(), errOut.String())
	}
}
