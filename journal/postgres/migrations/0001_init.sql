-- The journal's tables. ${schema} is the quoted schema, ${prefix} the table
-- prefix; Open substitutes both and runs this once, recording version 1.

-- Every entry of every actor. The primary key is what refuses a second
-- writer of one sequence number.
CREATE TABLE ${schema}.${prefix}entries (
	actor  text     NOT NULL,
	seq    bigint   NOT NULL,
	kind   smallint NOT NULL,
	msg_id text     NOT NULL,
	data   bytea,
	CONSTRAINT ${prefix}entries_pkey PRIMARY KEY (actor, seq)
);

-- Dedup by message ID: outcomes (complete, dead-letter) only.
CREATE INDEX ${prefix}entries_outcome
	ON ${schema}.${prefix}entries (actor, msg_id) WHERE kind IN (3, 4);

CREATE TABLE ${schema}.${prefix}checkpoints (
	actor text   NOT NULL,
	seq   bigint NOT NULL,
	state bytea,
	CONSTRAINT ${prefix}checkpoints_pkey PRIMARY KEY (actor, seq)
);

-- Partition epochs. A row with epoch 0 is the same as no row: Append adds
-- one so that it has a row to lock for a partition never acquired.
CREATE TABLE ${schema}.${prefix}epochs (
	partition_id text   NOT NULL,
	epoch        bigint NOT NULL CHECK (epoch >= 0),
	CONSTRAINT ${prefix}epochs_pkey PRIMARY KEY (partition_id)
);
