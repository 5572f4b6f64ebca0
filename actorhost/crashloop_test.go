package actorhost_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/actorhost"
	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/kafka"
	chsqlite "github.com/postbox-dev/postbox/channel/sqlite"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/testenv"
	jsqlite "github.com/postbox-dev/postbox/journal/sqlite"
)

// crasherEnv makes the test binary act as a worker whose handler kills the
// process on a "die" message; crasherKafkaEnv ("brokers|topic") makes its
// mailbox a Kafka topic instead of the SQLite file in the directory.
const (
	crasherEnv      = "POSTBOX_TEST_CRASHER_DIR"
	crasherKafkaEnv = "POSTBOX_TEST_CRASHER_KAFKA"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crasherEnv); dir != "" {
		os.Exit(runCrasher(dir, os.Getenv(crasherKafkaEnv)))
	}
	os.Exit(m.Run())
}

// crasherMailbox is what the crasher consumes and dead-letters into.
type crasherMailbox struct {
	consumer channel.Consumer
	dlq      dlq.Store
	close    func()
}

func openCrasherMailbox(dir, kafkaSpec string) (crasherMailbox, error) {
	if kafkaSpec == "" {
		mb, err := chsqlite.Open(filepath.Join(dir, "postbox.db"), chsqlite.Options{Partitions: 1})
		if err != nil {
			return crasherMailbox{}, err
		}
		c := mb.Consumer(chsqlite.ConsumerOptions{LeaseTTL: 300 * time.Millisecond, PollInterval: time.Millisecond})
		return crasherMailbox{consumer: c, dlq: mb.DLQ(), close: func() { mb.Close() }}, nil
	}
	brokers, topic, _ := strings.Cut(kafkaSpec, "|")
	opts := crasherKafkaOptions()
	c, err := kafka.OpenConsumer(strings.Split(brokers, ","), topic, opts)
	if err != nil {
		return crasherMailbox{}, err
	}
	d, err := kafka.OpenDLQ(strings.Split(brokers, ","), topic, opts)
	if err != nil {
		c.Close()
		return crasherMailbox{}, err
	}
	return crasherMailbox{consumer: c, dlq: d, close: func() { c.Close(); d.Close() }}, nil
}

// crasherKafkaOptions keep the wait for a killed member short: the broker
// holds its partition until its session times out.
func crasherKafkaOptions() kafka.Options {
	return kafka.Options{Group: "crasher", SessionTimeout: 6 * time.Second, CommitInterval: 50 * time.Millisecond,
		FetchMaxWait: 50 * time.Millisecond}
}

// runCrasher runs a host until the other messages are done and "die" is
// dead-lettered (exit 0), unless "die" kills it first (exit 3).
func runCrasher(dir, kafkaSpec string) int {
	ctx := context.Background()
	mb, err := openCrasherMailbox(dir, kafkaSpec)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer mb.close()
	j, err := jsqlite.Open(filepath.Join(dir, "postbox.db"), jsqlite.Options{})
	if err != nil {
		return 1
	}
	reg := actorhost.NewRegistry()
	actorhost.Register(reg, "victim", func(ctx *actorhost.Context, s *struct{ N int }, m actorhost.Message) error {
		if string(m.Payload) == "die" {
			os.Exit(3) // as a segfault or an OOM kill would
		}
		s.N++
		return nil
	})
	h, err := actorhost.New(actorhost.Config{
		Registry: reg, Journal: j, DeadLetters: mb.dlq, MaxAttempts: 3, Consumer: mb.consumer,
	})
	if err != nil {
		return 1
	}
	h.Start(ctx)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		envs, _ := mb.dlq.List(ctx)
		if len(envs) == 1 && h.Stats().Processed+h.Stats().Deduplicated >= 1 {
			h.Stop(ctx)
			return 0
		}
		time.Sleep(5 * time.Millisecond)
	}
	return 1
}

// A message that kills the process on every attempt still reaches the
// DLQ: on SQLite, which counts deliveries, and on Kafka, which cannot, so
// the host tells first deliveries apart by the partition's horizon.
func TestMessageThatKillsTheProcessReachesTheDLQ(t *testing.T) {
	t.Parallel()
	victim := channel.Address{Type: "victim", ID: "1"}
	msgs := []channel.Message{
		{ID: "die", Address: victim, Payload: []byte("die")},
		{ID: "live", Address: victim, Payload: []byte("live")},
	}
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		mb, err := chsqlite.Open(filepath.Join(dir, "postbox.db"), chsqlite.Options{Partitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer mb.Close()
		if err := mb.Publisher().Publish(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		crashLoop(t, dir, "", mb.DLQ())
	})
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		brokers := testenv.Kafka(t)
		topic := fmt.Sprintf("postbox-test.crashloop.%d", time.Now().UnixNano())
		ctx := context.Background()
		if err := kafka.EnsureTopics(ctx, brokers, topic, 1, 1); err != nil {
			t.Fatal(err)
		}
		pub, err := kafka.OpenPublisher(brokers, topic, kafka.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		if err := pub.Publish(ctx, msgs...); err != nil {
			t.Fatal(err)
		}
		d, err := kafka.OpenDLQ(brokers, topic, crasherKafkaOptions())
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		crashLoop(t, t.TempDir(), strings.Join(brokers, ",")+"|"+topic, d)
	})
}

// crashLoop runs crasher processes until one ends on its own, and checks
// that "die" was dead-lettered after max attempts.
func crashLoop(t *testing.T, dir, kafkaSpec string, store dlq.Store) {
	deaths := 0
	for run := 0; ; run++ {
		if run == 10 {
			t.Fatalf("still crash-looping after %d runs", run)
		}
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crasherEnv+"="+dir, crasherKafkaEnv+"="+kafkaSpec)
		began := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("run %d: %v after %s", run, cmd.ProcessState, time.Since(began))
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 3 {
			deaths++
			continue
		}
		if err != nil {
			t.Fatalf("crasher run %d: %v\n%s", run, err, out)
		}
		break
	}
	envs, err := store.List(context.Background())
	if err != nil || len(envs) != 1 {
		t.Fatalf("dlq = %+v, %v", envs, err)
	}
	e := envs[0]
	if e.MessageID != "die" || e.Attempts != 3 || e.Reason != "attempts exhausted" {
		t.Errorf("envelope: id %s attempts %d reason %q", e.MessageID, e.Attempts, e.Reason)
	}
	// The first crash cannot be counted (a first delivery is not pre-marked);
	// every later one is. A redelivery without a crash (a lease or group
	// membership lost on a loaded machine) counts as well, so it can take
	// fewer deaths, never more.
	if deaths < 1 || deaths > 4 {
		t.Errorf("the process died %d times, want 1 to max attempts + 1 = 4", deaths)
	} else if deaths < 4 {
		t.Logf("the process died %d times: a delivery was repeated without a crash", deaths)
	}
}
