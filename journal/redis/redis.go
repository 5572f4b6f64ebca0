// Package redis is a journal.Journal in Redis, on go-redis.
//
// Each Append is one Lua script call, whatever the number of batches and
// actors in it. The script checks the epoch of every batch's partition,
// skips the stale batches, checks every actor's next sequence, and only
// then writes entries, horizons and checkpoints and prunes old
// checkpoints; Redis runs it atomically, so an Append is written whole or
// not at all, and no other writer's command runs between its checks and
// its writes. That makes the journal safe for many processes on many hosts
// sharing one Redis: fencing and sequence checks happen on the server.
//
// # Keys
//
// All keys of a journal start with one hash tag, {postbox:<Namespace>}:, so
// they live in one hash slot and the scripts run on Redis Cluster too (one
// namespace is then served by one shard; use several namespaces to spread
// load). Per actor: a sorted set of its entries scored by sequence (…:e:
// <actor>), a hash from message ID to outcome entry (…:o:<actor>) and a
// sorted set of its checkpoints (…:c:<actor>); per journal, a hash of
// partition epochs (…:epochs) and a hash of partition horizons
// (…:horizons), the latter made by the first Append that sets one.
//
// # Durability
//
// A Redis journal is as durable as the server's append-only file (AOF)
// settings make it. An Append returns after Redis applied it in memory and,
// depending on appendfsync, wrote it to the AOF:
//
//   - appendonly yes, appendfsync always: Redis fsyncs the AOF before it
//     replies, so an acknowledged Append survives a Redis crash and a power
//     loss or kernel crash of its host. Recommended for a journal, whose
//     whole point is that an acknowledged outcome is never lost;
//     scripts/services.sh starts Redis this way.
//   - appendonly yes, appendfsync everysec (Redis's default once AOF is on):
//     an acknowledged Append survives a crash of the Redis process, but up
//     to about one second of acknowledged Appends (two when the disk is
//     slow to fsync) can be lost on power loss or a kernel crash. Messages whose outcomes were lost may then be
//     processed again, and side effects repeated.
//   - appendonly yes, appendfsync no, or AOF off (RDB snapshots only, or
//     no persistence): the operating system, or the snapshot schedule,
//     decides when data reaches disk; much more may be lost, in the case of
//     snapshots everything since the last one, even on a plain restart.
//
// Replication does not change this: replicas are fed asynchronously, and a
// failover can drop acknowledged writes (WAIT/WAITAOF are not used).
//
// # Limits
//
// Sequences and epochs are exact up to 2^53 (Redis scores are doubles).
// Horizons are kept as decimal strings, so every int64 is exact.
// Actors and message IDs keep the limits every journal has (see
// journal.Validate): at most 1024 bytes of UTF-8 without control
// characters. Needs Redis 7.0 or newer (or a
// compatible server such as Valkey). Compaction of a long history runs in
// one script call and blocks the server while it runs.
package redis

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/internal/pages"
)

// DefaultKeepCheckpoints is what Options.KeepCheckpoints 0 means.
const DefaultKeepCheckpoints = journal.DefaultKeepCheckpoints

// DefaultNamespace is what Options.Namespace "" means.
const DefaultNamespace = "default"

// maxExact is the largest sequence or epoch a Redis score holds exactly.
const maxExact = 1 << 53

// Options tune Open and New. The zero value is ready to use.
type Options struct {
	// Namespace separates journals that share one Redis: every key starts
	// with {postbox:<Namespace>}:. It must not contain braces. Defaults to
	// "default".
	Namespace string

	// KeepCheckpoints is how many of an actor's newest checkpoints survive
	// an Append that writes a newer one; a negative value keeps all of them.
	// Defaults to 3.
	KeepCheckpoints int

	// Compact bounds memory (see Checkpoints and compaction in package
	// journal). Defaults to false.
	Compact bool
}

func (o Options) withDefaults() (Options, error) {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if strings.ContainsAny(o.Namespace, "{}") {
		return o, fmt.Errorf("journal/redis: Options.Namespace %q: braces would break the key's hash tag; leave them out", o.Namespace)
	}
	if o.KeepCheckpoints == 0 {
		o.KeepCheckpoints = DefaultKeepCheckpoints
	}
	return o, nil
}

// Journal is a journal.Journal in Redis. It is safe for concurrent use, and
// any number of Journals, in any processes, may share one namespace.
type Journal struct {
	client  redis.UniversalClient
	owned   bool // Close closes client
	prefix  string
	keep    int // <= 0 keeps every checkpoint
	compact bool
	closed  atomic.Bool
}

var _ journal.Journal = (*Journal)(nil)

