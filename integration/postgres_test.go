package integration

import (
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/postbox-dev/postbox/internal/testenv"
	"github.com/postbox-dev/postbox/internal/workload"
)

// PostgreSQL, holding the journal behind a SQLite mailbox, is restarted
// (fast shutdown, then started on the same data directory) while two
// workers are busy. The workers must wait, retry and continue on their own:
// every counter exact at the end, with messages published before and after
// the restart, and no worker exiting.
//
// Not parallel: other tests use the same server.
func TestPostgresRestartWorkersContinue(t *testing.T) {
	dsn := testenv.Postgres(t)
	svc := restartable(t, "postgres", postgresHostPort(t, dsn))
	journalURL := postgresJournal(t)
	restartUnderLoad(t, restartScenario{
		stores: stores{mailbox: "sqlite:" + filepath.Join(t.TempDir(), "mailbox.db"), journal: journalURL, backend: "sqlite"},
		server: svc, down: 3 * time.Second,
		before: loadRun{spec: workload.Spec{Actors: 100, Count: 25000, Seed: 61, PoisonEvery: 250, FailEvery: 40}},
		after:  loadRun{spec: workload.Spec{Actors: 100, Count: 3000, Seed: 62, PoisonEvery: 250, FailEvery: 40}},
		extra:  []string{"--lease-ttl", "2s"},
	})
}

// postgresHostPort returns the HOST:PORT of a postgres:// URL.
func postgresHostPort(t *testing.T, dsn string) string {
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
