package kafka

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/postbox-dev/postbox/channel"
	"github.com/postbox-dev/postbox/channel/internal/runonce"
)

// commitTimeout bounds one offset commit.
const commitTimeout = 10 * time.Second

// Consumer consumes one topic as a member of the consumer group
// Options.Group; each partition assigned to it becomes a channel.Claim. A
// revoked partition is let go once its claim is released and its forward
// in flight is done, or after Options.RevokeTimeout. When the group drops
// the consumer without a revocation (no heartbeat for
// Options.SessionTimeout), Lost closes and nothing more is committed.
type Consumer struct {
	brokers []string
	topic   string
	opts    Options

	run runonce.Gate

	mu         sync.Mutex
	partitions int // the topic's partition count, once Run has looked it up
}

var _ channel.Consumer = (*Consumer)(nil)

// OpenConsumer returns a Consumer of topic on the given brokers
// ("host:port"). It does not connect until Run.
func OpenConsumer(brokers []string, topic string, opts Options) (*Consumer, error) {
	opts = opts.WithDefaults()
	if opts.Group == "" {
		opts.Group = "postbox." + topic
	}
	if err := opts.validate(brokers, topic); err != nil {
		return nil, err
	}
	return &Consumer{brokers: brokers, topic: topic, opts: opts}, nil
}

// Backend returns "kafka".
func (c *Consumer) Backend() string { return "kafka" }

// Mailbox returns "kafka:" and the topic.
func (c *Consumer) Mailbox() string { return "kafka:" + c.topic }

// Partitions returns the topic's partition count Run judges home
// partitions by, as it saw it when it started; 0 until then.
func (c *Consumer) Partitions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.partitions
}

// Run implements channel.Consumer. Stopping, it leaves the group, which
// revokes every claim. It returns an error at once if the topic does not
// exist or the brokers cannot be reached.
func (c *Consumer) Run(ctx context.Context, onClaim func(channel.Claim)) error {
	if onClaim == nil {
		return errors.New("kafka: Consumer.Run needs an onClaim function")
	}
	ctx, end, err := c.run.Begin(ctx)
	if err != nil {
		return fmt.Errorf("kafka: consumer run: %w", err)
	}
	defer end()

	lookup, err := kgo.NewClient(c.opts.clientOpts(c.brokers)...)
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	partitions, err := partitionsOf(ctx, lookup, c.brokers, c.topic)
	lookup.Close()
	if err != nil {
		if ctx.Err() != nil {
			return nil // cancelled or closed before joining
		}
		return fmt.Errorf("kafka: %w", err)
	}
	c.mu.Lock()
	c.partitions = partitions
	c.mu.Unlock()
	s := &session{
		topic:      c.topic,
		opts:       c.opts,
		log:        c.opts.Logger.Sugar().With("topic", c.topic, "group", c.opts.Group),
		partitions: partitions,
		onClaim:    onClaim,
		claims:     make(map[int32]*claim),
	}
	// RequiredAcks and a manual partitioner: for forwarding foreign records.
	s.cl, err = kgo.NewClient(c.opts.clientOpts(c.brokers,
		kgo.ConsumerGroup(c.opts.Group),
		kgo.ConsumeTopics(c.topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
		kgo.SessionTimeout(c.opts.SessionTimeout),
		kgo.RebalanceTimeout(c.opts.RebalanceTimeout),
		kgo.FetchMaxWait(c.opts.FetchMaxWait),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)...)
	if err != nil {
		return fmt.Errorf("kafka: consumer of %s: %w", c.topic, err)
	}

	var committing sync.WaitGroup
	committing.Go(func() { s.commitLoop(ctx) })
	s.poll(ctx)
	committing.Wait()
	s.shutdown()
	return nil
}

// Close implements channel.Consumer.
func (c *Consumer) Close() error {
	c.run.Close()
	return nil
}

// session is one Run: the group member's client and its claims.
type session struct {
	topic      string
	opts       Options
	log        *zap.SugaredLogger
	partitions int // the topic's partition count when Run started
	onClaim    func(channel.Claim)
	cl         *kgo.Client

	mu     sync.Mutex
	claims map[int32]*claim // the partitions this member owns now

	forwarders sync.WaitGroup // the claims' forward goroutines

	// commitMu orders commits with revocation: once a revocation has
	// committed a partition and let it go, no commit of it is in flight
	// or issued later.
	commitMu sync.Mutex

	// Claims released while their partitions stay assigned, for the poll
	// loop to claim again: only it may move a partition's fetch position
	// without racing a fetch in hand.
	reclaimMu sync.Mutex
	reclaims  []*claim
	wakePoll  context.CancelFunc // ends the poll in progress
}

// poll fetches records and hands them to their claims until ctx ends.
func (s *session) poll(ctx context.Context) {
	for {
		s.reclaimMu.Lock()
		if len(s.reclaims) > 0 {
			s.reclaimMu.Unlock()
			s.reclaimReleased()
			continue
		}
		pollCtx, wake := context.WithCancel(ctx)
		s.wakePoll = wake
		s.reclaimMu.Unlock()
		fetches := s.cl.PollRecords(pollCtx, s.opts.BufferSize)
		wake()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.Canceled) {
				s.log.Warnw("kafka: fetch failed; retrying", "partition", partition, "err", err)
			}
		})
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			s.mu.Lock()
			c := s.claims[p.Partition]
			s.mu.Unlock()
			if c == nil {
				return // revoked meanwhile; the next owner fetches it again
			}
			msgs := make([]channel.Message, 0, len(p.Records))
			var foreigners []*kgo.Record
			for _, r := range p.Records {
				switch {
				case !foreign(r, s.partitions):
					msgs = append(msgs, message(r))
				case forwardedBefore(r):
					s.log.Warnw("kafka: a record forwarded once is off its home partition again: consumers count the topic's partitions differently (did it grow? restart them); delivering it here",
						"partition", r.Partition, "offset", r.Offset, "key", string(r.Key), "partitions", s.partitions)
					msgs = append(msgs, message(r))
				default:
					foreigners = append(foreigners, r)
				}
			}
			c.push(msgs, foreigners)
		})
	}
}

