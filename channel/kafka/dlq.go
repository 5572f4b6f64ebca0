package kafka

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/dlq"
)

// Headers of a dead-letter record; see DeadLetters.
const (
	dlHeaderAddress         = "postbox-address"
	dlHeaderSourceBackend   = "postbox-source-backend"
	dlHeaderSourceTopic     = "postbox-source-topic"
	dlHeaderSourcePartition = "postbox-source-partition"
	dlHeaderSourceOffset    = "postbox-source-offset"
	dlHeaderSourcePublished = "postbox-source-published"
	dlHeaderAttempts        = "postbox-attempts"
	dlHeaderReason          = "postbox-reason"
	dlHeaderWorker          = "postbox-worker"
	dlHeaderDeadLetteredAt  = "postbox-dead-lettered-at"
	dlHeaderErrorPrefix     = "postbox-error-"
	dlHeaderOrigPrefix      = "orig-"
	dlHeaderOrigRawPrefix   = "postbox-orig-raw-"
)

// DeadLetters is the dead-letter queue of a mailbox topic, kept in the topic
// DLQTopic(topic), which EnsureTopics creates compacted. It implements
// dlq.Store.
//
// Every dead letter is one record. Its key is the dead letter's ID: "dl-"
// and a hash of the message ID, so putting the same message twice keeps one
// dead letter (the newest). Its value is the original payload. Its headers
// carry the provenance:
//
//	postbox-id                the message ID
//	postbox-address           the actor address
//	postbox-source-backend    the backend the message was consumed from
//	postbox-source-topic      the topic (mailbox) it was consumed from
//	postbox-source-partition  its partition there
//	postbox-source-offset     its offset there
//	postbox-source-published  when it was published, RFC 3339 (if known)
//	postbox-attempts          how many attempts were made
//	postbox-reason            why it was dead-lettered
//	postbox-worker            the worker that dead-lettered it
//	postbox-dead-lettered-at  when, RFC 3339 with nanoseconds
//	postbox-error-<n>         "<time of attempt n, RFC 3339> <error>", per attempt error
//	orig-<name>               each header <name> of the original message
//	postbox-orig-raw-<hex>    each header of the original message whose name
//	                          is not valid UTF-8, its name in hex
//
// Values are bytes and kept as they are. Header names are strings to
// Kafka, which Java clients and the broker's log cleaner decode as UTF-8
// (replacing invalid bytes when the cleaner rewrites a batch), hence the
// hex for names that are not UTF-8.
//
// Redrive and Purge remove a dead letter by writing a tombstone (its key
// without a value); compaction then drops both. List, Get, Redrive and
// Purge read the topic from its start up to its end at the time of the
// call, so they cost what the topic holds; compaction keeps that near one
// record per dead letter.
//
// A DeadLetters is safe for concurrent use.
type DeadLetters struct {
	topic    string // the mailbox topic
	dlqTopic string
	brokers  []string
	opts     Options
	cl       *kgo.Client
	pub      *Publisher // of redriven copies, with every check Publish makes

	mu     sync.RWMutex // held for reading by every call, for writing by Close
	closed bool

	partsMu sync.Mutex
	parts   map[string]int // partition counts by topic, once looked up
}

var _ dlq.Store = (*DeadLetters)(nil)

// OpenDLQ returns the dead-letter queue of the mailbox topic on the given
// brokers ("host:port"). It does not connect until the first call; the
// topic DLQTopic(topic) must exist by then (see EnsureTopics), and the
// mailbox topic too for Redrive. Of opts it uses ClientID, FetchMaxWait,
// PublishTimeout and Logger.
func OpenDLQ(brokers []string, topic string, opts Options) (*DeadLetters, error) {
	opts = opts.WithDefaults()
	if err := opts.validate(brokers, topic); err != nil {
		return nil, err
	}
	cl, err := kgo.NewClient(opts.clientOpts(brokers,
		kgo.RecordPartitioner(kgo.ManualPartitioner()), // every record names its partition
		kgo.RequiredAcks(kgo.AllISRAcks()),             // idempotent writes are the default
		kgo.RecordDeliveryTimeout(opts.PublishTimeout),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: dead-letter queue of %s: %w", topic, err)
	}
	pub, err := OpenPublisher(brokers, topic, opts)
	if err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka: dead-letter queue of %s: %w", topic, err)
	}
	return &DeadLetters{
		topic:    topic,
		dlqTopic: DLQTopic(topic),
		brokers:  brokers,
		opts:     opts,
		cl:       cl,
		pub:      pub,
		parts:    make(map[string]int),
	}, nil
}