// Open connects to the Redis at addr, "host:port" or a redis:// or
// rediss:// URL (as redis.ParseURL takes it), and returns the journal.
// Close closes the connection. ctx bounds the first round trip.
func Open(ctx context.Context, addr string, opts Options) (*Journal, error) {
	ropts := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		var err error
		if ropts, err = redis.ParseURL(addr); err != nil {
			return nil, fmt.Errorf("journal/redis: %w", err)
		}
	}
	client := redis.NewClient(ropts)
	j, err := newJournal(ctx, client, opts, true)
	if err != nil {
		client.Close()
		return nil, err
	}
	return j, nil
}

// New returns a journal on a client the caller made (for instance a
// *redis.ClusterClient, or a *redis.Client with options of its own) and
// keeps: Close leaves it open.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Journal, error) {
	return newJournal(ctx, client, opts, false)
}

func newJournal(ctx context.Context, client redis.UniversalClient, opts Options, owned bool) (*Journal, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := client.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("journal/redis: connect: %w (is the server up? scripts/services.sh start redis runs one for tests)", err)
	}
	for _, s := range []*redis.Script{appendScript, casEpochScript} {
		if err := s.Load(ctx, client).Err(); err != nil {
			return nil, fmt.Errorf("journal/redis: load scripts: %w (the journal needs Redis 7.0 or newer)", err)
		}
	}
	return &Journal{
		client:  client,
		owned:   owned,
		prefix:  "{postbox:" + opts.Namespace + "}:",
		keep:    opts.KeepCheckpoints,
		compact: opts.Compact,
	}, nil
}

// Keys: the namespace's hash tag, then what the key holds.
func (j *Journal) epochsKey() string                  { return j.prefix + "epochs" }
func (j *Journal) horizonsKey() string                { return j.prefix + "horizons" }
func (j *Journal) entriesKey(actor string) string     { return j.prefix + "e:" + actor }
func (j *Journal) outcomesKey(actor string) string    { return j.prefix + "o:" + actor }
func (j *Journal) checkpointsKey(actor string) string { return j.prefix + "c:" + actor }

// failed turns an error of a call that raced with Close into ErrClosed.
func (j *Journal) failed(err error) error {
	if j.closed.Load() {
		return journal.ErrClosed
	}
	return err
}

// Entries are stored as sorted set members: the seq (8 bytes, big endian,
// which also makes each member unique), the kind, 1 if Data follows (0
// for nil Data, and for outcomes compaction cleared), the message ID's
// length (2 bytes, big endian), the message ID, and Data. The append
// script reads this layout to compact.
const entryHeader = 12

func encodeEntry(e journal.Entry) []byte {
	b := make([]byte, entryHeader, entryHeader+len(e.MsgID)+len(e.Data))
	binary.BigEndian.PutUint64(b, uint64(e.Seq))
	b[8] = byte(e.Kind)
	if e.Data != nil {
		b[9] = 1
	}
	binary.BigEndian.PutUint16(b[10:], uint16(len(e.MsgID)))
	b = append(b, e.MsgID...)
	return append(b, e.Data...)
}

func decodeEntry(actor string, m string) (journal.Entry, error) {
	if len(m) < entryHeader {
		return journal.Entry{}, fmt.Errorf("journal/redis: entry of %s is %d bytes, too short to be one", actor, len(m))
	}
	n := int(binary.BigEndian.Uint16([]byte(m[10:12])))
	if len(m) < entryHeader+n {
		return journal.Entry{}, fmt.Errorf("journal/redis: entry of %s is cut short", actor)
	}
	e := journal.Entry{
		Actor: actor,
		Seq:   int64(binary.BigEndian.Uint64([]byte(m[:8]))),
		Kind:  journal.Kind(m[8]),
		MsgID: m[entryHeader : entryHeader+n],
	}
	if m[9] == 1 {
		e.Data = []byte(m[entryHeader+n:])
	}
	return e, nil
}

// Checkpoints are stored as the seq (8 bytes, big endian) and the state.
func encodeCheckpoint(cp journal.Checkpoint) []byte {
	b := make([]byte, 8, 8+len(cp.State))
	binary.BigEndian.PutUint64(b, uint64(cp.Seq))
	return append(b, cp.State...)
}

// Read implements journal.Journal. Data of a compacted outcome is nil.
func (j *Journal) Read(ctx context.Context, actor string, from int64, fn func(journal.Entry) error) error {
	key := j.entriesKey(actor)
	_, err := pages.Read(ctx, from, j.closed.Load, func(ctx context.Context, from int64, page []journal.Entry) ([]journal.Entry, error) {
		if from > maxExact {
			return page, nil
		}
		members, err := j.client.ZRangeArgs(ctx, redis.ZRangeArgs{
			Key: key, Start: from, Stop: "+inf", ByScore: true, Count: pages.Size,
		}).Result()
		if err != nil {
			return page, j.failed(fmt.Errorf("journal/redis: read %s from %d: %w", actor, from, err))
		}
		for _, m := range members {
			e, err := decodeEntry(actor, m)
			if err != nil {
				return page, err
			}
			page = append(page, e)
		}
		return page, nil
	}, fn)
	return err
}

