package redis

import "github.com/redis/go-redis/v9"

// Each script declares every key it touches in KEYS, all under the
// mailbox's hash tag, so they run on Redis Cluster too. The shebang line
// makes Redis refuse a writing script up front when it is out of memory,
// instead of failing it halfway. A script that reads, claims or acks
// entries first checks the partition's lease against the caller's value
// ("<epoch>:<owner>"), and returns 0 and touches nothing when it differs.

// luaPrelude holds the helper the scripts share.
const luaPrelude = `
-- ack acks the entry IDs ARGV[first..] in the group and deletes the
-- entries from the stream (they were delivered to this owner and only it
-- could ack them, so none is still pending elsewhere).
local function ack(stream, group, first)
	for i = first, #ARGV, 1000 do
		local j = math.min(i + 999, #ARGV)
		redis.call('XACK', stream, group, unpack(ARGV, i, j))
		redis.call('XDEL', stream, unpack(ARGV, i, j))
	end
end
`

func newScript(body string) *redis.Script {
	return redis.NewScript("#!lua\n" + luaPrelude + body)
}

// leaseScript is one Tick of the lease keeper (lease.Driver). KEYS: the
// heartbeat sorted set (owner scored by expiry, server ms), the epochs
// hash, then the lease of every partition. ARGV: owner, TTL in ms, "1" to
// take ("0": draining), the number of held partitions, then per held
// partition: partition, lease value. It returns {live consumers, {lost
// partitions}, {taken partition, epoch, ...}}.
var leaseScript = newScript(`
local owner, ttl = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '1' then
	redis.call('ZADD', KEYS[1], now + ttl, owner)
else
	redis.call('ZREM', KEYS[1], owner)
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local live = redis.call('ZCARD', KEYS[1])
local partitions = #KEYS - 2
local target = math.ceil(partitions / math.max(live, 1))
local lost, owned = {}, 0
local held = tonumber(ARGV[4])
for k = 0, held - 1 do
	local p = tonumber(ARGV[5 + 2 * k])
	local key = KEYS[3 + p]
	if redis.call('GET', key) == ARGV[6 + 2 * k] then
		redis.call('PEXPIRE', key, ttl)
		owned = owned + 1
	else
		lost[#lost + 1] = p
	end
end
local taken = {}
if ARGV[3] == '1' then
	for p = 0, partitions - 1 do
		if owned >= target then
			break
		end
		local key = KEYS[3 + p]
		if redis.call('EXISTS', key) == 0 then
			local e = redis.call('HINCRBY', KEYS[2], p, 1)
			redis.call('SET', key, e .. ':' .. owner, 'PX', ttl)
			taken[#taken + 1] = p
			taken[#taken + 1] = e
			owned = owned + 1
		end
	end
end
return {live, lost, taken}
`)

// readScript applies buffered acks and reads the partition's next entries
// into the owner's pending list. KEYS: lease, stream. ARGV: lease value,
// group, consumer, count, after, then the entry IDs to ack. after is the ID
// of the last entry the claim got: an own pending entry beyond it was read
// by a call whose reply was lost, and comes before anything new.
//
// It returns {1} when count is 0, else {1, entries, n, seen, last}: the
// entries in ID order, each {id, {field, value, ...}}; n how many it looked
// at, counting pending ones deleted from the stream (acked and left out);
// seen the ID of the last of them ("" when none); and, when n < count, last
// the ID of the stream's newest entry ("0-0" when empty).
var readScript = newScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
ack(KEYS[2], ARGV[2], 6)
local count = tonumber(ARGV[4])
if count <= 0 then
	return {1}
end
local out, n, seen = {}, 0, ''
local r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', count, 'STREAMS', KEYS[2], ARGV[5])
if r and r[1] then
	for _, e in ipairs(r[1][2]) do
		n = n + 1
		seen = e[1]
		if e[2] then
			out[#out + 1] = e
		else
			-- Deleted from the stream while pending: nothing to deliver.
			redis.call('XACK', KEYS[2], ARGV[2], e[1])
		end
	end
end
if n < count then
	r = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', count - n, 'STREAMS', KEYS[2], '>')
	if r and r[1] and #r[1][2] > 0 then
		local new = r[1][2]
		for _, e in ipairs(new) do
			out[#out + 1] = e
		end
		n = n + #new
		seen = new[#new][1]
	end
end
local last = seen
if n < count then
	local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
	last = '0-0'
	if newest[1] then
		last = newest[1][1]
	end
end
return {1, out, n, seen, last}
`)

// claimScript claims one page of the partition's pending entries, whoever
// holds them, for the new owner (XAUTOCLAIM with min-idle 0). KEYS: lease,
// stream. ARGV: lease value, group, consumer, cursor, count. It returns
// {next cursor, entries} as XAUTOCLAIM does (since Redis 7.0 without the
// entries deleted from the stream). When the scan is complete it drops
// the group's other consumers, which have nothing pending any more.
var claimScript = newScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
local r = redis.call('XAUTOCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'COUNT', ARGV[5])
if r[1] == '0-0' then
	for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[2], ARGV[2])) do
		local name, pending
		for k = 1, #c, 2 do
			if c[k] == 'name' then
				name = c[k + 1]
			elseif c[k] == 'pending' then
				pending = c[k + 1]
			end
		end
		if name and name ~= ARGV[3] and pending == 0 then
			redis.call('XGROUP', 'DELCONSUMER', KEYS[2], ARGV[2], name)
		end
	end
end
return {r[1], r[2]}
`)

// ackScript applies buffered acks, and on release drops the lease. KEYS:
// lease, stream. ARGV: lease value, group, "1" to drop the lease, then the
// entry IDs to ack. It returns 1.
var ackScript = newScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
ack(KEYS[2], ARGV[2], 4)
if ARGV[3] == '1' then
	redis.call('DEL', KEYS[1])
end
return 1
`)

// dlqPutScript stores a dead letter, replacing the one of the same ID.
//
// KEYS: the dead-letter stream, its index hash (dead-letter ID to entry
// ID). ARGV: dead-letter ID, envelope JSON. It returns the new entry ID.
var dlqPutScript = newScript(`
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
	redis.call('XDEL', KEYS[1], old)
end
local id = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'envelope', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
`)

// dlqPurgeScript deletes the dead letters with the IDs in ARGV, or all of
// them when ARGV is empty, and returns how many it deleted.
//
// KEYS: the dead-letter stream, its index hash.
var dlqPurgeScript = newScript(`
if #ARGV == 0 then
	local n = redis.call('HLEN', KEYS[2])
	redis.call('DEL', KEYS[1], KEYS[2])
	return n
end
local n = 0
for _, id in ipairs(ARGV) do
	local e = redis.call('HGET', KEYS[2], id)
	if e then
		redis.call('XDEL', KEYS[1], e)
		redis.call('HDEL', KEYS[2], id)
		n = n + 1
	end
end
return n
`)

var allScripts = []*redis.Script{leaseScript, readScript, claimScript, ackScript, dlqPutScript, dlqPurgeScript}