// Close waits for calls in flight, then closes the connections. Later calls
// return channel.ErrClosed. Close is idempotent.
func (d *DeadLetters) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.closed {
		d.closed = true
		d.cl.Close()
		d.pub.Close()
	}
	return nil
}

// deadLetterID is the ID of the dead letter of message id.
func deadLetterID(messageID string) string {
	sum := sha256.Sum256([]byte(messageID))
	return "dl-" + hex.EncodeToString(sum[:16])
}

// Put writes env and returns once all in-sync replicas have it. Its ID is
// derived from env.MessageID (env.ID is ignored), so a second Put of the
// same message replaces the first. A zero DeadLetteredAt is set to now.
func (d *DeadLetters) Put(ctx context.Context, env dlq.Envelope) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return channel.ErrClosed
	}
	if env.MessageID == "" {
		return errors.New("kafka: put dead letter: empty MessageID: set it to the ID of the message being dead-lettered")
	}
	env.ID = deadLetterID(env.MessageID)
	if env.DeadLetteredAt.IsZero() {
		env.DeadLetteredAt = time.Now().UTC()
	}
	n, err := d.partitionCount(ctx, d.dlqTopic)
	if err != nil {
		return fmt.Errorf("kafka: put dead letter of message %s: %w", env.MessageID, err)
	}
	r := envelopeRecord(env)
	r.Topic, r.Partition = d.dlqTopic, channel.HomePartition(env.ID, n)
	if err := d.cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		return fmt.Errorf("kafka: put dead letter of message %s to %s: %w", env.MessageID, d.dlqTopic, err)
	}
	return nil
}

// List returns every dead letter, oldest (by DeadLetteredAt) first.
func (d *DeadLetters) List(ctx context.Context) ([]dlq.Envelope, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, channel.ErrClosed
	}
	letters, err := d.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: list dead letters: %w", err)
	}
	envs := make([]dlq.Envelope, len(letters))
	for i, l := range letters {
		envs[i] = l.env
	}
	return envs, nil
}

// Get returns the dead letter with ID id, or an error matching
// dlq.ErrNotFound.
func (d *DeadLetters) Get(ctx context.Context, id string) (dlq.Envelope, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return dlq.Envelope{}, channel.ErrClosed
	}
	letters, err := d.read(ctx)
	if err != nil {
		return dlq.Envelope{}, fmt.Errorf("kafka: get dead letter %s: %w", id, err)
	}
	for _, l := range letters {
		if l.env.ID == id {
			return l.env, nil
		}
	}
	return dlq.Envelope{}, fmt.Errorf("kafka: get dead letter %s: %w (list them to see the IDs)", id, dlq.ErrNotFound)
}

