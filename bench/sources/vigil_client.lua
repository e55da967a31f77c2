-- bench/sources/vigil_client.lua: vigil's side of bench/sources/run, fed to `vigil repl`
-- after a prologue that sets the globals URL, PHASE ("instant" or "range"), N, CONC, WARM.
-- Each top-level statement is its own REPL chunk, hence the globals. Prints one line:
-- RESULT client=vigil phase=... n= errors= wall= cpu= p50= p99= series= points=
-- (seconds; cpu is os.clock(), this process' CPU time, around the timed phase only).
-- luacheck: allow_defined_top, read_globals vigil URL PHASE N CONC WARM
prom = vigil.prom{ url = URL, timeout = "60s", max_concurrency = CONC }

INSTANT = {
  'up',
  'node_load1',
  'sum by (mode) (rate(node_cpu_seconds_total[1m]))',
  'demo_temperature',
  'node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes',
}
RANGE = {
  'rate(node_cpu_seconds_total[1m])',
  'node_load1',
  'demo_temperature',
  'sum by (job) (up)',
}

function one_instant(i)
  return prom:query(INSTANT[(i - 1) % #INSTANT + 1])
end

function one_range(i)
  local now = vigil.now()
  return prom:query_range(RANGE[(i - 1) % #RANGE + 1],
    { start = now - 3600, ["end"] = now, step = "15s" })
end

-- n queries, CONC workers each taking the next index until none is left.
function run(n, one)
  local lat, errs, series, points, first_err, next_i = {}, 0, 0, 0, nil, 0
  local function worker()
    while true do
      next_i = next_i + 1
      local i = next_i
      if i > n then return true end
      local t0 = vigil.now()
      local r, err = one(i)
      lat[i] = vigil.now() - t0
      if r then
        series = series + #r
        for _, s in ipairs(r) do points = points + (s.values and #s.values or 1) end
      else
        errs, first_err = errs + 1, first_err or err
      end
    end
  end
  local w0, c0 = vigil.now(), os.clock()
  local tasks = {}
  for k = 1, CONC do tasks[k] = vigil.spawn(worker) end
  for k = 1, CONC do
    local ok, err = vigil.wait(tasks[k])
    assert(ok, err)
  end
  local wall, cpu = vigil.now() - w0, os.clock() - c0
  table.sort(lat)
  return { n = n, errors = errs, wall = wall, cpu = cpu, first_err = first_err,
    p50 = lat[math.ceil(0.50 * n)], p99 = lat[math.ceil(0.99 * n)],
    series = series / n, points = points / n }
end

one = PHASE == "instant" and one_instant or one_range

-- warm-up (not timed): CONC instant queries at once, so every connection is open
warm = run(WARM, one_instant)
assert(warm.errors == 0, warm.first_err)

R = run(N, one)

print(("RESULT client=vigil phase=%s n=%d errors=%d wall=%.6f cpu=%.6f p50=%.6f p99=%.6f "
  .. "series=%.2f points=%.2f first_error=%q"):format(PHASE, R.n, R.errors, R.wall, R.cpu,
  R.p50, R.p99, R.series, R.points, tostring(R.first_err)))
