package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/waitfor"
	"github.com/postbox-dev/postbox/internal/workload"
	"github.com/postbox-dev/postbox/journal"
)

// TestKafkaClusterUnderFaults runs the production pairing in containers on
// a network of the test's own: three KRaft brokers (each broker and
// controller), the mailbox topics at replication 3 with min.insync.replicas
// 2, a PostgreSQL journal, and three workers under a steady load with
// poison, failing and duplicate messages. During the load:
//   - a broker is killed (docker kill) and started again;
//   - worker-3 is cut off from the brokers and the journal (docker network
//     disconnect) for longer than the session timeout, then reconnected.
//     Its partitions must move to the others within the session timeout
//     (and a rebalance); while cut off it must apply nothing, and it must
//     end every claim it held before it takes new ones;
//   - PostgreSQL is paused (docker pause) for longer than the session
//     timeout, then resumed.
//
// Then every counter's value and applied count must be exact, each actor's
// outcomes in the journal must be its messages in publish order (one each),
// the DLQ must hold exactly the poison messages, and side effects that ran
// twice stay within faults × concurrency.
func TestKafkaClusterUnderFaults(t *testing.T) {
	requireDocker(t)
	const (
		session     = 10 * time.Second
		cutOff      = session + 8*time.Second
		concurrency = 8
		faults      = 3
	)
	begin := time.Now()
	elapsed := func() string { return time.Since(begin).Round(100 * time.Millisecond).String() }
	dir := testDir(t)
	name := fmt.Sprintf("postboxtest%d-", os.Getpid())
	net := name + "net"
	docker(t, time.Minute, "docker", "network", "create", net)
	t.Cleanup(func() {
		if _, err := tryDocker(time.Minute, "docker", "network", "rm", net); err != nil {
			t.Error(err)
		}
	})
	// start runs a container on the network under its name (and alias), and
	// removes it when the test ends.
	start := func(alias string, args ...string) string {
		t.Helper()
		id := strings.TrimSpace(docker(t, time.Minute, "docker",
			append([]string{"run", "-d", "--name", name + alias, "--network", net, "--network-alias", alias}, args...)...))
		t.Cleanup(func() {
			if t.Failed() {
				logs := containerLogs(id, "--tail", "20")
				t.Logf("--- %s, last 20 log lines:\n%s", alias, logs)
			}
			if _, err := tryDocker(time.Minute, "docker", "rm", "-f", "-v", id); err != nil {
				t.Error(err)
			}
		})
		return id
	}

	// PostgreSQL, published on loopback so that the test reads the journal.
	pg := start("postgres", "-p", "127.0.0.1::5432",
		"-e", "POSTGRES_USER=postbox", "-e", "POSTGRES_PASSWORD=postbox", "-e", "POSTGRES_DB=postbox",
		testenv.PostgresImage)

	// Three brokers. Workers reach them on the network; the test and the
	// producer through a port on 127.0.0.1 each, advertised as such.
	var brokerIDs, hostAddrs []string
	for n := 1; n <= 3; n++ {
		port := strings.TrimPrefix(testenv.FreeAddr(t), "127.0.0.1:")
		alias := fmt.Sprintf("kafka-%d", n)
		brokerIDs = append(brokerIDs, start(alias, "-p", "127.0.0.1:"+port+":"+port,
			"-e", "KAFKA_NODE_ID="+strconv.Itoa(n),
			"-e", "KAFKA_PROCESS_ROLES=broker,controller",
			"-e", "KAFKA_CONTROLLER_QUORUM_VOTERS=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093",
			"-e", "KAFKA_LISTENERS=INTERNAL://:9092,CONTROLLER://:9093,EXTERNAL://:"+port,
			"-e", "KAFKA_ADVERTISED_LISTENERS=INTERNAL://"+alias+":9092,EXTERNAL://127.0.0.1:"+port,
			"-e", "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP=INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT,EXTERNAL:PLAINTEXT",
			"-e", "KAFKA_CONTROLLER_LISTENER_NAMES=CONTROLLER",
			"-e", "KAFKA_INTER_BROKER_LISTENER_NAME=INTERNAL",
			"-e", "CLUSTER_ID=p0stb0xC1usterTest0000",
			"-e", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR=3",
			"-e", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR=3",
			"-e", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR=2",
			"-e", "KAFKA_DEFAULT_REPLICATION_FACTOR=3",
			"-e", "KAFKA_MIN_INSYNC_REPLICAS=2",
			"-e", "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS=0",
			"-e", "KAFKA_AUTO_CREATE_TOPICS_ENABLE=false",
			"-e", "KAFKA_HEAP_OPTS=-Xms128m -Xmx384m",
			testenv.KafkaImage))
		hostAddrs = append(hostAddrs, "127.0.0.1:"+port)
	}
	brokersUp := func(ids ...string) bool {
		for _, id := range ids {
			if !strings.Contains(containerLogs(id), "Kafka Server started") {
				return false
			}
		}
		return true
	}
	waitfor.Every(t, 3*time.Minute, time.Second, "three brokers started", func() bool { return brokersUp(brokerIDs...) })

	// The topics, replicated three times, with two in sync for every write.
	topics := func(args ...string) string {
		t.Helper()
		return dockerUntil(t, 2*time.Minute, append([]string{"exec", brokerIDs[0],
			"/opt/kafka/bin/kafka-topics.sh", "--bootstrap-server", "kafka-1:9092"}, args...)...)
	}
	for _, topic := range []string{"orders", "orders.dlq"} {
		// A broker logs that it started before the controller counts it:
		// replication 3 is refused until all three have registered.
		topics("--create", "--if-not-exists", "--topic", topic, "--partitions", "12",
			"--replication-factor", "3", "--config", "min.insync.replicas=2")
	}
	desc := topics("--describe", "--topic", "orders")
	if !strings.Contains(desc, "ReplicationFactor: 3") || !strings.Contains(desc, "min.insync.replicas=2") {
		t.Fatalf("topic orders is not replicated as asked:\n%s", desc)
	}
	t.Logf("%s: three brokers, topics at replication 3 and min.insync.replicas 2", elapsed())

	// Three workers: the repository's worker, built static, in the runtime
	// image, each writing its side effects to a file of its own in dir.
	bin := staticWorker(t)
	workers := map[string]string{}
	for _, w := range []string{"worker-1", "worker-2", "worker-3"} {
		workers[w] = start(w, "-v", bin+":/usr/local/bin/worker:ro", "-v", dir+":/sink",
			testenv.RuntimeImage,
			"worker", "run", "--mailbox", "kafka://kafka-1:9092,kafka-2:9092,kafka-3:9092/orders",
			"--journal", "postgres://postbox:postbox@postgres:5432/postbox?sslmode=disable",
			"--admin", ":9090", "--counter-sink", "/sink/"+w+".ndjson", "--concurrency", strconv.Itoa(concurrency),
			"--checkpoint-every", "25", "--backoff-initial", "5ms", "--backoff-max", "50ms", "--log-level", "info",
			"--session-timeout", session.String(), "--replication", "3", "--partitions", "12")
	}
	claimed := func(ws ...string) (sum int, each []int) {
		for _, w := range ws {
			v, _ := containerMetric(workers[w], "postbox_partitions_claimed")
			sum += int(v)
			each = append(each, int(v))
		}
		return sum, each
	}
	waitfor.Every(t, 3*time.Minute, 500*time.Millisecond, "the 12 partitions spread over three workers", func() bool {
		sum, each := claimed("worker-1", "worker-2", "worker-3")
		return sum == 12 && each[0] > 0 && each[1] > 0 && each[2] > 0
	})
	_, each := claimed("worker-1", "worker-2", "worker-3")
	t.Logf("%s: three workers hold %v partitions", elapsed(), each)

	spec := workload.Spec{Actors: 100, Count: 24000, Seed: 51, PoisonEvery: 300, FailEvery: 50, DuplicateEvery: 13}
	l := newCheckedLoad(spec, 300)
	mailbox := "kafka://" + strings.Join(hostAddrs, ",") + "/orders"
	load := l.start(t, dir, mailbox)
	processed := func() float64 {
		var sum float64
		for _, id := range workers {
			v, _ := containerMetric(id, "postbox_messages_processed_total")
			sum += v
		}
		return sum
	}

	// A broker dies and comes back.
	waitfor.Every(t, 2*time.Minute, 500*time.Millisecond, "1,500 messages processed", func() bool { return processed() >= 1500 })
	docker(t, time.Minute, "docker", "kill", brokerIDs[1])
	t.Logf("%s: docker kill kafka-2", elapsed())
	time.Sleep(10 * time.Second)
	restarted := time.Now().UTC().Format(time.RFC3339Nano)
	docker(t, time.Minute, "docker", "start", brokerIDs[1])
	waitfor.Every(t, 2*time.Minute, time.Second, "kafka-2 started again", func() bool {
		return strings.Contains(containerLogs(brokerIDs[1], "--since", restarted), "Kafka Server started")
	})
	t.Logf("%s: kafka-2 back", elapsed())

	// worker-3 is cut off from the cluster and the journal.
	w3 := workers["worker-3"]
	held, _ := claimed("worker-3")
	logsAtCut := len(containerLog(w3))
	docker(t, time.Minute, "docker", "network", "disconnect", net, w3)
	cut := time.Now()
	// Counted once the cut is made: what it finished before is not its fault.
	before, _ := containerMetric(w3, "postbox_messages_processed_total")
	t.Logf("%s: worker-3 (holding %d partitions, %v processed) cut off", elapsed(), held, before)
	var moved time.Duration
	waitfor.Every(t, session+30*time.Second, 200*time.Millisecond, "worker-3's partitions to move to worker-1 and worker-2", func() bool {
		sum, _ := claimed("worker-1", "worker-2")
		moved = time.Since(cut)
		return sum == 12
	})
	t.Logf("%s: the partitions moved to worker-1 and worker-2 %s after the cut (session timeout %s)", elapsed(), moved.Round(100*time.Millisecond), session)
	if limit := session + 10*time.Second; moved > limit {
		t.Errorf("the partitions took %s to move: more than the session timeout and a rebalance (%s)", moved, limit)
	}
	time.Sleep(time.Until(cut.Add(cutOff)))
	after, _ := containerMetric(w3, "postbox_messages_processed_total")
	if after != before {
		t.Errorf("cut off from the journal, worker-3 processed %v messages", after-before)
	}
	docker(t, time.Minute, "docker", "network", "connect", "--alias", "worker-3", net, w3)
	t.Logf("%s: worker-3 reconnected after %s", elapsed(), time.Since(cut).Round(100*time.Millisecond))
	// Since the cut, it must have ended every claim it held (on its own
	// once its session ran out, or when told on its return) before it
	// claims anything.
	waitfor.Every(t, time.Minute, 500*time.Millisecond, "worker-3 to give up the partitions it held", func() bool {
		ended := map[string]bool{}
		for _, e := range containerLog(w3)[logsAtCut:] {
			switch e.Msg {
			case "partition lost: abandoning its in-flight work", "partition released", "partition fenced by a newer owner: acking nothing more from it":
				ended[partitionNumber(e.Partition)] = true
			case "partition claimed":
				if len(ended) < held {
					t.Fatalf("worker-3 claimed partition %s after the cut before it gave up all %d it held (ended: %v)", e.Partition, held, ended)
				}
			}
		}
		return len(ended) >= held
	})
	t.Logf("%s: worker-3 gave up its %d old partitions", elapsed(), held)

	// The journal stops answering for longer than the session timeout.
	// The cgroup freezer refuses ("unable to freeze") when a task does not
	// stop in time, as PostgreSQL in the middle of an fsync may not.
	dockerUntil(t, time.Minute, "pause", pg)
	t.Logf("%s: docker pause postgres", elapsed())
	time.Sleep(cutOff)
	docker(t, time.Minute, "docker", "unpause", pg)
	t.Logf("%s: postgres resumed", elapsed())

	l.finish(t, dir, load, 5*time.Minute)
	t.Logf("%s: %d messages published (%d poison, %d duplicates)", elapsed(), spec.Total(), len(l.want.poison), l.want.dups)
	pgAddr := lastLine(docker(t, time.Minute, "docker", "port", pg, "5432/tcp")) // 127.0.0.1:port
	j := openJournal(t, "postgres://postbox:postbox@"+pgAddr+"/postbox?sslmode=disable")
	reg := actorRegistry(t)
	waitfor.Every(t, 4*time.Minute, 2*time.Second, "every counter exact", func() bool {
		return diffStates(context.Background(), reg, j, l.want.states).wrong == 0
	})
	t.Logf("%s: every counter exact", elapsed())
	checkPublishOrder(t, j, spec)
	l.want.checkDeadLetters(t, mailbox)

	var all []byte
	for w := range workers {
		b, err := os.ReadFile(filepath.Join(dir, w+".ndjson"))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	sink := filepath.Join(dir, "sink.ndjson")
	if err := os.WriteFile(sink, all, 0o644); err != nil {
		t.Fatal(err)
	}
	extra := l.want.checkSink(t, sink, faults*concurrency)
	t.Logf("%s: %d valid messages applied once each in publish order, %d poison dead-lettered, %d side effects ran twice (bound %d)",
		elapsed(), len(l.want.valid), len(l.want.poison), extra, faults*concurrency)
}

// checkPublishOrder checks that each actor's journal holds one outcome per
// message of the workload, in the order the messages were first published.
func checkPublishOrder(t *testing.T, j journal.Journal, spec workload.Spec) {
	t.Helper()
	want := map[string][]string{}
	seen := map[string]bool{}
	_, _ = spec.Generate(func(m channel.Message) error {
		if !seen[m.ID] {
			seen[m.ID] = true
			want[m.Address.String()] = append(want[m.Address.String()], m.ID)
		}
		return nil
	})
	ctx := context.Background()
	wrong := 0
	for _, addr := range sortedKeys(want) {
		var got []string
		err := j.Read(ctx, addr, 1, func(e journal.Entry) error {
			if e.Kind.IsOutcome() {
				got = append(got, e.MsgID)
			}
			return nil
		})
		if err == nil && strings.Join(got, " ") == strings.Join(want[addr], " ") {
			continue
		}
		if wrong++; wrong <= 3 {
			t.Errorf("%s: outcomes %v (err %v), want one per message in publish order: %v", addr, got, err, want[addr])
		}
	}
	if wrong > 3 {
		t.Errorf("... %d actors in all have outcomes out of publish order", wrong)
	}
}

// staticWorker builds the worker binary without cgo, so that it runs in
// any Linux image; once per test binary.
var staticWorker = func() func(t *testing.T) string {
	var once sync.Once
	var path string
	var err error
	return func(t *testing.T) string {
		t.Helper()
		once.Do(func() {
			path = filepath.Join(filepath.Dir(workerBin), "worker-static")
			cmd := exec.Command("go", "build", "-o", path, "../cmd/worker")
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, e := cmd.CombinedOutput(); e != nil {
				err = fmt.Errorf("build a static worker: %v\n%s", e, out)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		return path
	}
}()

// containerMetric scrapes one unlabelled metric from a worker container's
// admin endpoint (on :9090), from inside: it answers whatever the
// container's networks.
func containerMetric(id, name string) (float64, bool) {
	out, err := tryDocker(30*time.Second, "docker", "exec", id, "wget", "-q", "-O", "-", "http://127.0.0.1:9090/metrics")
	if err != nil {
		return 0, false
	}
	return sample(out, name)
}

// partitionNumber reads the partition of a log line: a number in the
// consumer's lines, a journal key ("kafka:orders/3") in the fence line.
func partitionNumber(raw []byte) string {
	p := strings.Trim(string(raw), `"`)
	return p[strings.LastIndex(p, "/")+1:]
}

// containerLog returns a worker container's JSON log entries.
func containerLog(id string) []logEntry {
	return parseLogEntries(strings.NewReader(containerLogs(id)))
}