// Redrive publishes the given dead letters, or all of them when ids is
// empty, back to the mailbox topic and then removes them. They are
// published in dlq.CompareRedrive's order, so one actor's messages keep
// their original order, each to its address's home partition under
// the ID dlq.RedriveID(original), with the original ID in header
// dlq.HeaderRedriveOf, and its original headers, to exactly the address
// bytes it holds. An unknown ID fails the call with an error matching
// dlq.ErrNotFound before anything is published, and so does a dead letter
// that cannot be redriven as it is (see dlq.RedriveMessage), with an error
// naming it and matching channel.ErrBadAddress or channel.ErrBadMessageID;
// it stays queued.
//
// Redrive is not atomic. If it fails after publishing, some messages may be
// in the mailbox and still in the queue; redriving them again publishes
// them under the same IDs, so the host processes each once.
func (d *DeadLetters) Redrive(ctx context.Context, ids ...string) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, channel.ErrClosed
	}
	letters, err := d.read(ctx)
	if err != nil {
		return 0, fmt.Errorf("kafka: redrive dead letters: %w", err)
	}
	letters, err = pickLetters(letters, ids, true)
	if err != nil || len(letters) == 0 {
		return 0, err
	}
	slices.SortStableFunc(letters, func(a, b deadLetter) int { return dlq.CompareRedrive(&a.env, &b.env) })
	if _, err := d.partitionCount(ctx, d.topic); err != nil {
		return 0, fmt.Errorf("kafka: redrive dead letters: %w", err)
	}
	msgs := make([]channel.Message, len(letters))
	for i, l := range letters {
		m, err := dlq.RedriveMessage(l.env)
		if err != nil {
			return 0, fmt.Errorf("kafka: %w", err)
		}
		msgs[i] = m
	}
	// One Publish: it checks every message before writing any, and records
	// of one address go to one partition, where the idempotent producer
	// keeps their order.
	if err := d.pub.Publish(ctx, msgs...); err != nil {
		if errors.Is(err, channel.ErrBadAddress) || errors.Is(err, channel.ErrBadMessageID) {
			return 0, fmt.Errorf("kafka: dead letters %s cannot be redriven: %w (nothing was redriven; purge the one refused, or fix it and publish it again by hand)", letterIDs(letters), err)
		}
		return 0, fmt.Errorf("kafka: redrive dead letters to %s: %w (some may have been published; redriving them again is safe, the copies keep their IDs)", d.topic, err)
	}
	if err := d.remove(ctx, letters); err != nil {
		return 0, fmt.Errorf("kafka: redrive dead letters: published to %s, but removing them from the queue failed: %w (redrive or purge them again)", d.topic, err)
	}
	return len(letters), nil
}

// Purge removes the given dead letters, or all of them when ids is empty,
// and returns how many it removed. Unknown IDs are skipped.
func (d *DeadLetters) Purge(ctx context.Context, ids ...string) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, channel.ErrClosed
	}
	letters, err := d.read(ctx)
	if err != nil {
		return 0, fmt.Errorf("kafka: purge dead letters: %w", err)
	}
	letters, _ = pickLetters(letters, ids, false)
	if err := d.remove(ctx, letters); err != nil {
		return 0, fmt.Errorf("kafka: purge dead letters: %w", err)
	}
	return len(letters), nil
}

// letterIDs lists the IDs of letters for an error, the first few of many.
func letterIDs(letters []deadLetter) string {
	const most = 8
	ids := make([]string, 0, min(len(letters), most))
	for _, l := range letters[:min(len(letters), most)] {
		ids = append(ids, l.env.ID)
	}
	s := strings.Join(ids, ", ")
	if len(letters) > most {
		s += fmt.Sprintf(" and %d more", len(letters)-most)
	}
	return s
}

// deadLetter is a dead letter as read, with the partitions that hold it.
type deadLetter struct {
	env        dlq.Envelope
	partitions []int32
	partition  int32 // of the record env was read from
	offset     int64
}

// pickLetters returns those of letters whose IDs are in ids, or all of them
// when ids is empty. An unknown ID is an error matching dlq.ErrNotFound if
// strict, and skipped if not.
func pickLetters(letters []deadLetter, ids []string, strict bool) ([]deadLetter, error) {
	if len(ids) == 0 {
		return letters, nil
	}
	byID := make(map[string]deadLetter, len(letters))
	for _, l := range letters {
		byID[l.env.ID] = l
	}
	var picked []deadLetter
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		l, ok := byID[id]
		if !ok {
			if strict {
				return nil, fmt.Errorf("kafka: %w", dlq.NotFoundForRedrive(id))
			}
			continue
		}
		picked = append(picked, l)
	}
	return picked, nil
}

