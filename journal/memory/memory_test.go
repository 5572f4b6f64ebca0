package memory_test

import (
	"testing"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/memory"
)

func TestConformance(t *testing.T)                   { conformance(t, journaltest.Defaults) }
func TestConformanceKeepAllCheckpoints(t *testing.T) { conformance(t, journaltest.KeepAll) }

func conformance(t *testing.T, r journaltest.Retention) {
	journaltest.Run(t, r.Features(), func(t *testing.T) journal.Journal {
		return memory.New(memory.Options{KeepCheckpoints: r.KeepCheckpoints})
	})
}
