package kafka

import (
	"cmp"
	"context"
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

// DeadLetters is the dlq.Store of a mailbox topic, kept in the topic
// DLQTopic(topic), which EnsureTopics creates compacted.
//
// Every dead letter is one record. Its key is the dead letter's ID,
// dlq.IDOf(message ID), so compaction keeps the newest Put of a message.
// Its value is the original payload. Its headers carry the provenance:
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
// Header values are kept byte for byte. Header names are decoded as UTF-8
// by Java clients and by the broker's log cleaner (which replaces invalid
// bytes when it rewrites a batch), hence the hex.
//
// Redrive and Purge remove a dead letter with a tombstone, which compaction
// then drops with it. List, Get, Redrive and Purge read the whole topic,
// up to its end at the time of the call; compaction keeps that near one
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

	lifecycle // held for reading by every call

	parts sync.Map // topic → its partition count, once looked up
}

var _ dlq.Store = (*DeadLetters)(nil)

// OpenDLQ returns the dead-letter queue of the mailbox topic on the given
// brokers ("host:port"). It does not connect until the first call; the
// topic DLQTopic(topic) must exist by then (see EnsureTopics), and the
// mailbox topic too for Redrive. Of opts it uses ClientID, FetchMaxWait,
// PublishTimeout and Logger.
func OpenDLQ(brokers []string, topic string, opts Options) (*DeadLetters, error) {
	pub, err := OpenPublisher(brokers, topic, opts) // it checks opts
	if err != nil {
		return nil, err
	}
	opts = opts.WithDefaults()
	// Every record names its partition: a tombstone goes to each that
	// holds its key.
	cl, err := kgo.NewClient(opts.producerOpts(brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))...)
	if err != nil {
		pub.Close()
		return nil, fmt.Errorf("kafka: dead-letter queue of %s: %w", topic, err)
	}
	return &DeadLetters{
		topic:    topic,
		dlqTopic: DLQTopic(topic),
		brokers:  brokers,
		opts:     opts,
		cl:       cl,
		pub:      pub,
	}, nil
}

// Close waits for calls in flight, then closes the connections. Later calls
// return channel.ErrClosed. Close is idempotent.
func (d *DeadLetters) Close() error {
	return d.close(func() {
		d.cl.Close()
		d.pub.Close()
	})
}

// Put implements dlq.Writer.Put, returning once all in-sync replicas have
// the record. The dead letter's ID is dlq.IDOf(env.MessageID); env.ID is
// ignored.
func (d *DeadLetters) Put(ctx context.Context, env dlq.Envelope) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return channel.ErrClosed
	}
	env, err := dlq.ForPut(env)
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	env.ID = dlq.IDOf(env.MessageID)
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

// List implements dlq.Store.List.
func (d *DeadLetters) List(ctx context.Context) ([]dlq.Envelope, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	letters, err := d.read(ctx)
	if err != nil {
		return nil, fmt.Errorf("kafka: list dead letters: %w", err)
	}
	return dlq.OldestFirst(letters, deadLetter.envelope), nil
}

// Get implements dlq.Store.Get.
func (d *DeadLetters) Get(ctx context.Context, id string) (dlq.Envelope, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	letters, err := d.pick(ctx, []string{id}, false)
	switch {
	case err != nil:
		return dlq.Envelope{}, fmt.Errorf("kafka: get dead letter %s: %w", id, err)
	case len(letters) == 0:
		return dlq.Envelope{}, fmt.Errorf("kafka: %w", dlq.NotFoundForGet(id))
	}
	return letters[0].env, nil
}

// Redrive implements dlq.Store.Redrive. It is not atomic: if it fails after
// publishing, the messages may be in the mailbox and still queued;
// redriving them again publishes them under the same IDs, so the host
// processes each once.
func (d *DeadLetters) Redrive(ctx context.Context, ids ...string) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	letters, err := d.pick(ctx, ids, true)
	if err == nil && len(letters) > 0 {
		_, err = d.partitionCount(ctx, d.topic) // the mailbox topic must exist
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: redrive dead letters: %w", err)
	}
	// Publish checks no more than RedriveMessages: it refuses none of them.
	msgs, err := dlq.RedriveMessages(letters, deadLetter.envelope,
		func(msgs []channel.Message) ([]channel.Message, error) { return msgs, nil })
	if err != nil {
		return 0, fmt.Errorf("kafka: %w", err)
	}
	// One Publish: records of one address go to one partition, where the
	// idempotent producer keeps their order.
	if err := d.pub.Publish(ctx, msgs...); err != nil {
		return 0, fmt.Errorf("kafka: redrive dead letters to %s: %w (some may have been published; redriving them again is safe, the copies keep their IDs)", d.topic, err)
	}
	if err := d.remove(ctx, letters); err != nil {
		return 0, fmt.Errorf("kafka: redrive dead letters: published to %s, but removing them from the queue failed: %w (redrive or purge them again)", d.topic, err)
	}
	return len(letters), nil
}

