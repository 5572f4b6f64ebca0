package testenv

import (
	"context"
	"testing"

	goredis "github.com/redis/go-redis/v9"
)

// RedisClient is a plain client on Redis(t), closed when t ends: for a
// test to look behind a backend's API.
func RedisClient(t testing.TB) *goredis.Client {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: Redis(t)})
	t.Cleanup(func() { c.Close() })
	return c
}

// DeleteRedisKeys deletes the keys of c's server that match any of
// patterns (SCAN MATCH syntax), 500 at a time: what a test wrote under key
// tags of its own, on a server other tests share.
func DeleteRedisKeys(ctx context.Context, c *goredis.Client, patterns ...string) error {
	for _, pattern := range patterns {
		var keys []string
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			if err := c.Unlink(ctx, keys[:n]...).Err(); err != nil {
				return err
			}
			keys = keys[n:]
		}
	}
	return nil
}
