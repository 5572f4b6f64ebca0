-- Partition horizons (journal.Batch.Horizon): one per partition, beside its
-- epoch; NULL means none. ${schema} and ${prefix} as in 0001.
--
-- A nullable column without a default rewrites no rows. Processes of the
-- previous version name the columns they use, so they keep working on the
-- table beside this one.
ALTER TABLE ${schema}.${prefix}epochs
	ADD COLUMN IF NOT EXISTS horizon bigint CHECK (horizon > 0);