// LastSeq implements journal.Journal.
func (j *Journal) LastSeq(ctx context.Context, actor string) (int64, error) {
	if j.closed.Load() {
		return 0, journal.ErrClosed
	}
	last, err := j.client.ZRange(ctx, j.entriesKey(actor), -1, -1).Result()
	if err != nil {
		return 0, j.failed(fmt.Errorf("journal/redis: last seq of %s: %w", actor, err))
	}
	if len(last) == 0 {
		return 0, nil
	}
	e, err := decodeEntry(actor, last[0])
	if err != nil {
		return 0, err
	}
	return e.Seq, nil
}

// Outcome implements journal.Journal. Data of a compacted outcome is nil.
func (j *Journal) Outcome(ctx context.Context, actor, msgID string) (journal.Entry, bool, error) {
	if j.closed.Load() {
		return journal.Entry{}, false, journal.ErrClosed
	}
	m, err := j.client.HGet(ctx, j.outcomesKey(actor), msgID).Result()
	if errors.Is(err, redis.Nil) {
		return journal.Entry{}, false, nil
	}
	if err != nil {
		return journal.Entry{}, false, j.failed(fmt.Errorf("journal/redis: outcome of %s message %q: %w", actor, msgID, err))
	}
	e, err := decodeEntry(actor, m)
	if err != nil {
		return journal.Entry{}, false, err
	}
	return e, true, nil
}

// LoadCheckpoint implements journal.Journal.
func (j *Journal) LoadCheckpoint(ctx context.Context, actor string, atOrBefore int64) (journal.Checkpoint, bool, error) {
	if j.closed.Load() {
		return journal.Checkpoint{}, false, journal.ErrClosed
	}
	if atOrBefore < 0 {
		return journal.Checkpoint{}, false, nil
	}
	start := any(atOrBefore)
	if atOrBefore > maxExact {
		start = "+inf"
	}
	got, err := j.client.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: j.checkpointsKey(actor), Start: start, Stop: "-inf", ByScore: true, Rev: true, Count: 1,
	}).Result()
	if err != nil {
		return journal.Checkpoint{}, false, j.failed(fmt.Errorf("journal/redis: checkpoint of %s: %w", actor, err))
	}
	if len(got) == 0 {
		return journal.Checkpoint{}, false, nil
	}
	m := got[0]
	if len(m) < 8 {
		return journal.Checkpoint{}, false, fmt.Errorf("journal/redis: checkpoint of %s is %d bytes, too short to be one", actor, len(m))
	}
	cp := journal.Checkpoint{Actor: actor, Seq: int64(binary.BigEndian.Uint64([]byte(m[:8])))}
	if len(m) > 8 {
		cp.State = []byte(m[8:])
	}
	return cp, true, nil
}

// Horizon implements journal.Journal. A journal written before horizons
// existed has no horizons hash: ok is false then, as for any partition
// without one.
func (j *Journal) Horizon(ctx context.Context, partition string) (int64, bool, error) {
	if j.closed.Load() {
		return 0, false, journal.ErrClosed
	}
	v, err := j.client.HGet(ctx, j.horizonsKey(), partition).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, j.failed(fmt.Errorf("journal/redis: horizon of %q: %w", partition, err))
	}
	h, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("journal/redis: horizon of %q is %q, not an offset", partition, v)
	}
	return h, true, nil
}

// Epoch implements journal.Journal.
func (j *Journal) Epoch(ctx context.Context, partition string) (int64, error) {
	if j.closed.Load() {
		return 0, journal.ErrClosed
	}
	e, err := j.client.HGet(ctx, j.epochsKey(), partition).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, j.failed(fmt.Errorf("journal/redis: epoch of %q: %w", partition, err))
	}
	return e, nil
}

// CompareAndSetEpoch implements journal.Journal, as one script call. It
// refuses to move an epoch backward, which would unfence a zombie.
func (j *Journal) CompareAndSetEpoch(ctx context.Context, partition string, old, next int64) (bool, error) {
	if err := journal.BeginEpochMove(j.closed.Load(), partition, old, next); err != nil {
		return false, err
	}
	set, err := casEpochScript.Run(ctx, j.client, []string{j.epochsKey()},
		partition, strconv.FormatInt(old, 10), strconv.FormatInt(next, 10)).Int64()
	if err != nil {
		return false, j.failed(fmt.Errorf("journal/redis: set epoch of %q: %w", partition, err))
	}
	return set == 1, nil
}

// Close closes the journal, and its connections if Open made them. Later
// calls return journal.ErrClosed; closing again is a no-op.
func (j *Journal) Close() error {
	if !j.closed.CompareAndSwap(false, true) {
		return nil
	}
	if j.owned {
		if err := j.client.Close(); err != nil {
			return fmt.Errorf("journal/redis: close: %w", err)
		}
	}
	return nil
}
