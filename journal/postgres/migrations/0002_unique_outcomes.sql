-- A message has at most one outcome: the outcome index becomes unique, and
-- Append maps its violation to journal.ErrDuplicateOutcome. ${schema} and
-- ${prefix} as in 0001.
--
-- Building the index blocks writes to the table while it runs. On a large
-- journal, build it beforehand without blocking, under the same name:
--   CREATE UNIQUE INDEX CONCURRENTLY <prefix>entries_outcome_unique
--     ON <schema>.<prefix>entries (actor, msg_id) WHERE kind IN (3, 4);
-- and this migration then only drops the old index. Either fails if a
-- message already has two outcomes; find them with
--   SELECT actor, msg_id FROM <schema>.<prefix>entries WHERE kind IN (3, 4)
--     GROUP BY 1, 2 HAVING count(*) > 1;
CREATE UNIQUE INDEX IF NOT EXISTS ${prefix}entries_outcome_unique
	ON ${schema}.${prefix}entries (actor, msg_id) WHERE kind IN (3, 4);
DROP INDEX IF EXISTS ${schema}.${prefix}entries_outcome;
