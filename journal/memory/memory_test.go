package memory_test

import (
	"testing"

	"github.com/postbox-dev/postbox/journal"
	"github.com/postbox-dev/postbox/journal/journaltest"
	"github.com/postbox-dev/postbox/journal/memory"
)

func TestConformance(t *testing.T) {
	journaltest.Run(t, journaltest.Features{KeepCheckpoints: memory.DefaultKeepCheckpoints}, func(t *testing.T) journal.Journal {
		return memory.New(memory.Options{})
	})
}

func TestConformanceKeepAllCheckpoints(t *testing.T) {
	journaltest.Run(t, journaltest.Features{}, func(t *testing.T) journal.Journal {
		return memory.New(memory.Options{KeepCheckpoints: -1})
	})
}
