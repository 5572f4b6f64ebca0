package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/backend"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
)

// The orders binary, built once: the test runs it as a user would.
var ordersBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "orders-bin")
	if err != nil {
		panic(err)
	}
	ordersBin = filepath.Join(dir, "orders")
	if out, err := exec.Command("go", "build", "-o", ordersBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build orders: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The program's own types, run by worker.Main, on every backend: workers
// are SIGKILLed twice while carts and orders are published, some message
// IDs a second time later on. Every cart must hold exactly its items, in
// the order they were published; every order must be paid once (a payment
// made again only by a kill) and shipped; the poison message must be in
// the DLQ; and state, journal --until and dlq list must work on the types.
func TestOwnWorkerSurvivesKillsAndDuplicates(t *testing.T) {
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Run("sqlite", func(t *testing.T) {
		db := "sqlite:" + filepath.Join(t.TempDir(), "postbox.db")
		ordersScenario(t, db, db, "--lease-ttl", "1s")
	})
	t.Run("redis", func(t *testing.T) {
		addr := testenv.Redis(t)
		ordersScenario(t, "redis://"+addr+"/orders-"+suffix, "redis://"+addr+"/orders-j-"+suffix, "--lease-ttl", "1s")
	})
	t.Run("kafka-postgres", func(t *testing.T) {
		brokers := testenv.Kafka(t)
		dsn := testenv.Postgres(t)
		ordersScenario(t, "kafka://"+strings.Join(brokers, ",")+"/orders-"+suffix, dsn, "--session-timeout", "6s")
	})
}

func ordersScenario(t *testing.T, mailboxURL, journalURL string, extra ...string) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	mb, err := backend.OpenMailbox(ctx, mailboxURL, backend.MailboxOptions{CreateTopics: true, Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	// IDs of their own: a shared PostgreSQL journal outlives the test.
	run := strconv.FormatInt(time.Now().UnixNano(), 36)

	const carts, items, orders = 12, 25, 5
	var msgs []channel.Message
	want := map[string][]string{}
	for i := range items {
		for c := range carts {
			a := channel.Address{Type: "cart", ID: fmt.Sprintf("%s-%d", run, c)}
			item := fmt.Sprintf("item-%d", i)
			msgs = append(msgs, channel.Message{ID: fmt.Sprintf("%s-c%d-%d", run, c, i), Address: a, Payload: fmt.Appendf(nil, `{"add":%q}`, item)})
			want[a.String()] = append(want[a.String()], item)
		}
		if i < orders {
			a := channel.Address{Type: "order", ID: fmt.Sprintf("%s-%d", run, i)}
			msgs = append(msgs, channel.Message{ID: fmt.Sprintf("%s-o%d-pay", run, i), Address: a, Payload: fmt.Appendf(nil, `{"amount":%d}`, 100*(i+1))})
		}
		if i >= orders && i < 2*orders {
			a := channel.Address{Type: "order", ID: fmt.Sprintf("%s-%d", run, i-orders)}
			msgs = append(msgs, channel.Message{ID: fmt.Sprintf("%s-o%d-ship", run, i-orders), Address: a, Payload: []byte(`{"ship":true}`)})
		}
	}
	poison := channel.Message{ID: run + "-poison", Address: channel.Address{Type: "cart", ID: run + "-bad"}, Payload: []byte("not json")}
	msgs = append(msgs, poison)

	payLog := filepath.Join(dir, "payments.ndjson")
	start := func(name string) *exec.Cmd {
		args := append([]string{"run", "--mailbox", mailboxURL, "--journal", journalURL, "--partitions", "4",
			"--concurrency", "8", "--checkpoint-every", "5", "--backoff-initial", "10ms", "--backoff-max", "100ms",
			"--payments-log", payLog, "--log-level", "warn"}, extra...)
		cmd := exec.Command(ordersBin, args...)
		logf, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	publish := func(ms []channel.Message) {
		for k := 0; k < len(ms); k += 10 {
			if err := mb.Publisher.Publish(ctx, ms[k:min(k+10, len(ms))]...); err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Every 7th message again, later, with its ID.
	again := func(ms []channel.Message) []channel.Message {
		var dups []channel.Message
		for k := 0; k < len(ms); k += 7 {
			dups = append(dups, ms[k])
		}
		return dups
	}
	third := len(msgs) / 3
	const kills = 2
	w := start("worker-1")
	publish(msgs[:third])
	time.Sleep(300 * time.Millisecond)
	w.Process.Signal(syscall.SIGKILL)
	w.Wait()
	w = start("worker-2")
	publish(append(slices.Clone(msgs[third:2*third]), again(msgs[:third])...))
	time.Sleep(300 * time.Millisecond)
	w.Process.Signal(syscall.SIGKILL)
	w.Wait()
	w = start("worker-3")
	publish(append(slices.Clone(msgs[2*third:]), again(msgs[third:])...))

	// Replayed in this process through the same handlers.
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "cart", handleCart)
	actorhost.Register(reg, "order", (&payments{}).handleOrder)
	j, err := backend.OpenJournal(ctx, journalURL, backend.JournalOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	wrong := func() string {
		for addr, items := range want {
			a, _ := channel.ParseAddress(addr)
			r, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
			var got Cart
			if err == nil {
				err = json.Unmarshal(r.State, &got)
			}
			if err != nil || !slices.Equal(got.Items, items) {
				return fmt.Sprintf("%s holds %v (%v), want %v", addr, got.Items, err, items)
			}
		}
		for i := range orders {
			a := channel.Address{Type: "order", ID: fmt.Sprintf("%s-%d", run, i)}
			r, err := reg.Replay(ctx, j, a, actorhost.ReplayOptions{})
			var got Order
			if err == nil {
				err = json.Unmarshal(r.State, &got)
			}
			if err != nil || got.Status != "shipped" || got.Amount != int64(100*(i+1)) || got.PaymentID == "" {
				return fmt.Sprintf("%s is %+v (%v), want paid %d and shipped", a, got, err, 100*(i+1))
			}
		}
		return ""
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		why := wrong()
		envs, _ := mb.DLQ.List(ctx)
		if why == "" && len(envs) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "worker-3.log"))
			t.Fatalf("after the kills: %s; %d dead letters\nworker-3 log:\n%s", why, len(envs), log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	w.Process.Signal(syscall.SIGTERM)
	if err := w.Wait(); err != nil {
		t.Errorf("the last worker did not stop cleanly: %v", err)
	}
	if why := wrong(); why != "" {
		t.Fatalf("after the last worker stopped: %s", why)
	}

	// Payments: one per order, again only for a kill in between.
	f, err := os.Open(payLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	charged := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p struct{ Key, Order string }
		if json.Unmarshal(sc.Bytes(), &p) == nil {
			charged[p.Key]++
		}
	}
	for i := range orders {
		key := actorhost.EffectKey(fmt.Sprintf("%s-o%d-pay", run, i), 0)
		if n := charged[key]; n < 1 || n > 1+kills {
			t.Errorf("payment %s made %d times, want 1 to %d", key, n, 1+kills)
		}
	}
	if len(charged) != orders {
		t.Errorf("%d payment keys, want %d: %v", len(charged), orders, charged)
	}

	// The tools know the program's own types.
	cart0 := channel.Address{Type: "cart", ID: run + "-0"}
	out := cli(t, "state", cart0.String(), "--journal", journalURL)
	var st Cart
	if err := json.Unmarshal([]byte(out), &st); err != nil || !slices.Equal(st.Items, want[cart0.String()]) {
		t.Errorf("orders state %s: %s (%v)", cart0, out, err)
	}
	out = cli(t, "journal", cart0.String(), "--until", "3", "--journal", journalURL)
	var at struct {
		Seq   int64 `json:"seq"`
		State Cart  `json:"state"`
	}
	if err := json.Unmarshal([]byte(out), &at); err != nil || at.Seq != 3 || len(at.State.Items) > 3 ||
		!slices.Equal(at.State.Items, want[cart0.String()][:len(at.State.Items)]) {
		t.Errorf("orders journal %s --until 3: %s (%v); want a prefix of its items", cart0, out, err)
	}
	out = cli(t, "dlq", "list", "--mailbox", mailboxURL)
	if !strings.Contains(out, poison.Address.String()) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("orders dlq list: %q, want the one poison message of %s", out, poison.Address)
	}
}

// cli runs the orders binary and returns its stdout; it must exit 0.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(ordersBin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("orders %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}