// remove writes a tombstone for each of letters on every partition that
// holds it, and returns once all in-sync replicas have them.
func (d *DeadLetters) remove(ctx context.Context, letters []deadLetter) error {
	var recs []*kgo.Record
	for _, l := range letters {
		for _, p := range l.partitions {
			recs = append(recs, &kgo.Record{Topic: d.dlqTopic, Partition: p, Key: []byte(l.env.ID)})
		}
	}
	if len(recs) == 0 {
		return nil
	}
	if err := d.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("write tombstones to %s: %w", d.dlqTopic, err)
	}
	return nil
}

// partitionCount returns how many partitions topic has, looking it up once.
func (d *DeadLetters) partitionCount(ctx context.Context, topic string) (int, error) {
	d.partsMu.Lock()
	n := d.parts[topic]
	d.partsMu.Unlock()
	if n > 0 {
		return n, nil
	}
	details, err := kadm.NewClient(d.cl).ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("describe topic %q: %w%s", topic, err, unreachableHint(d.brokers))
	}
	t, ok := details[topic]
	switch {
	case !ok || errors.Is(t.Err, kerr.UnknownTopicOrPartition):
		return 0, fmt.Errorf("topic %q does not exist: create it first, for example with EnsureTopics", topic)
	case t.Err != nil:
		return 0, fmt.Errorf("describe topic %q: %w", topic, t.Err)
	case len(t.Partitions) == 0:
		return 0, fmt.Errorf("topic %q has no partitions", topic)
	}
	d.partsMu.Lock()
	d.parts[topic] = len(t.Partitions)
	d.partsMu.Unlock()
	return len(t.Partitions), nil
}

// read reads the dead-letter topic from its start up to its end as of now
// and returns the dead letters it holds, oldest first: for each key, the
// newest record, unless that is a tombstone.
func (d *DeadLetters) read(ctx context.Context) ([]deadLetter, error) {
	if _, err := d.partitionCount(ctx, d.dlqTopic); err != nil {
		return nil, err
	}
	adm := kadm.NewClient(d.cl)
	ends, err := adm.ListEndOffsets(ctx, d.dlqTopic)
	if err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w%s", d.dlqTopic, err, unreachableHint(d.brokers))
	}
	if err := ends.Error(); err != nil {
		return nil, fmt.Errorf("list end offsets of %s: %w", d.dlqTopic, err)
	}
	starts, err := d.startOffsets(ctx, adm)
	if err != nil {
		return nil, err
	}
	target := make(map[int32]int64) // partition → its end, while not reached
	from := make(map[int32]kgo.Offset)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > starts[o.Partition] {
			target[o.Partition] = o.Offset
			from[o.Partition] = kgo.NewOffset().At(starts[o.Partition])
		}
	})
	latest := make(map[string]map[int32]*kgo.Record) // key → partition → newest record
	if len(target) > 0 {
		if err := d.fetch(ctx, adm, from, target, func(r *kgo.Record) {
			byPart := latest[string(r.Key)]
			if byPart == nil {
				byPart = make(map[int32]*kgo.Record, 1)
				latest[string(r.Key)] = byPart
			}
			byPart[r.Partition] = r
		}); err != nil {
			return nil, err
		}
	}

	letters := make([]deadLetter, 0, len(latest))
	for key, byPart := range latest {
		var l *deadLetter
		for _, p := range slices.Sorted(maps.Keys(byPart)) {
			r := byPart[p]
			if r.Value == nil {
				continue // a tombstone
			}
			if l == nil {
				l = &deadLetter{}
			}
			l.partitions = append(l.partitions, p)
			// Held on two partitions (the topic grew between two Puts):
			// the newer one wins.
			if len(l.partitions) == 1 || r.Timestamp.After(byPart[l.partition].Timestamp) {
				l.env, l.partition, l.offset = recordEnvelope(key, r), p, r.Offset
			}
		}
		if l != nil {
			letters = append(letters, *l)
		}
	}
	slices.SortFunc(letters, func(a, b deadLetter) int {
		return cmp.Or(
			a.env.DeadLetteredAt.Compare(b.env.DeadLetteredAt),
			cmp.Compare(a.partition, b.partition),
			cmp.Compare(a.offset, b.offset),
		)
	})
	return letters, nil
}

