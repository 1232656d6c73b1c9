//! The Lua scripts: each runs atomically in Redis, so offsets and epochs need no lock
//! anywhere else, and a publish costs one round trip (`EVALSHA`).

/// Numbers a message and hands it to every node.
///
/// KEYS: seq, epoch, log. ARGV: 1 floor (the newest offset the publishing node has
/// seen: the new offset is above it even if Redis lost the counter), 2 a fresh epoch
/// (used if the room has none yet), 3 history size (stream bound; 0 keeps none),
/// 4 time to live in ms of the room's keys, 5 the room's channel, 6 the message body as a
/// JSON object without its opening brace.
///
/// The payload is assembled here, by concatenation, so that the offset and epoch are in
/// the very bytes stored and published; the body's own JSON is never re-encoded (Lua's
/// cjson would turn large integers into floats). Returns `{offset, epoch}`.
pub const PUBLISH: &str = r#"
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if floor > seq then seq = floor end
seq = seq + 1
redis.call('SET', KEYS[1], seq, 'PX', ARGV[4])
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[2]
  redis.call('DEL', KEYS[3])
end
redis.call('SET', KEYS[2], epoch, 'PX', ARGV[4])
local id = string.format('%d', seq)
local payload = '{"k":"m","o":' .. id .. ',"e":"' .. epoch .. '",' .. ARGV[6]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id .. '-0', 'm', payload)
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], payload)
return {seq, epoch}
"#;

/// A room as the cluster knows it: epoch (created if missing), latest offset, newest
/// messages and members.
///
/// KEYS: seq, epoch, log, members, params. ARGV: 1 a fresh epoch, 2 how many messages,
/// 3 a floor when the calling node served the room alone during an outage (empty
/// otherwise), 4 time to live in ms, 5 with a floor: the epoch the node left.
///
/// A room without an epoch, or still in the epoch a diverged node left, starts a new
/// epoch with an empty log whose offsets continue above the floor. A room whose epoch
/// already changed since (another node came back first, or Redis lost its data) keeps
/// it and its log: the node joins it, the offsets raised above its floor.
/// Returns `{epoch, offset, {payload…} newest first, {member JSON…}, {param JSON…}}`.
pub const POSITION: &str = r#"
local epoch = redis.call('GET', KEYS[2])
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = -1
if ARGV[3] ~= '' then floor = tonumber(ARGV[3]) end
if not epoch or (floor >= 0 and epoch == ARGV[5]) then
  epoch = ARGV[1]
  if floor > seq then seq = floor end
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[1], seq, 'PX', ARGV[4])
  redis.call('SET', KEYS[2], epoch, 'PX', ARGV[4])
elseif floor > seq then
  seq = floor
  redis.call('SET', KEYS[1], seq, 'PX', ARGV[4])
end
local out = {}
local entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])
for i, e in ipairs(entries) do
  out[i] = e[2][2]
end
return {epoch, string.format('%d', seq), out, redis.call('HVALS', KEYS[4]), redis.call('HVALS', KEYS[5])}
"#;

/// Defines a room unless the cluster already has one of that id.
///
/// KEYS: def, members. ARGV: 1 the room object (JSON), 2 its time to live in ms (empty:
/// none). Returns 1 when defined, 0 when a definition or members already exist.
pub const DEFINE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HLEN', KEYS[2]) > 0 then
  return 0
end
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
"#;

/// A member joins or leaves a room on some node: the room's member hash and per-client
/// counts change together, the change goes out on the room's channel, and the caller
/// learns what it did cluster-wide (for lifecycle events, reported once).
///
/// KEYS: members, clients. ARGV: 1 `1` to join, `0` to leave, 2 connection id, 3 the
/// member entry (JSON, joins only), 4 client id, 5 time to live in ms, 6 the room's
/// channel, 7 the presence payload, 8 a member limit (empty: none): a join of a new
/// member into a room with that many members changes nothing and returns `changed` -1.
/// Returns `{changed, room members, client's members}`.
pub const PRESENCE: &str = r#"
local changed
if ARGV[1] == '1' and ARGV[8] ~= '' and redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[8]) then
  return {-1, redis.call('HLEN', KEYS[1]), tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')}
end
if ARGV[1] == '1' then
  changed = redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  if changed == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
  end
else
  changed = redis.call('HDEL', KEYS[1], ARGV[2])
  if changed == 1 and redis.call('HINCRBY', KEYS[2], ARGV[4], -1) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[4])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {changed, redis.call('HLEN', KEYS[1]), tonumber(redis.call('HGET', KEYS[2], ARGV[4]) or '0')}
"#;
