package sqlite

// Queries, for tests that check their plans.
var Queries = map[string]string{
	"read":             sqlRead,
	"lastSeq":          sqlLastSeq,
	"outcome":          sqlOutcome,
	"loadCheckpoint":   sqlLoadCheckpoint,
	"horizon":          sqlHorizon,
	"heads":            sqlHeads,
	"pruneCheckpoints": sqlPruneCheckpoints,
	"oldestCheckpoint": sqlOldestCheckpoint,
	"compactDelete":    sqlCompactDelete,
	"compactClear":     sqlCompactClear,
}
