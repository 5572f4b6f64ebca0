// Package kafka is the Kafka channel: a mailbox is a topic, an actor's
// address is the record key, and the record lands on the key's home
// partition (channel.HomePartition, which is murmur2 as Kafka's Java client
// computes it).
//
// The Publisher is an idempotent producer that waits for all in-sync
// replicas. The Consumer is a member of a consumer group with the
// cooperative-sticky balancer and manual commits: each partition it is
// assigned becomes a channel.Claim. A claim commits the lowest offset that
// is neither acknowledged nor forwarded (below), never past it.
//
// A record whose key does not hash to the partition it is on (written by a
// client with another partitioner, such as librdkafka's default
// consistent_random) is never handed to the host: the consumer republishes
// it to its home partition (same key, value and headers, with HeaderID set
// to its message ID, which is "topic/partition/offset" of the original when
// it had none, and HeaderForwardedFrom) and counts its offset as done once all in-sync replicas have
// the copy. Records forwarded from one partition keep their relative order
// per key; they land after whatever their home partition already held. A
// crash between the
// copy and the commit forwards the record again under the same ID, so the
// host's dedup drops the second copy.
//
// What the Kafka channel does not give:
//   - Acks are committed every Options.CommitInterval and on Release: after
//     a crash, what was acked since the last commit is delivered again
//     (same IDs, so the host's dedup drops it).
//   - Growing a topic's partition count moves addresses to new home
//     partitions. Don't, or drain the topic first. A running Consumer
//     judges (and forwards to) home partitions by the partition count it
//     saw when Run started.
//
// Dead letters go to the topic DLQTopic(topic), compacted, one record per
// dead letter with its provenance in headers: see DeadLetters.
//
// Use EnsureTopics to create a mailbox topic and its dead-letter topic.
package kafka

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/postbox-dev/postbox/channel"
)

// Record headers the Kafka channel reads or writes.
const (
	// HeaderID carries the message ID. A record without it (written by
	// another producer) gets the ID "topic/partition/offset".
	HeaderID = "postbox-id"

	// HeaderForeign is no longer set: the Consumer forwards a record that is
	// off its home partition itself, and the host never sees it. A record
	// carrying it has it dropped on delivery, and the Publisher drops it
	// from what it publishes.
	//
	// Deprecated: foreign records are forwarded by the Consumer.
	HeaderForeign = "postbox-foreign"

	// HeaderBadAddress carries the record key of a delivered message whose
	// key is not a valid "type/id" address. Such a message has a zero
	// Address; the host should dead-letter it. The Publisher drops this
	// header from what it publishes.
	HeaderBadAddress = "postbox-bad-address"

	// HeaderForwardedFrom is set by the Consumer on the copy of a foreign
	// record it writes to the record's home partition, to the original's
	// "topic/partition/offset". A record that is off its home partition
	// although it carries it was forwarded by a consumer that counts the
	// topic's partitions differently (the topic grew while consumers ran):
	// it is delivered where it is, with a warning, rather than forwarded
	// again, so that two such consumers cannot bounce it between them
	// forever. It is dropped from delivered headers, and the Publisher
	// drops it from what it publishes.
	HeaderForwardedFrom = "postbox-forwarded-from"
)

// metadataMinAge is how soon a client may refresh metadata again. A produce
// or fetch that fails on a moved or just-created partition waits for the
// next refresh; franz-go's default (5s) would stall it that long.
const metadataMinAge = 250 * time.Millisecond

// backend is what Consumer.Backend reports.
const backend = "kafka"

const dlqSuffix = ".dlq"

// DLQTopic is the dead-letter topic of a mailbox topic: topic + ".dlq".
func DLQTopic(topic string) string { return topic + dlqSuffix }

// HomePartitioner is the partitioner the Publisher uses: a keyed record goes
// to channel.HomePartition(key, partitions), as Kafka's Java client would
// place it. Use it in other franz-go producers that write to a mailbox.
func HomePartitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, n int) int {
			return int(channel.HomePartition(string(r.Key), n))
		}
	})
}

// message turns a fetched record on its home partition into a channel
// message.
func message(r *kgo.Record) channel.Message {
	m := channel.Message{
		ID:          messageID(r),
		Payload:     r.Value,
		Headers:     make(map[string]string, len(r.Headers)),
		Mailbox:     r.Topic,
		Partition:   r.Partition,
		Offset:      r.Offset,
		PublishedAt: r.Timestamp,
	}
	for _, h := range r.Headers {
		switch h.Key {
		case HeaderID, HeaderForeign, HeaderBadAddress, HeaderForwardedFrom:
			// The ID is set above; the others only this package sets.
		default:
			m.Headers[h.Key] = string(h.Value)
		}
	}
	key := string(r.Key)
	if addr, err := channel.ParseAddress(key); err == nil {
		m.Address = addr
	} else {
		m.Headers[HeaderBadAddress] = key
	}
	return m
}

// messageID is the message ID of a record: its (last) HeaderID, or
// "topic/partition/offset" when it has none or an empty one.
func messageID(r *kgo.Record) string {
	var id string
	for _, h := range r.Headers {
		if h.Key == HeaderID {
			id = string(h.Value)
		}
	}
	if id == "" {
		id = fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
	}
	return id
}

// foreign reports whether r is off its key's home partition among
// partitions (0: unknown, never foreign).
func foreign(r *kgo.Record, partitions int) bool {
	return partitions > 0 && channel.HomePartition(string(r.Key), partitions) != r.Partition
}

// forwardedBefore reports whether r is a copy written by forwardRecord.
func forwardedBefore(r *kgo.Record) bool {
	for _, h := range r.Headers {
		if h.Key == HeaderForwardedFrom {
			return true
		}
	}
	return false
}

// forwardRecord is the copy of the foreign record r for its home partition
// among partitions: same topic, key, value, timestamp and headers, with one
// HeaderID carrying r's message ID, first, and HeaderForwardedFrom last.
func forwardRecord(r *kgo.Record, partitions int) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+2)
	hs = append(hs, kgo.RecordHeader{Key: HeaderID, Value: []byte(messageID(r))})
	for _, h := range r.Headers {
		if h.Key != HeaderID && h.Key != HeaderForwardedFrom {
			hs = append(hs, h)
		}
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderForwardedFrom, Value: []byte(fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset))})
	return &kgo.Record{
		Topic:     r.Topic,
		Partition: channel.HomePartition(string(r.Key), partitions),
		Key:       r.Key,
		Value:     r.Value,
		Headers:   hs,
		Timestamp: r.Timestamp,
	}
}

// kgoLogger passes franz-go's log to a zap logger: warnings and errors,
// and its info lines too when the logger is at debug level (franz-go's own
// debug lines are too many to be of use).
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel {
	if k.l.Core().Enabled(zapcore.DebugLevel) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelWarn
}

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l := k.l.Sugar()
	msg = "kafka: " + msg
	switch level {
	case kgo.LogLevelError:
		l.Errorw(msg, keyvals...)
	case kgo.LogLevelWarn:
		l.Warnw(msg, keyvals...)
	default:
		l.Debugw(msg, keyvals...)
	}
}
