package redis

import "github.com/redis/go-redis/v9"

// The scripts run atomically on the server: no other command runs between
// their reads and their writes. Each declares every key it touches in
// KEYS, all under one hash tag, so they run on Redis Cluster too. The
// shebang line makes Redis (7.0+) refuse a writing script up front when
// it is out of memory, instead of failing it halfway.

// appendScript writes one Append call: every batch in it.
//
// KEYS[1] is the epochs hash and KEYS[2] the horizons hash; actor k
// (1-based) has its entries at KEYS[3k], its outcomes at KEYS[3k+1] and its
// checkpoints at KEYS[3k+2].
//
// ARGV: keep, compact ("1" or "0"), the number of batches, then per batch:
// partition, epoch, number of entries, number of checkpoints, horizon (""
// for none); per entry: actor k, seq, kind, message ID, member; per
// checkpoint: actor k, seq, member. A horizon stays a string throughout:
// a Lua number is a double, and horizons go past 2^53.
//
// It returns {1, fenced partitions...} when it wrote the current batches,
// {2, k, seq, want} for an entry out of sequence, {3, k, seq, last} for a
// checkpoint past its actor's last entry, and {4, k, seq, member} for an
// outcome of a message that has one (member) already, in the store or
// earlier in the call; these three write nothing.
var appendScript = redis.NewScript(`#!lua
local keep = tonumber(ARGV[1])
local compact = ARGV[2] == '1'
local nb = tonumber(ARGV[3])

-- Fencing: which batches carry their partition's current epoch. The
-- horizons of current batches are gathered here, the last one of a
-- partition winning, and written once nothing can refuse the call.
local epochs, seen, fenced = {}, {}, {}
local current, at, ne, nc = {}, {}, {}, {}
local horizons, hp = {}, {}
local i = 4
for b = 1, nb do
	local p, e = ARGV[i], ARGV[i + 1]
	ne[b], nc[b] = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
	local cur = epochs[p]
	if cur == nil then
		cur = redis.call('HGET', KEYS[1], p) or '0'
		epochs[p] = cur
	end
	current[b] = cur == e
	if not current[b] and not seen[p] then
		seen[p] = true
		fenced[#fenced + 1] = p
	end
	local h = ARGV[i + 4]
	if current[b] and h ~= '' then
		if horizons[p] == nil then
			hp[#hp + 1] = p
		end
		horizons[p] = h
	end
	at[b] = i + 5
	i = i + 5 + 5 * ne[b] + 3 * nc[b]
end

-- Sequences: each actor's next seq, from its last entry.
local nxt = {}
local function head(k)
	local v = nxt[k]
	if v == nil then
		local r = redis.call('ZRANGE', KEYS[3 * k], -1, -1, 'WITHSCORES')
		v = 1
		if r[2] then
			v = tonumber(r[2]) + 1
		end
		nxt[k] = v
	end
	return v
end
for b = 1, nb do
	if current[b] then
		local j = at[b]
		for _ = 1, ne[b] do
			local k, seq = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
			local want = head(k)
			if seq ~= want then
				return {2, k, seq, want}
			end
			nxt[k] = want + 1
			j = j + 5
		end
	end
end
for b = 1, nb do
	if current[b] then
		local j = at[b] + 5 * ne[b]
		for _ = 1, nc[b] do
			local k, seq = tonumber(ARGV[j]), tonumber(ARGV[j + 1])
			local last = head(k) - 1
			if seq > last then
				return {3, k, seq, last}
			end
			j = j + 3
		end
	end
end

-- Outcomes, before anything else is written: a message has at most one.
-- HSETNX checks and writes in one command; on a refusal the fields this
-- call set are deleted again, so the call writes nothing.
local set = {}
for b = 1, nb do
	if current[b] then
		local j = at[b]
		for _ = 1, ne[b] do
			local kind = ARGV[j + 2]
			if kind == '3' or kind == '4' then
				local okey = KEYS[3 * tonumber(ARGV[j]) + 1]
				if redis.call('HSETNX', okey, ARGV[j + 3], ARGV[j + 4]) == 0 then
					local first = redis.call('HGET', okey, ARGV[j + 3])
					for n = 1, #set, 2 do
						redis.call('HDEL', set[n], set[n + 1])
					end
					return {4, tonumber(ARGV[j]), tonumber(ARGV[j + 1]), first}
				end
				set[#set + 1] = okey
				set[#set + 1] = ARGV[j + 3]
			end
			j = j + 5
		end
	end
end

-- Entries.
for b = 1, nb do
	if current[b] then
		local j = at[b]
		for _ = 1, ne[b] do
			local k = tonumber(ARGV[j])
			redis.call('ZADD', KEYS[3 * k], ARGV[j + 1], ARGV[j + 4])
			j = j + 5
		end
	end
end

-- Horizons, as the strings they came as.
for _, p in ipairs(hp) do
	redis.call('HSET', KEYS[2], p, horizons[p])
end

-- Checkpoints; since[k] is where the actor's last compaction stopped.
local cpActors, since = {}, {}
for b = 1, nb do
	if current[b] then
		local j = at[b] + 5 * ne[b]
		for _ = 1, nc[b] do
			local k, seq = tonumber(ARGV[j]), ARGV[j + 1]
			local key = KEYS[3 * k + 2]
			if since[k] == nil then
				local r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
				since[k] = r[2] or '0'
				cpActors[#cpActors + 1] = k
			end
			redis.call('ZREMRANGEBYSCORE', key, seq, seq)
			redis.call('ZADD', key, seq, ARGV[j + 2])
			j = j + 3
		end
	end
end

for _, k in ipairs(cpActors) do
	local key = KEYS[3 * k + 2]
	if keep > 0 then
		redis.call('ZREMRANGEBYRANK', key, 0, -(keep + 1))
	end
	if compact then
		local r = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
		local upto = r[2]
		if upto and tonumber(upto) > tonumber(since[k]) then
			-- The last entry stays, whatever its kind: the next
			-- append's sequence check reads it.
			local last = nxt[k] - 1
			local ekey, okey = KEYS[3 * k], KEYS[3 * k + 1]
			local rs = redis.call('ZRANGE', ekey, '(' .. since[k], upto, 'BYSCORE', 'WITHSCORES')
			for n = 1, #rs, 2 do
				local m, score = rs[n], rs[n + 1]
				local kind = string.byte(m, 9)
				if kind == 1 or kind == 2 then
					if tonumber(score) < last then
						redis.call('ZREM', ekey, m)
					end
				elseif string.byte(m, 10) == 1 then
					local ml = string.byte(m, 11) * 256 + string.byte(m, 12)
					local bare = string.sub(m, 1, 9) .. '\0' .. string.sub(m, 11, 12 + ml)
					redis.call('ZREM', ekey, m)
					redis.call('ZADD', ekey, score, bare)
					local msg = string.sub(m, 13, 12 + ml)
					if redis.call('HGET', okey, msg) == m then
						redis.call('HSET', okey, msg, bare)
					end
				end
			end
		end
	end
end

return {1, unpack(fenced)}
`)

// casEpochScript sets field ARGV[1] of the epochs hash KEYS[1] to ARGV[3]
// if it is ARGV[2] now (a missing field is "0"), and returns 1 if it did.
var casEpochScript = redis.NewScript(`#!lua
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if cur ~= ARGV[2] then
	return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`)