// Purge implements dlq.Store.Purge.
func (d *DeadLetters) Purge(ctx context.Context, ids ...string) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	letters, err := d.pick(ctx, ids, false)
	if err == nil {
		err = d.remove(ctx, letters)
	}
	if err != nil {
		return 0, fmt.Errorf("kafka: purge dead letters: %w", err)
	}
	return len(letters), nil
}

// deadLetter is a dead letter as read, with the partitions that hold it.
type deadLetter struct {
	env        dlq.Envelope
	partitions []int32
	partition  int32 // of the record env was read from
	offset     int64
}

func (l deadLetter) envelope() dlq.Envelope { return l.env }

// pick reads the queue and returns the dead letters ids names, or all of
// them (see dlq.Pick). The caller holds d.mu for reading.
func (d *DeadLetters) pick(ctx context.Context, ids []string, strict bool) ([]deadLetter, error) {
	letters, err := d.read(ctx)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]deadLetter, len(letters))
	for _, l := range letters {
		byID[l.env.ID] = l
	}
	return dlq.Pick(ids, strict,
		func() ([]deadLetter, error) { return letters, nil },
		func(id string) (deadLetter, bool, error) { l, ok := byID[id]; return l, ok, nil })
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
	if n, ok := d.parts.Load(topic); ok {
		return n.(int), nil
	}
	n, err := partitionsOf(ctx, d.cl, d.brokers, topic)
	if err == nil {
		d.parts.Store(topic, n)
	}
	return n, err
}

// read reads the dead-letter topic from its start up to its end as of now
// and returns the dead letters it holds, in the order of their records:
// for each key, the newest record, unless that is a tombstone. The caller
// holds d.mu for reading; read fails with channel.ErrClosed once d is
// closed.
func (d *DeadLetters) read(ctx context.Context) ([]deadLetter, error) {
	if d.closed {
		return nil, channel.ErrClosed
	}
	if _, err := d.partitionCount(ctx, d.dlqTopic); err != nil {
		return nil, err
	}
	adm := kadm.NewClient(d.cl)
	ends, err := d.offsets(ctx, "end", adm.ListEndOffsets)
	if err != nil {
		return nil, err
	}
	starts, err := d.offsets(ctx, "start", adm.ListStartOffsets)
	if err != nil {
		return nil, err
	}
	target := make(map[int32]int64) // partition → its end, while not reached
	from := make(map[int32]kgo.Offset)
	for p, end := range ends {
		if end > starts[p] {
			target[p] = end
			from[p] = kgo.NewOffset().At(starts[p])
		}
	}
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
		var l deadLetter
		for _, p := range slices.Sorted(maps.Keys(byPart)) {
			r := byPart[p]
			if r.Value == nil {
				continue // a tombstone
			}
			l.partitions = append(l.partitions, p)
			// Held on two partitions (the topic grew between two Puts):
			// the newer one wins.
			if len(l.partitions) == 1 || r.Timestamp.After(byPart[l.partition].Timestamp) {
				l.env, l.partition, l.offset = recordEnvelope(key, r), p, r.Offset
			}
		}
		if len(l.partitions) > 0 {
			letters = append(letters, l)
		}
	}
	slices.SortFunc(letters, func(a, b deadLetter) int {
		return cmp.Or(cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	return letters, nil
}

// offsets lists the start or end (which) offset of every partition of the
// dead-letter topic.
func (d *DeadLetters) offsets(ctx context.Context, which string, list func(context.Context, ...string) (kadm.ListedOffsets, error)) (map[int32]int64, error) {
	listed, err := list(ctx, d.dlqTopic)
	if err != nil {
		return nil, fmt.Errorf("list %s offsets of %s: %w%s", which, d.dlqTopic, err, unreachableHint(d.brokers))
	}
	if err := listed.Error(); err != nil {
		return nil, fmt.Errorf("list %s offsets of %s: %w", which, d.dlqTopic, err)
	}
	offs := make(map[int32]int64)
	listed.Each(func(o kadm.ListedOffset) { offs[o.Partition] = o.Offset })
	return offs, nil
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
		for _, fe := range fetches.Errors() {
			if !errors.Is(fe.Err, context.DeadlineExceeded) && !errors.Is(fe.Err, context.Canceled) {
				return fmt.Errorf("read %s partition %d: %w", d.dlqTopic, fe.Partition, fe.Err)
			}
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
		starts, err := d.offsets(ctx, "start", adm.ListStartOffsets)
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
	orig := make(map[string]string)
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
			orig[strings.TrimPrefix(h.Key, dlHeaderOrigPrefix)] = v
		case strings.HasPrefix(h.Key, dlHeaderOrigRawPrefix):
			// A name that is not hex is not ours: nothing to restore.
			if k, err := hex.DecodeString(strings.TrimPrefix(h.Key, dlHeaderOrigRawPrefix)); err == nil {
				orig[string(k)] = v
			}
		}
	}
	if len(orig) > 0 {
		env.Headers = orig
	}
	return env
}
