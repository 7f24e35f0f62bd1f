/**
 * The Lua scripts that change job and task records. Redis runs each one
 * atomically, so a state check and the writes it guards cannot interleave
 * with another process's: this is what makes transitions "checked" (nothing
 * leaves a final state) and task commits "once" (fenced by the attempt's lease).
 *
 * Keys are built inside the scripts from the deployment prefix (ARGV[1]), so
 * the jobs layer needs one Redis, not Redis Cluster (docs/OPERATIONS.md).
 */

const FINAL = `local function final(s) return s == 'succeeded' or s == 'failed' or s == 'cancelled' end`;

/**
 * Creates a job unless its id exists (idempotent submit: SET NX semantics).
 * ARGV: prefix, id, kind, fields (JSON object of strings), priority, event data.
 * Returns 1 when created, 0 when the id was taken.
 */
export const SUBMIT = `
local P, id, kind = ARGV[1], ARGV[2], ARGV[3]
local jk = P .. ':job:' .. id
if redis.call('EXISTS', jk) == 1 then return 0 end
local seq = redis.call('INCR', P .. ':seq')
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', jk, k, v) end
redis.call('HSET', jk, 'id', id, 'kind', kind, 'state', 'queued', 'seq', seq,
  'nsucceeded', 0, 'nfailed', 0, 'ncancelled', 0)
redis.call('ZADD', P .. ':jobs', seq, id)
redis.call('ZADD', P .. ':jobs:state:queued', seq, id)
redis.call('ZADD', P .. ':jobs:kind:' .. kind, seq, id)
-- Admission order: higher priority first, then submit order (seq < 2^32).
redis.call('ZADD', P .. ':admit', -tonumber(ARGV[5]) * 4294967296 + seq, id)
redis.call('XADD', jk .. ':events', '*', 'type', 'state', 'data', ARGV[6])
return 1
`;

/**
 * Moves a job to state ARGV[3] if it is not final and (when ARGV[4] is not
 * empty) its state is one of the space-separated ARGV[4]; sets the fields in
 * ARGV[5] (JSON), deletes those named in ARGV[6], keeps the indexes in step
 * and appends the state event ARGV[7]. Returns 1 when done, 0 when refused,
 * -1 when there is no such job.
 */
export const TRANSITION = `
${FINAL}
local P, id, to = ARGV[1], ARGV[2], ARGV[3]
local jk = P .. ':job:' .. id
local st = redis.call('HGET', jk, 'state')
if not st then return -1 end
if final(st) then return 0 end
if ARGV[4] ~= '' and not string.find(' ' .. ARGV[4] .. ' ', ' ' .. st .. ' ', 1, true) then return 0 end
for k, v in pairs(cjson.decode(ARGV[5])) do redis.call('HSET', jk, k, v) end
for k in string.gmatch(ARGV[6], '%S+') do redis.call('HDEL', jk, k) end
redis.call('HSET', jk, 'state', to)
if st ~= to then
  local seq = redis.call('HGET', jk, 'seq')
  redis.call('ZREM', P .. ':jobs:state:' .. st, id)
  redis.call('ZADD', P .. ':jobs:state:' .. to, seq, id)
end
if to ~= 'queued' then redis.call('ZREM', P .. ':admit', id) end
if to == 'running' then redis.call('SADD', P .. ':running', id) end
if final(to) then redis.call('SREM', P .. ':running', id) end
redis.call('XADD', jk .. ':events', '*', 'type', 'state', 'data', ARGV[7])
return 1
`;

/**
 * Sets a queued or running job's reason (what it waits for) without an event,
 * only while it is still in state ARGV[3]. ARGV: prefix, id, state, reason.
 */
export const NOTE = `
local jk = ARGV[1] .. ':job:' .. ARGV[2]
if redis.call('HGET', jk, 'state') ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'reason', ARGV[4])
return 1
`;

/**
 * Changes one task record. ARGV: prefix, job id, index, mode, lease, fields (JSON).
 * Modes:
 *   place  (scheduler) the job must be running; records node and placement
 *          (only the placement once an agent has claimed the task: the add races the record).
 *   claim  (agent, before running) the job must be running; a new attempt:
 *          attempts + 1, lease := ARGV[5]. Returns the attempt number.
 *   commit (agent, after running) only while ARGV[5] still holds the lease:
 *          a stalled duplicate whose lease was taken over commits nothing.
 *   retry  (agent, a failed attempt that BullMQ will retry) same fence.
 *   settle (no lease) for a task whose attempt is gone: stalled too often,
 *          or its job ended before it ran.
 *   requeue (scheduler, no lease) back to waiting, for a task stranded on a
 *          node whose agent is gone; the caller drops the lease, so an attempt
 *          still alive there can no longer commit.
 * A field set to '' is deleted. Nothing changes a task in a final state. A final task state counts once in
 * the job's n<state> field and drops the lease. Appends a task event.
 * A field 'gang' (train ranks) must equal the job's current group attempt, else -3
 * (the group was restarted since that rank was placed).
 * Returns >= 1 when done, 0 when fenced off, -1 no job, -2 job not running, -3 stale attempt.
 */
