package redis_test

import (
	"testing"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/redis"
)

// BenchmarkAppend measures group commit against REDIS_ADDR, as
// journaltest.BenchAppend describes. With appendfsync always each Append
// costs one fsync.
func BenchmarkAppend(b *testing.B) {
	journaltest.BenchAppend(b, func(b *testing.B) journal.Journal {
		return mustOpen(b, redis.Options{Namespace: freshNamespace(b)})
	}, nil)
}