// reclaimLater asks the poll loop to claim c's partition again, if it is
// still assigned once c is released.
func (s *session) reclaimLater(c *claim) {
	s.reclaimMu.Lock()
	s.reclaims = append(s.reclaims, c)
	wake := s.wakePoll
	s.reclaimMu.Unlock()
	if wake != nil {
		wake()
	}
}

// reclaimReleased gives each partition whose claim was released while it
// stayed assigned a new claim, from the old claim's commit point. It runs
// on the poll goroutine between polls, so no fetch of the old position is
// in hand when it moves.
func (s *session) reclaimReleased() {
	s.reclaimMu.Lock()
	released := s.reclaims
	s.reclaims = nil
	s.reclaimMu.Unlock()
	for _, old := range released {
		p := old.partition
		s.mu.Lock()
		if s.claims[p] != old {
			s.mu.Unlock()
			continue // revoked, lost or ended meanwhile
		}
		c := newClaim(s, old.cl, p)
		s.claims[p] = c
		s.mu.Unlock()
		old.setState(stateGone)
		at, ok := old.restartAt()
		if ok {
			old.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{s.topic: {p: {Epoch: -1, Offset: at}}})
		}
		old.cl.ResumeFetchPartitions(map[string][]int32{s.topic: {p}})
		s.log.Infow("kafka: a claim was released while its partition stayed assigned; claiming it again",
			"partition", p, "from_offset", at)
		go c.pump()
		s.forwarders.Go(c.forward)
		go s.onClaim(c)
	}
}

// assigned starts a claim for every newly assigned partition. Fetching of a
// partition starts only after this returns.
func (s *session) assigned(_ context.Context, cl *kgo.Client, tps map[string][]int32) {
	// A pause outlives the claim that set it; a new claim starts unpaused.
	cl.ResumeFetchPartitions(map[string][]int32{s.topic: tps[s.topic]})
	for _, p := range tps[s.topic] {
		c := newClaim(s, cl, p)
		s.mu.Lock()
		old := s.claims[p]
		s.claims[p] = c
		s.mu.Unlock()
		if old != nil { // assigned twice without a revocation between
			old.setState(stateGone)
			old.stopDelivery()
		}
		go c.pump()
		s.forwarders.Go(c.forward)
		go s.onClaim(c)
	}
}