// startOffsets returns the log start offset of every partition of the
// dead-letter topic.
func (d *DeadLetters) startOffsets(ctx context.Context, adm *kadm.Client) (map[int32]int64, error) {
	listed, err := adm.ListStartOffsets(ctx, d.dlqTopic)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w%s", d.dlqTopic, err, unreachableHint(d.brokers))
	}
	if err := listed.Error(); err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", d.dlqTopic, err)
	}
	starts := make(map[int32]int64)
	listed.Each(func(o kadm.ListedOffset) { starts[o.Partition] = o.Offset })
	return starts, nil
}

// fetch consumes the dead-letter topic, without a group, from the given
// offsets and passes each record below its partition's target to fn, in
// offset order per partition, until every partition has reached its
// target.
func (d *DeadLetters) fetch(ctx context.Context, adm *kadm.Client, from map[int32]kgo.Offset, target map[int32]int64, fn func(*kgo.Record)) error {
	cl, err := kgo.NewClient(d.opts.clientOpts(d.brokers,
		kgo.FetchMaxWait(d.opts.FetchMaxWait),
		// A transaction marker may be a partition's last offset: see it,
		// to know the end is reached.
		kgo.KeepControlRecords(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{d.dlqTopic: from}),
	)...)
	if err != nil {
		return fmt.Errorf("read %s: %w", d.dlqTopic, err)
	}
	defer cl.Close()
	// Records up to a partition's end come at once; a poll that gets
	// nothing for this long means a partition's last records are gone
	// (deleted by retention meanwhile), which the start offsets tell.
	idle := max(4*d.opts.FetchMaxWait, 2*time.Second)
	for len(target) > 0 {
		pctx, cancel := context.WithTimeout(ctx, idle)
		fetches := cl.PollFetches(pctx)
		cancel()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read %s: %d partitions not read to their end: %w", d.dlqTopic, len(target), err)
		}
		var ferr error
		fetches.EachError(func(_ string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && ferr == nil {
				ferr = fmt.Errorf("read %s partition %d: %w", d.dlqTopic, p, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		got := false
		fetches.EachRecord(func(r *kgo.Record) {
			end, ok := target[r.Partition]
			if !ok || r.Offset >= end {
				return // read to its end already, or written after the call began
			}
			got = true
			if !r.Attrs.IsControl() && r.Key != nil {
				fn(r)
			}
			if r.Offset >= end-1 {
				delete(target, r.Partition)
			}
		})
		if got {
			continue
		}
		starts, err := d.startOffsets(ctx, adm)
		if err != nil {
			return err
		}
		for p, end := range target {
			if starts[p] >= end {
				delete(target, p)
			}
		}
	}
	return nil
}

// envelopeRecord is the record of env, without topic and partition.
func envelopeRecord(env dlq.Envelope) *kgo.Record {
	value := env.Payload
	if value == nil {
		value = []byte{} // a nil value would be a tombstone
	}
	hs := make([]kgo.RecordHeader, 0, 12+len(env.Errors)+len(env.Headers))
	add := func(k, v string) { hs = append(hs, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add(HeaderID, env.MessageID)
	add(dlHeaderAddress, env.Address)
	add(dlHeaderSourceBackend, env.Source.Backend)
	add(dlHeaderSourceTopic, env.Source.Mailbox)
	add(dlHeaderSourcePartition, strconv.FormatInt(int64(env.Source.Partition), 10))
	add(dlHeaderSourceOffset, strconv.FormatInt(env.Source.Offset, 10))
	if !env.Source.Published.IsZero() {
		add(dlHeaderSourcePublished, env.Source.Published.Format(time.RFC3339Nano))
	}
	add(dlHeaderAttempts, strconv.Itoa(env.Attempts))
	add(dlHeaderReason, env.Reason)
	add(dlHeaderWorker, env.Worker)
	add(dlHeaderDeadLetteredAt, env.DeadLetteredAt.Format(time.RFC3339Nano))
	for i, e := range env.Errors {
		n := e.Attempt
		if n <= 0 {
			n = i + 1
		}
		add(dlHeaderErrorPrefix+strconv.Itoa(n), e.At.Format(time.RFC3339Nano)+" "+e.Error)
	}
	for _, k := range slices.Sorted(maps.Keys(env.Headers)) {
		if utf8.ValidString(k) {
			add(dlHeaderOrigPrefix+k, env.Headers[k])
		} else {
			add(dlHeaderOrigRawPrefix+hex.EncodeToString([]byte(k)), env.Headers[k])
		}
	}
	return &kgo.Record{Key: []byte(env.ID), Value: value, Headers: hs}
}

// recordEnvelope reads the envelope of the dead letter id from its record.
// It reads what it can: a header that is missing or malformed leaves its
// field zero.
func recordEnvelope(id string, r *kgo.Record) dlq.Envelope {
	env := dlq.Envelope{ID: id, Payload: r.Value}
	parseTime := func(v string) time.Time {
		t, _ := time.Parse(time.RFC3339Nano, v)
		return t
	}
	for _, h := range r.Headers {
		v := string(h.Value)
		switch {
		case h.Key == HeaderID:
			env.MessageID = v
		case h.Key == dlHeaderAddress:
			env.Address = v
		case h.Key == dlHeaderSourceBackend:
			env.Source.Backend = v
		case h.Key == dlHeaderSourceTopic:
			env.Source.Mailbox = v
		case h.Key == dlHeaderSourcePartition:
			p, _ := strconv.ParseInt(v, 10, 32)
			env.Source.Partition = int32(p)
		case h.Key == dlHeaderSourceOffset:
			env.Source.Offset, _ = strconv.ParseInt(v, 10, 64)
		case h.Key == dlHeaderSourcePublished:
			env.Source.Published = parseTime(v)
		case h.Key == dlHeaderAttempts:
			env.Attempts, _ = strconv.Atoi(v)
		case h.Key == dlHeaderReason:
			env.Reason = v
		case h.Key == dlHeaderWorker:
			env.Worker = v
		case h.Key == dlHeaderDeadLetteredAt:
			env.DeadLetteredAt = parseTime(v)
		case strings.HasPrefix(h.Key, dlHeaderErrorPrefix):
			n, _ := strconv.Atoi(strings.TrimPrefix(h.Key, dlHeaderErrorPrefix))
			e := dlq.AttemptError{Attempt: n, Error: v}
			if at, msg, ok := strings.Cut(v, " "); ok {
				if t, err := time.Parse(time.RFC3339Nano, at); err == nil {
					e.At, e.Error = t, msg
				}
			}
			env.Errors = append(env.Errors, e)
		case strings.HasPrefix(h.Key, dlHeaderOrigPrefix):
			if env.Headers == nil {
				env.Headers = make(map[string]string)
			}
			env.Headers[strings.TrimPrefix(h.Key, dlHeaderOrigPrefix)] = v
		case strings.HasPrefix(h.Key, dlHeaderOrigRawPrefix):
			k, err := hex.DecodeString(strings.TrimPrefix(h.Key, dlHeaderOrigRawPrefix))
			if err != nil {
				continue // not ours: nothing to restore
			}
			if env.Headers == nil {
				env.Headers = make(map[string]string)
			}
			env.Headers[string(k)] = v
		}
	}
	return env
}
