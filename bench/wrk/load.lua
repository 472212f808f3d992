-- wrk script of the smsc-ingest benchmark: cycles through pre-generated signed callbacks.
--
--   wrk -t1 -cC -dD --latency -s load.lua URL -- PAYLOADS WINDOW_MS RATE [LIMIT]
--
-- PAYLOADS: one callback a line, "path<TAB>content-type<TAB>body" (bodies hold no tab or newline).
-- WINDOW_MS: requests are only started during this window; wrk's -d is set a little longer so that
--   every request started gets its answer and the count of 200s can be compared with Redis exactly.
-- RATE: requests per second to pace at (a schedule, not a per-connection sleep: the n-th request is
--   due at start + n / RATE, sent at once when late); 0 sends as fast as the server answers.
-- LIMIT: if above 0, start at most this many requests, and end wrk once all have been answered
--   (its -d is then only a bound): with LIMIT = the number of payloads, each is sent exactly once.
-- done() prints one JSON line that bench/wrk.py reads.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
int getpid(void);
int kill(int pid, int sig);
]]
local CLOCK_MONOTONIC = 1
local SIGINT = 2
local clock = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local requests = {}
local count = 0
local next_index = 0
local window_ms = 0
local rate = 0
local started = nil
local scheduled = 0
local limit = 0
local issued = 0
local answered = 0
local IDLE_MS = 3600000

function init(args)
  local path = args[1]
  window_ms = tonumber(args[2])
  rate = tonumber(args[3])
  limit = tonumber(args[4] or "0")
  if limit <= 0 then
    -- wrk reads every answer's headers and body only for a script that has response(): not for
    -- the runs that do not need it.
    response = nil
  end
  for line in io.lines(path) do
    local url, content_type, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    if url then
      count = count + 1
      requests[count] = wrk.format("POST", url, { ["Content-Type"] = content_type }, body)
    end
  end
  if count == 0 then
    error("no payloads in " .. path)
  end
end

function delay()
  local now = now_ms()
  if started == nil then
    started = now
  end
  if now - started >= window_ms then
    return IDLE_MS
  end
  if limit > 0 then
    if issued >= limit then
      return IDLE_MS
    end
    issued = issued + 1
  end
  if rate <= 0 then
    return 0
  end
  local due = started + scheduled * 1000 / rate
  scheduled = scheduled + 1
  if due >= started + window_ms then
    return IDLE_MS
  end
  if due <= now then
    return 0
  end
  return math.floor(due - now)
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end

-- wrk's main thread sleeps for all of -d unless SIGINT wakes it (its Ctrl-C, which still prints the
-- summary): sent to the process, the signal goes to that sleeping main thread.
function response(status, headers, body)
  answered = answered + 1
  if answered == limit then
    ffi.C.kill(ffi.C.getpid(), SIGINT)
  end
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max
  ))
end
