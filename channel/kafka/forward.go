package kafka

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Backoff between attempts to forward records whose produce failed.
const (
	forwardBackoffMin = 100 * time.Millisecond
	forwardBackoffMax = 5 * time.Second
)

// forward republishes the claim's foreign records to their home partitions,
// in offset order, until delivery stops; it finishes the produce in flight.
// A record is done once it and every record before it in its batch are
// acknowledged; the rest is produced again, in order, after a backoff. The
// idempotent producer keeps one key's records in order on its home
// partition. A retry may write a record twice, with the same message ID.
func (c *claim) forward() {
	defer close(c.fwdDone)
	backoff := forwardBackoffMin
	for {
		batch, ok := c.takeForward()
		if !ok {
			return
		}
		for len(batch) > 0 {
			n, err := c.produceForward(batch)
			c.forwarded(batch[:n])
			batch = batch[n:]
			if err == nil {
				backoff = forwardBackoffMin
				break
			}
			if c.fwdCtx.Err() != nil || c.isStopped() {
				return
			}
			c.s.log.Warnw("kafka: forwarding records to their home partitions failed; retrying",
				"partition", c.partition, "offset", batch[0].Offset, "records", len(batch), "backoff", backoff, "err", err)
			select {
			case <-time.After(backoff):
			case <-c.stop:
				return
			case <-c.fwdCtx.Done():
				return
			}
			backoff = min(2*backoff, forwardBackoffMax)
		}
	}
}

// takeForward waits for foreign records and takes all of them, or reports
// false once delivery has stopped.
func (c *claim) takeForward() ([]*kgo.Record, bool) {
	for {
		c.mu.Lock()
		if c.stopped || c.state != stateActive {
			c.mu.Unlock()
			return nil, false
		}
		if len(c.toForward) > 0 {
			batch := c.toForward
			c.toForward = nil
			c.resumeIfDrainedLocked()
			c.mu.Unlock()
			return batch, true
		}
		c.mu.Unlock()
		select {
		case <-c.fwdWake:
		case <-c.stop:
		case <-c.fwdCtx.Done():
		}
	}
}

func (c *claim) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// produceForward produces the home-partition copies of recs and returns how
// many of them, from the first, are acknowledged, with the first error.
func (c *claim) produceForward(recs []*kgo.Record) (int, error) {
	copies := make([]*kgo.Record, len(recs))
	for i, r := range recs {
		copies[i] = forwardRecord(r, c.s.partitions)
	}
	// Bounded by a context, not by the client's record delivery timeout:
	// that counts from the record's timestamp, the original's.
	ctx, cancel := context.WithTimeout(c.fwdCtx, c.s.opts.PublishTimeout)
	defer cancel()
	failed := make(map[*kgo.Record]error)
	for _, res := range c.cl.ProduceSync(ctx, copies...) {
		if res.Err != nil {
			failed[res.Record] = res.Err
		}
	}
	for i, cp := range copies {
		if err, ok := failed[cp]; ok {
			return i, err
		}
	}
	return len(recs), nil
}

// forwarded records that recs, taken by takeForward, are on their home
// partitions: their offsets no longer hold back the commit.
func (c *claim) forwarded(recs []*kgo.Record) {
	if len(recs) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, r := range recs {
		if len(c.fwdOpen) > 0 && c.fwdOpen[0] == r.Offset {
			c.fwdOpen = c.fwdOpen[1:] // the usual case: the oldest first
		} else if i, ok := slices.BinarySearch(c.fwdOpen, r.Offset); ok {
			c.fwdOpen = slices.Delete(c.fwdOpen, i, i+1)
		}
	}
}
