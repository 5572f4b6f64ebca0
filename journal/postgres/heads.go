package postgres

import "sync"

// maxCachedHeads bounds the head cache: about 100 bytes an actor.
const maxCachedHeads = 1 << 17

// headCache remembers actors' last sequences as this process last saw
// them committed, so that Append can check sequences without reading them
// from the database first.
//
// It is safe across processes because it never runs ahead of the
// database: an actor's last sequence there only grows (no write deletes an
// actor's last entry), so a cached value c is at most the real one h. An
// Append that continues from c writes seq c+1 first, and the primary key
// lets that row in only if h == c. So a stale entry can only make Append
// fail, never let a gap or a fork through; and a failed check against the
// cache is checked again against the database before Append reports a
// sequence conflict.
type headCache struct {
	mu sync.Mutex
	m  map[string]int64
}

func newHeadCache() *headCache { return &headCache{m: make(map[string]int64)} }

// lookUp sets next[i] to the cached last seq of actors[i] plus one, and
// returns the indexes of the actors it does not know.
func (c *headCache) lookUp(actors []string, next []int64) (unknown []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range actors {
		if seq, ok := c.m[a]; ok {
			next[i] = seq + 1
		} else {
			unknown = append(unknown, i)
		}
	}
	return unknown
}

// saw records that actor's last seq was seq, committed.
func (c *headCache) saw(actor string, seq int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.m[actor]; ok {
		c.m[actor] = max(cur, seq)
		return
	}
	if len(c.m) >= maxCachedHeads {
		// Forget an arbitrary eighth rather than track recency.
		n := maxCachedHeads / 8
		for a := range c.m {
			delete(c.m, a)
			if n--; n == 0 {
				break
			}
		}
	}
	c.m[actor] = seq
}

// forget drops what the cache knows of actors.
func (c *headCache) forget(actors []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range actors {
		delete(c.m, a)
	}
}