// take removes the claims of partitions from the session.
func (s *session) take(partitions []int32) []*claim {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cs []*claim
	for _, p := range partitions {
		if c := s.claims[p]; c != nil {
			cs = append(cs, c)
			delete(s.claims, p)
		}
	}
	return cs
}

// revoked ends the claims of revoked partitions and commits what they
// acked before it returns and the partitions go to their next owner.
func (s *session) revoked(_ context.Context, cl *kgo.Client, tps map[string][]int32) {
	cs := s.take(tps[s.topic])
	if len(cs) == 0 {
		return
	}
	for _, c := range cs {
		c.stopDelivery()
	}
	deadline := time.After(s.opts.RevokeTimeout)
wait:
	for _, c := range cs {
		for _, ch := range []chan struct{}{c.released, c.fwdDone} {
			select {
			case <-ch:
			case <-deadline:
				s.log.Warnw("kafka: revoked claims were not released in time; committing what was acked and forwarded", "timeout", s.opts.RevokeTimeout)
				break wait
			}
		}
	}

	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	if err := s.commitLocked(ctx, cs); err != nil {
		s.log.Warnw("kafka: commit of revoked partitions failed; their unacked messages will be redelivered", "err", err)
	}
	for _, c := range cs {
		c.setState(stateGone)
	}
	cl.ResumeFetchPartitions(map[string][]int32{s.topic: tps[s.topic]})
}

// lost ends the claims of partitions the group took away without a
// revocation: Lost and Messages close and nothing more is committed.
func (s *session) lost(_ context.Context, cl *kgo.Client, tps map[string][]int32) {
	cs := s.take(tps[s.topic])
	s.commitMu.Lock()
	for _, c := range cs {
		c.setState(stateLost)
	}
	s.commitMu.Unlock()
	for _, c := range cs {
		c.stopDelivery()
	}
	if len(cs) > 0 {
		s.log.Warnw("kafka: partitions lost; their claims end without committing", "count", len(cs))
	}
	cl.ResumeFetchPartitions(map[string][]int32{s.topic: tps[s.topic]})
}

// commitLoop commits what active claims acked every CommitInterval until
// ctx ends.
func (s *session) commitLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.opts.CommitInterval):
		}
		s.commitMu.Lock()
		s.mu.Lock()
		cs := slices.Collect(maps.Values(s.claims))
		s.mu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, commitTimeout)
		err := s.commitLocked(cctx, cs)
		cancel()
		s.commitMu.Unlock()
		if err != nil && ctx.Err() == nil {
			s.log.Warnw("kafka: background commit failed; retrying", "err", err)
		}
	}
}

// commitLocked commits, for each of cs that may still commit, its acked
// offset if it is ahead of the committed one. The caller holds commitMu.
func (s *session) commitLocked(ctx context.Context, cs []*claim) error {
	offsets := make(map[int32]kgo.EpochOffset)
	for _, c := range cs {
		if off, ok := c.toCommit(); ok {
			offsets[c.partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	var errs []error
	// The claims' client: a callback may run before Run has stored s.cl.
	cs[0].cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{s.topic: offsets},
		func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
			if err != nil {
				errs = append(errs, err)
				clear(offsets) // none committed
				return
			}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
						errs = append(errs, fmt.Errorf("partition %d: %w", p.Partition, err))
						delete(offsets, p.Partition)
					}
				}
			}
		})
	for _, c := range cs {
		if eo, ok := offsets[c.partition]; ok {
			c.committedUpTo(eo.Offset)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("kafka: commit offsets of %s: %w", s.topic, err)
	}
	return nil
}

// shutdown leaves the group, which revokes every claim (see revoked), and
// closes the client. It runs after poll has returned.
func (s *session) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RevokeTimeout+2*commitTimeout)
	defer cancel()
	if err := s.cl.LeaveGroupContext(ctx); err != nil {
		s.log.Warnw("kafka: leaving the group failed; its partitions move on after the session timeout", "err", err)
	}
	s.cl.Close()
	// Leaving revoked every claim; end any that slipped through.
	s.mu.Lock()
	cs := slices.Collect(maps.Values(s.claims))
	clear(s.claims)
	s.mu.Unlock()
	for _, c := range cs {
		c.setState(stateGone)
		c.stopDelivery()
	}
	s.forwarders.Wait()
}
