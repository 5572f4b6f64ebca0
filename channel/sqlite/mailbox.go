// Package sqlite is a channel backend that keeps a mailbox in a SQLite file.
//
// One file holds one mailbox: its messages, the partition leases of its
// consumers and its dead letters, in tables prefixed "mailbox_"; it may
// hold other tables too (a journal, say). Several processes on one host may
// open it: publishers append, and consumers share the partitions through
// leases with epochs. Writes are batched: Publish stores its messages in
// one transaction and a consumer serves all its partitions in one
// transaction per poll, so one fsync serves many messages. Writers queue on
// an advisory lock on "<file>-postbox-lock" rather than polling SQLite's.
//
// What it does not give: the file must be on a local disk of the host that
// runs every process using it (SQLite's locking does not work over network
// file systems), and one writer at a time per file bounds throughput. With
// SyncNormal, the last commits may be lost on power loss. Acks are
// buffered until the next poll or Release, so a crash redelivers the
// messages acked just before it.
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/lease"
	"github.com/postbox-dev/postbox/dlq"
	"github.com/postbox-dev/postbox/internal/sqlitedb"
)

// Backend is the name a consumer reports as its Backend and dead letters carry.
const Backend = "sqlite"

// schema creates the mailbox tables. Offsets are AUTOINCREMENT row IDs:
// they never go back, even after the newest messages are deleted. Columns
// and indexes of earlier versions (deliveries, visible_at,
// mailbox_messages_delayed) are unused and left alone.
const schema = `
CREATE TABLE IF NOT EXISTS mailbox_meta (
	key   TEXT PRIMARY KEY,
	value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_messages (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	partition  INTEGER NOT NULL,
	msg_id     TEXT    NOT NULL,
	address    TEXT    NOT NULL,
	payload    BLOB    NOT NULL,
	headers    BLOB,
	claim      INTEGER,
	created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_messages_partition_id ON mailbox_messages (partition, id);
CREATE TABLE IF NOT EXISTS mailbox_leases (
	partition  INTEGER PRIMARY KEY,
	owner      TEXT    NOT NULL DEFAULT '',
	epoch      INTEGER NOT NULL DEFAULT 0,
	expires_at INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mailbox_consumers (
	owner      TEXT PRIMARY KEY,
	heartbeat  INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS mailbox_dead_letters (
	seq              INTEGER PRIMARY KEY AUTOINCREMENT,
	id               TEXT    NOT NULL UNIQUE,
	message_id       TEXT    NOT NULL UNIQUE,
	address          TEXT    NOT NULL,
	source_partition INTEGER NOT NULL,
	source_offset    INTEGER NOT NULL,
	dead_lettered_at INTEGER NOT NULL,
	envelope         BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS mailbox_dead_letters_age ON mailbox_dead_letters (dead_lettered_at, seq);
`

// schemaVersion is stored in mailbox_meta for a later layout to tell.
const schemaVersion = "1"

// Mailbox is one mailbox in a SQLite file, safe for concurrent use. Its
// publishers, consumers and dead-letter store share one connection pool.
type Mailbox struct {
	db         *sql.DB
	name       string // absolute path, reported as Message.Mailbox
	partitions int
	syncFull   bool // commits fsync; see writeBookkeeping

	writer   *writerLock
	dbClosed bool // guarded by writer

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // prepared once, reused by every transaction

	runs lease.Runs // the consumers' runs: Close stops them
}

// Open opens the mailbox in the SQLite file at path, creating the file and
// its tables when needed. Close the Mailbox when done.
func Open(path string, opts Options) (*Mailbox, error) {
	opts = opts.WithDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if path == "" {
		return nil, errors.New("sqlite: empty path: name the mailbox file, such as postbox.db")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: resolve %s: %w", path, err)
	}
	db, err := sqlitedb.Open(path, sqlitedb.Options{Synchronous: opts.Synchronous})
	if err != nil {
		return nil, err
	}
	writer, err := acquireWriterLock(abs)
	if err != nil {
		db.Close()
		return nil, err
	}
	m := &Mailbox{db: db, name: abs, writer: writer, stmts: make(map[string]*sql.Stmt),
		syncFull: strings.EqualFold(string(opts.Synchronous), string(SyncFull))}
	if m.partitions, err = m.init(opts.Partitions); err != nil {
		db.Close()
		writer.release()
		return nil, err
	}
	return m, nil
}

