// Package kafka is the Kafka channel: a mailbox is a topic, an actor's
// address is the record key, and the record lands on the key's home
// partition (channel.HomePartition: murmur2, as Kafka's Java client
// computes it).
//
// The Publisher is an idempotent producer with acks=all. The Consumer is a
// consumer-group member with the cooperative-sticky balancer and manual
// commits; each partition it is assigned becomes a channel.Claim, which
// commits the lowest offset that is neither acked nor forwarded.
//
// A record whose key does not hash to its partition (written by a client
// with another partitioner, such as librdkafka's default consistent_random)
// never reaches the host: the consumer copies it to its home partition,
// with HeaderID set to its message ID and HeaderForwardedFrom, and counts
// its offset done once all in-sync replicas have the copy. Forwarded
// records keep their order per key, after what their home partition
// already held. A crash between the copy and the commit forwards it again
// under the same ID, which the host's dedup drops.
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
// Dead letters go to the compacted topic DLQTopic(topic): see DeadLetters.
// EnsureTopics creates both topics.
package kafka

import (
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/postbox-dev/postbox/channel"
)

// Record headers the Kafka channel reads or writes. The Publisher drops
// all but HeaderID from a message's headers, and delivered messages carry
// only HeaderBadAddress of them.
const (
	// HeaderID carries the message ID. A record without it (written by
	// another producer) gets the ID "topic/partition/offset".
	HeaderID = "postbox-id"

	// HeaderForeign is no longer set; it is dropped on delivery.
	//
	// Deprecated: the Consumer forwards records off their home partition
	// itself, and the host never sees them.
	HeaderForeign = "postbox-foreign"

	// HeaderBadAddress carries the record key of a delivered message whose
	// key is not a valid "type/id" address. Such a message has a zero
	// Address; the host should dead-letter it.
	HeaderBadAddress = "postbox-bad-address"

	// HeaderForwardedFrom is the "topic/partition/offset" of the original,
	// on a copy the Consumer forwarded home. A copy that is off its home
	// partition again was forwarded by a consumer that counted the topic's
	// partitions differently (the topic grew): it is delivered where it is,
	// with a warning, so that two such consumers cannot bounce it forever.
	HeaderForwardedFrom = "postbox-forwarded-from"
)

// metadataMinAge is how soon a client may refresh metadata again. A produce
// or fetch that fails on a moved or just-created partition waits for the
// next refresh; franz-go's default (5s) would stall it that long.
const metadataMinAge = 250 * time.Millisecond

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

// ownHeader reports whether k is a header only this package sets.
func ownHeader(k string) bool {
	return k == HeaderID || k == HeaderForeign || k == HeaderBadAddress || k == HeaderForwardedFrom
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
		if !ownHeader(h.Key) {
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

// position is "topic/partition/offset" of r.
func position(r *kgo.Record) string { return fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset) }

// messageID is the message ID of a record: its (last) HeaderID, or its
// position when it has none or an empty one.
func messageID(r *kgo.Record) string {
	var id string
	for _, h := range r.Headers {
		if h.Key == HeaderID {
			id = string(h.Value)
		}
	}
	if id == "" {
		return position(r)
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
	return slices.ContainsFunc(r.Headers, func(h kgo.RecordHeader) bool { return h.Key == HeaderForwardedFrom })
}

// forwardRecord is the copy of the foreign record r for its home partition
// among partitions: r with one HeaderID, first, and HeaderForwardedFrom
// last.
func forwardRecord(r *kgo.Record, partitions int) *kgo.Record {
	hs := make([]kgo.RecordHeader, 0, len(r.Headers)+2)
	hs = append(hs, kgo.RecordHeader{Key: HeaderID, Value: []byte(messageID(r))})
	for _, h := range r.Headers {
		if h.Key != HeaderID && h.Key != HeaderForwardedFrom {
			hs = append(hs, h)
		}
	}
	hs = append(hs, kgo.RecordHeader{Key: HeaderForwardedFrom, Value: []byte(position(r))})
	return &kgo.Record{
		Topic:     r.Topic,
		Partition: channel.HomePartition(string(r.Key), partitions),
		Key:       r.Key,
		Value:     r.Value,
		Headers:   hs,
		Timestamp: r.Timestamp,
	}
}

// kgoLogger passes franz-go's warnings and errors to a zap logger, and its
// info lines when the logger is at debug level (its debug lines are too
// many to be of use).
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
