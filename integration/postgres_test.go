package integration

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/workload"
)

// Three workers share a Kafka mailbox and a PostgreSQL journal while a
// load with poison messages and messages that fail once is published; one
// of them is SIGKILLed mid-run and replaced (its partitions move when its
// group session times out). Every counter must be exact, the DLQ topic
// must hold exactly the poison messages, every valid message must have made
// its side effect, effects may run twice only for messages in flight at
// the kill, and the group must have committed everything.
func TestKafkaPostgresScaleAndCrash(t *testing.T) {
	t.Parallel()
	brokers := kafkaBrokers(t)
	journalURL := svcPostgresJournal(t, testenv.Postgres(t))
	topic := svcName(t)
	seeds := strings.Split(brokers, ",")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...)); err == nil {
			kadm.NewClient(cl).DeleteTopics(ctx, topic, topic+".dlq")
			cl.Close()
		}
	})
	svcScaleAndCrash(t, svcCrash{
		mailbox: "kafka://" + brokers + "/" + topic, journal: journalURL, backend: "kafka", partitions: 12,
		workers: 3, kills: 1, concurrency: 16,
		load: svcLoad{spec: workload.Spec{Actors: 100, Count: 12000, Seed: 51, PoisonEvery: 250, FailEvery: 40}, rate: 1000},
		drained: func(ctx context.Context) error {
			cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
			if err != nil {
				return err
			}
			defer cl.Close()
			lags, err := kadm.NewClient(cl).Lag(ctx, "postbox."+topic)
			if err != nil {
				return err
			}
			l := lags["postbox."+topic]
			if l.Error() != nil {
				return l.Error()
			}
			if total := l.Lag.Total(); total != 0 {
				return fmt.Errorf("group postbox.%s lags %d records behind", topic, total)
			}
			return nil
		},
	})
}

// PostgreSQL, holding the journal behind a SQLite mailbox, is restarted
// (fast shutdown, then started on the same data directory) while two
// workers are busy. The workers must wait, retry and continue on their own:
// every counter exact at the end, with messages published before and after
// the restart, and no worker exiting.
//
// Not parallel: other tests use the same server.
func TestPostgresRestartWorkersContinue(t *testing.T) {
	dsn := testenv.Postgres(t)
	svc := svcRestartable(t, "postgres", svcPostgresHostPort(t, dsn))
	journalURL := svcPostgresJournal(t, dsn)
	svcRestartUnderLoad(t, svcRestart{
		mailbox: "sqlite:" + filepath.Join(t.TempDir(), "mailbox.db"), journal: journalURL, backend: "sqlite",
		server: svc, down: 3 * time.Second,
		before: svcLoad{spec: workload.Spec{Actors: 100, Count: 25000, Seed: 61, PoisonEvery: 250, FailEvery: 40}},
		after:  svcLoad{spec: workload.Spec{Actors: 100, Count: 3000, Seed: 62, PoisonEvery: 250, FailEvery: 40}},
		extra:  []string{"--lease-ttl", "2s"},
	})
}

// svcPostgresHostPort returns the HOST:PORT of a postgres:// URL.
func svcPostgresHostPort(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil || u.Hostname() == "" {
		t.Fatalf("POSTGRES_DSN %q: want a postgres://USER@HOST:PORT/DB URL", dsn)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "5432")
	}
	return u.Host
}