// init creates the tables and settles the partition count (see
// lease.StoredPartitions).
func (m *Mailbox) init(want int) (int, error) {
	var n int
	err := m.write(context.Background(), func(tx *sql.Tx) error {
		if _, err := tx.Exec(schema); err != nil {
			return fmt.Errorf("create tables: %w", err)
		}
		stored := strconv.Itoa(cmp.Or(want, lease.DefaultPartitions))
		// A new mailbox stores its count; an existing one keeps its own.
		if _, err := tx.Exec(`INSERT OR IGNORE INTO mailbox_meta (key, value) VALUES ('partitions', ?), ('version', ?)`,
			stored, schemaVersion); err != nil {
			return fmt.Errorf("store partition count: %w", err)
		}
		if err := tx.QueryRow(`SELECT value FROM mailbox_meta WHERE key = 'partitions'`).Scan(&stored); err != nil {
			return fmt.Errorf("read partition count: %w", err)
		}
		var err error
		if n, err = lease.StoredPartitions(stored, want); err != nil {
			return err
		}
		// One lease row per partition, kept forever, so epochs only grow.
		if _, err := tx.Exec(`WITH RECURSIVE p(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM p WHERE n + 1 < ?)
			INSERT OR IGNORE INTO mailbox_leases (partition) SELECT n FROM p`, n); err != nil {
			return fmt.Errorf("create lease rows: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite: open mailbox %s: %w", m.name, err)
	}
	return n, nil
}

// Partitions returns the mailbox's partition count.
func (m *Mailbox) Partitions() int { return m.partitions }

// Name returns the mailbox's name as reported in Message.Mailbox: the
// absolute path of its file.
func (m *Mailbox) Name() string { return m.name }

// Identity is "sqlite:" and the database file's base name: what its
// consumers report as their Mailbox, whatever path a process opened it by.
func (m *Mailbox) Identity() string { return "sqlite:" + filepath.Base(m.name) }

// Publisher returns a publisher to the file's mailbox_messages table. A
// Publish is one transaction: all of its messages or none, durable on
// power loss with SyncFull.
func (m *Mailbox) Publisher() channel.Publisher {
	return lease.NewPublisher(Backend, m.partitions, m.isClosed, m.publish)
}

// Consumer returns a consumer of the file's partitions, shared with the
// other consumers of the file, in this process or others; Run reports
// invalid options. Its lease keeper runs one transaction per tick. One
// poller serves every claim in one transaction per poll: it deletes the
// messages acked since the last poll and takes the next ones of each
// partition, so one fsync serves them all. A poller whose claims saw
// everything there was skips the write transaction until the newest
// offset moves. A database that fails the keeper loses the consumer its
// claims but does not end Run; a failed poll does.
func (m *Mailbox) Consumer(opts ConsumerOptions) channel.Consumer { return newConsumer(m, opts) }

// DLQ returns the file's dead-letter table; Redrive puts messages back in
// mailbox_messages.
func (m *Mailbox) DLQ() dlq.Store { return &DeadLetters{m: m} }

// Close stops the running consumers, waits for their Run to return, and
// closes the file. It is idempotent; the Mailbox's other calls fail with
// channel.ErrClosed after it.
func (m *Mailbox) Close() error {
	if !m.runs.Close() {
		return nil
	}
	if err := m.writer.lock(context.Background()); err != nil {
		return fmt.Errorf("sqlite: close %s: %w", m.name, err)
	}
	m.dbClosed = true
	err := m.db.Close()
	m.writer.unlock()
	m.writer.release()
	if err != nil {
		return fmt.Errorf("sqlite: close %s: %w", m.name, err)
	}
	return nil
}

func (m *Mailbox) isClosed() bool { return m.runs.Closed() }

// stmt returns query prepared for tx. Statements are prepared once per
// connection rather than once per transaction: parsing a multi-row INSERT
// costs as much as running it.
func (m *Mailbox) stmt(ctx context.Context, tx *sql.Tx, query string) (*sql.Stmt, error) {
	m.stmtMu.Lock()
	st, ok := m.stmts[query]
	if !ok {
		var err error
		if st, err = m.db.PrepareContext(ctx, query); err != nil {
			m.stmtMu.Unlock()
			return nil, fmt.Errorf("prepare: %w", err)
		}
		m.stmts[query] = st
	}
	m.stmtMu.Unlock()
	return tx.StmtContext(ctx, st), nil
}

// write runs fn in one write transaction, queued behind the other writers
// of the file, and commits when fn returns nil.
func (m *Mailbox) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return m.writeTx(ctx, false, fn)
}

// writeBookkeeping is write for the consumer's takes and acks, committed
// without an fsync (synchronous=NORMAL): a process crash keeps them; a power
// loss may undo the last ones, which only means those messages are
// delivered again, and the host's journal deduplicates them.
// Publishes and dead letters always get the mailbox's own setting.
func (m *Mailbox) writeBookkeeping(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return m.writeTx(ctx, m.syncFull, fn)
}

func (m *Mailbox) writeTx(ctx context.Context, relax bool, fn func(tx *sql.Tx) error) error {
	if err := m.writer.lock(ctx); err != nil {
		return fmt.Errorf("wait for the writer lock: %w", err)
	}
	defer m.writer.unlock()
	if m.dbClosed {
		return channel.ErrClosed
	}
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if relax {
		if _, err := conn.ExecContext(ctx, "PRAGMA synchronous = NORMAL"); err != nil {
			return fmt.Errorf("relax synchronous: %w", err)
		}
		defer func() {
			// The connection goes back to the pool: restore FULL, or drop it.
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), "PRAGMA synchronous = FULL"); err != nil {
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// publish stores the records of one Publish in one transaction.
func (m *Mailbox) publish(ctx context.Context, recs []lease.Record) error {
	return m.write(ctx, func(tx *sql.Tx) error { return m.insert(ctx, tx, recs) })
}

// insertChunk is the most rows one INSERT takes: a multi-row statement
// costs far less per row than one execution per row.
const insertChunk = 64

// insert inserts recs with multi-row INSERT statements.
func (m *Mailbox) insert(ctx context.Context, tx *sql.Tx, recs []lease.Record) error {
	now := time.Now().UnixNano()
	args := make([]any, 0, 6*min(len(recs), insertChunk))
	for chunk := range slices.Chunk(recs, insertChunk) {
		args = args[:0]
		for _, r := range chunk {
			var headers any
			if h, err := encodeHeaders(r.Headers); err != nil {
				return fmt.Errorf("encode headers of message %s: %w", r.ID, err)
			} else if h != nil {
				headers = h
			}
			args = append(args, r.Partition, r.ID, r.Address, r.Payload, headers, now)
		}
		st, err := m.stmt(ctx, tx, `INSERT INTO mailbox_messages (partition, msg_id, address, payload, headers, created_at) VALUES `+
			strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?),", len(chunk)), ","))
		if err != nil {
			return err
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}
