-- bench/intake/post.lua: the wrk script of bench/intake/run. Every request POSTs a batch of
-- 10 alerts to /api/v2/alerts (Alertmanager's postable alerts), each with label values no
-- other request of the run uses (run tag, thread id, request counter, index), so every alert
-- is new to the daemon.
--
--   wrk -t T -c C -d D -s post.lua URL -- TAG THREADS RATE QUOTA MARKDIR
--
-- TAG      distinguishes runs against the same daemon
-- THREADS  wrk's -t (threads cannot see it otherwise)
-- RATE     0: as fast as the connections go; else the total request rate to pace at: delay()
--          hands every request of a thread the next slot of a schedule of RATE/THREADS per
--          second, so the run keeps that rate whatever the latency, as long as a connection
--          is free
-- QUOTA    0: run for -d; else each thread stops after QUOTA requests answered 2xx and
--          creates MARKDIR/done.<id> (run kills wrk with SIGINT when all have)
--
-- done() prints one line "RESULT key=value ...": wrk's figures (duration and latency in
-- microseconds, after wrk's own coordinated-omission correction) plus the threads' counts.
-- wrk calls these globals and reads the counters with thread:get()
-- luacheck: std luajit, globals setup init delay request response done
-- luacheck: globals id sent ok bad t_first t_quota, read_globals wrk
local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } vb_timespec;
int clock_gettime(int clk, vb_timespec *ts);
]])
local ts = ffi.new("vb_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC: the same clock in every thread
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

-- ---- setup (the main Lua state): number the threads, keep them for done() ----
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

-- ---- running (one Lua state per thread) ----
id = 0 -- set by setup()
sent, ok, bad = 0, 0, 0 -- requests built; answered 2xx; answered otherwise
t_first, t_quota = 0, 0 -- ms: first request built, quota reached
local tag, quota, markdir = "r", 0, "."
local headers = { ["Content-Type"] = "application/json" }
local prefix

function init(args)
  tag = args[1] or "r"
  local nthreads = tonumber(args[2] or "1")
  local rate = tonumber(args[3] or "0")
  quota = tonumber(args[4] or "0")
  markdir = args[5] or "."
  prefix = '{"labels":{"alertname":"BenchIntake","job":"bench","severity":"warning","run":"'
    .. tag .. '","instance":"t' .. id .. "-"
  if rate > 0 then
    local interval = 1000 * nthreads / rate -- ms between two requests of this thread
    local slot
    delay = function()
      local now = now_ms()
      if slot == nil or slot < now - interval then
        slot = now -- behind (no connection was free): no burst to catch up
      end
      slot = slot + interval
      return math.max(0, math.floor(slot - now + 0.5))
    end
  end
  if quota > 0 then
    local stopped = false
    response = function(status)
      if status >= 200 and status < 300 then
        ok = ok + 1
      else
        bad = bad + 1
      end
      if ok >= quota and not stopped then
        stopped = true
        t_quota = now_ms()
        local f = io.open(markdir .. "/done." .. id, "w")
        if f then
          f:close()
        end
        wrk.thread:stop()
      end
    end
  end
end

local parts = {}
function request()
  if sent == 0 then
    t_first = now_ms()
  end
  sent = sent + 1
  for i = 1, 10 do
    parts[i] = prefix
      .. sent
      .. "-"
      .. i
      .. '"},"annotations":{"summary":"intake benchmark alert '
      .. i
      .. ' of request '
      .. sent
      .. '"}}'
  end
  return wrk.format("POST", "/api/v2/alerts", headers, "[" .. table.concat(parts, ",") .. "]")
end

-- ---- done (the main Lua state again) ----
function done(summary, latency)
  local s_sent, s_ok, s_bad, first, last = 0, 0, 0, math.huge, 0
  for _, t in ipairs(threads) do
    s_sent = s_sent + t:get("sent")
    s_ok = s_ok + t:get("ok")
    s_bad = s_bad + t:get("bad")
    local f, q = t:get("t_first"), t:get("t_quota")
    if f > 0 and f < first then
      first = f
    end
    if q > last then
      last = q
    end
  end
  local e = summary.errors
  io.write(
    string.format(
      "RESULT requests=%d duration_us=%d status_errors=%d connect=%d read=%d write=%d"
        .. " timeout=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d sent=%d ok=%d bad=%d"
        .. " quota_ms=%.1f\n",
      summary.requests,
      summary.duration,
      e.status,
      e.connect,
      e.read,
      e.write,
      e.timeout,
      latency:percentile(50),
      latency:percentile(90),
      latency:percentile(99),
      latency.max,
      s_sent,
      s_ok,
      s_bad,
      last > 0 and last - first or 0
    )
  )
end