export const TASK = `
${FINAL}
local P, id, i, mode, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jk = P .. ':job:' .. id
local tk = jk .. ':task:' .. i
local js = redis.call('HGET', jk, 'state')
if not js then return -1 end
-- A task without a record has not been placed yet: it is waiting.
local ts = redis.call('HGET', tk, 'state') or 'waiting'
if final(ts) then return 0 end
local f = cjson.decode(ARGV[6])
-- A rank of a train job carries its group attempt: one of an attempt since restarted touches nothing.
if f['gang'] and f['gang'] ~= redis.call('HGET', jk, 'gang') then return -3 end
local out = 1
if mode == 'place' and ts ~= 'waiting' then
  -- The agent claimed it between the scheduler's add and this record: keep its state and node.
  f['state'] = nil
  f['node'] = nil
end
if mode == 'place' or mode == 'claim' then
  if js ~= 'running' then return -2 end
  if mode == 'claim' then
    out = redis.call('HINCRBY', tk, 'attempts', 1)
    redis.call('HSET', tk, 'lease', lease)
  end
elseif mode == 'commit' or mode == 'retry' then
  if redis.call('HGET', tk, 'lease') ~= lease then return 0 end
elseif mode == 'requeue' then
  if js ~= 'running' then return -2 end
elseif mode ~= 'settle' then
  return redis.error_reply('unknown task mode ' .. mode)
end
for k, v in pairs(f) do
  if v == '' then redis.call('HDEL', tk, k) else redis.call('HSET', tk, k, v) end
end
local st = redis.call('HGET', tk, 'state')
if final(st) then
  redis.call('HINCRBY', jk, 'n' .. st, 1)
  redis.call('HDEL', tk, 'lease')
end
redis.call('HSETNX', tk, 'attempts', 0)
-- The event carries the whole TaskInfo (what GET /v1/jobs/:id lists per task), so a follower needs no read.
local ev = { index = tonumber(i), state = st, node = redis.call('HGET', tk, 'node') or '',
  attempts = tonumber(redis.call('HGET', tk, 'attempts') or '0'),
  bytesLocal = tonumber(redis.call('HGET', tk, 'bytesLocal') or '0'),
  bytesMoved = tonumber(redis.call('HGET', tk, 'bytesMoved') or '0') }
local why = redis.call('HGET', tk, 'placement')
if why then ev['placement'] = { reason = why } end
local err = redis.call('HGET', tk, 'error')
if err then ev['error'] = cjson.decode(err) end
redis.call('XADD', jk .. ':events', '*', 'type', 'task', 'data', cjson.encode(ev))
return out
`;

/**
 * Restarts a train job's group: only while the job runs and its attempt is
 * still ARGV[3] (two schedulers or two causes restart it once). Every task
 * record goes (all ranks wait again; their leases go with them, so no
 * attempt of the old group can commit), the counters return to 0, the
 * attempt and the restart count go up, the old assignment is dropped and a
 * state event ARGV[5] is appended. ARGV: prefix, id, attempt, ntasks, event.
 * Returns the old tasks' nodes (index i+1 holds task i's, '' when it was
 * never placed), or false when refused.
 */
export const RESTART = `
local P, id, attempt, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local jk = P .. ':job:' .. id
if redis.call('HGET', jk, 'state') ~= 'running' then return false end
if redis.call('HGET', jk, 'gang') ~= attempt then return false end
local nodes = {}
for i = 0, n - 1 do
  local tk = jk .. ':task:' .. i
  nodes[i + 1] = redis.call('HGET', tk, 'node') or ''
  redis.call('DEL', tk)
end
redis.call('HSET', jk, 'nsucceeded', 0, 'nfailed', 0, 'ncancelled', 0, 'gang', tonumber(attempt) + 1)
redis.call('HINCRBY', jk, 'restarts', 1)
redis.call('HDEL', jk, 'assign')
redis.call('XADD', jk .. ':events', '*', 'type', 'state', 'data', ARGV[5])
return nodes
`;
