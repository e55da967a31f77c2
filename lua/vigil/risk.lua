-- vigil.risk: the seed's incident risk score (0-100 from the error-rate trend, CPU, memory and
-- recent critical incidents, with a level and mitigations), on top of vigil.detect's forecast,
-- and the seed's per-metric isolation forest (metric_anomalies). Documented in
-- docs/lua-api.md and docs/detectors.md ("Incident risk").
local detect = require("vigil.detect")

local M = {}

-- Points each factor can give; the score is their sum, capped at 100. The seed's weights:
-- 30 for the error-rate trend, 25 each for CPU and memory, 20 per recent critical incident.
M.WEIGHTS = { error_rate_trend = 30, cpu = 25, memory = 25, critical_incident = 20 }

-- Levels from the score, highest first (the seed's tiers).
M.LEVELS = { { "critical", 80 }, { "high", 60 }, { "medium", 40 } }

-- When a factor earns a recommendation: utilisation at or above 80 % (the seed's), an error
-- rate whose fitted rise over the window is at least 10 % of its mean, more than 3 critical
-- incidents (the seed's).
local HIGH_UTILISATION, RISING_ERRORS, MANY_INCIDENTS = 0.8, 0.1, 3

local KNOWN = { error_rates = true, cpu = true, memory = true, critical_incidents = true,
  percent = true, error_floor = true }

-- A caller's mistake found deep in the helpers; the public functions re-raise it at their
-- caller's level as "bad argument #arg to 'name' (msg)".
local Mistake = {}

local function bad(fmt, ...)
  error(setmetatable({ msg = fmt:format(...), arg = 1 }, Mistake))
end

local function bad_opt(fmt, ...)
  error(setmetatable({ msg = fmt:format(...), arg = 2 }, Mistake))
end

-- Calls fn(...) and returns its results; a Mistake becomes the caller's error (level 3: the
-- caller of the public function that called this).
local function guarded(name, fn, ...)
  local r = table.pack(pcall(fn, ...))
  if r[1] then return table.unpack(r, 2, r.n) end
  local e = r[2]
  if getmetatable(e) == Mistake then
    error(("bad argument #%d to '%s' (%s)"):format(e.arg, name, e.msg), 3)
  end
  error(e, 0)
end

local function round2(x)
  return math.floor(x * 100 + 0.5) / 100
end

local function finite(x)
  return x == x and x ~= math.huge and x ~= -math.huge
end

-- The finite points of a series given as an array of numbers, a matrix entry of vigil.prom
-- ({ labels, ts, values }) or a query result holding exactly one such entry. Returns
-- { values, times (nil for a plain array), index (each kept point's position in the input),
-- dropped (how many non-finite points, Prometheus' NaN, were left out), total }.
local function series_of(v, what)
  if type(v) ~= "table" then
    bad("%s: an array of numbers or a vigil.prom series expected, got %s", what, type(v))
  end
  local vals, ts = v, nil
  if type(v.values) == "table" then
    vals, ts = v.values, v.ts
  elseif type(v[1]) == "table" then
    if #v ~= 1 then
      bad("%s: a query result with %d series; pass one of them", what, #v)
    end
    return series_of(v[1], what)
  end
  if ts ~= nil and (type(ts) ~= "table" or #ts ~= #vals) then
    bad("%s: %d times for %d values", what, type(ts) == "table" and #ts or 0, #vals)
  end
  local out = { values = {}, times = ts and {}, index = {}, dropped = 0, total = #vals }
  for i = 1, #vals do
    local x = vals[i]
    if type(x) ~= "number" then
      bad("%s: value %d is a %s, not a number", what, i, type(x))
    end
    if finite(x) then
      local k = #out.values + 1
      out.values[k], out.index[k] = x, i
      if ts then
        local t = ts[i]
        if type(t) ~= "number" or not finite(t) then
          bad("%s: time %d is not a finite number", what, i)
        end
        out.times[k] = t
      end
    else
      out.dropped = out.dropped + 1
    end
  end
  return out
end

local function not_counted(name, detail)
  local max = M.WEIGHTS[name]
  return { name = name, points = 0, max = max, counted = false, detail = detail }
end

-- The error-rate trend: the rise of the fitted line (vigil.detect.forecast, linear) from the
-- first to the last point, relative to the series' mean (or error_floor when that is larger,
-- so that noise near zero does not count as a surge). A rise as large as the mean (1, 2, 3) or
-- larger gives all 30 points; a flat or falling rate gives none.
local function error_trend(v, floor)
  local name = "error_rate_trend"
  if v == nil then return not_counted(name, "not given") end
  local ser = series_of(v, "error_rates")
  local xs, ts, dropped = ser.values, ser.times, ser.dropped
  local note = dropped > 0 and (" (%d non-finite points dropped)"):format(dropped) or ""
  if #xs < 3 then
    return not_counted(name, ("3 points needed, got %d%s"):format(#xs, note))
  end
  local sum = 0
  for i, x in ipairs(xs) do
    if x < 0 then bad("error_rates: value %d is negative (%g)", ser.index[i], x) end
    sum = sum + x
    if ts and i > 1 and ts[i] <= ts[i - 1] then
      bad("error_rates: times must increase (time %d)", ser.index[i])
    end
  end
  local f = detect.forecast(xs, { times = ts })
  local span = ts and ts[#ts] - ts[1] or #xs - 1
  local rise = f.slope * span
  local base = math.max(sum / #xs, floor)
  local rel = base > 0 and rise / base or 0
  local points = round2(M.WEIGHTS[name] * math.min(1, math.max(0, rel)))
  local detail
  if rise > 0 and base > 0 then
    detail = ("rising: the fitted rate grew by %.0f %% of %s over %d points%s")
      :format(rel * 100, base == floor and "error_floor" or "its mean", #xs, note)
  else
    detail = ("%s over %d points%s"):format(rise < 0 and "falling" or "flat", #xs, note)
  end
  return { name = name, points = points, max = M.WEIGHTS[name], counted = true, value = rel,
    detail = detail }
end

-- CPU or memory utilisation: a fraction in [0, 1] (or a percentage with percent = true), or a
-- series of them whose mean counts (the seed's). Points are proportional: 25 at 100 %.
local function utilisation(name, v, percent)
  if v == nil then return not_counted(name, "not given") end
  local top, unit = percent and 100 or 1, percent and "a percentage in [0, 100]"
    or "a fraction in [0, 1]"
  local function check(x, where)
    if x < 0 or x > top then
      local hint = percent and "" or "; for 0-100 values set percent = true"
      bad("%s: %s%g is not %s%s", name, where, x, unit, hint)
    end
  end
  local u, detail
  if type(v) == "number" then
    if not finite(v) then bad("%s: not a finite number", name) end
    check(v, "")
    u = v / top
    detail = ("%.0f %%"):format(u * 100)
  else
    local ser = series_of(v, name)
    local xs, dropped = ser.values, ser.dropped
    if #xs == 0 then
      return not_counted(name, ("no finite points (%d dropped)"):format(dropped))
    end
    local sum = 0
    for i, x in ipairs(xs) do
      check(x, ("value %d, "):format(ser.index[i]))
      sum = sum + x
    end
    u = sum / #xs / top
    detail = ("%.0f %% on average over %d points"):format(u * 100, #xs)
  end
  return { name = name, points = round2(M.WEIGHTS[name] * u), max = M.WEIGHTS[name],
    counted = true, value = u, detail = detail }
end

-- Recent critical incidents: a count, or a list of incidents or alerts of which those with
-- severity "critical" (field or label) count. 20 points each.
local function incidents(v)
  local name = "critical_incidents"
  if v == nil then return not_counted(name, "not given") end
  local n
  if type(v) == "number" then
    n = math.tointeger(v)
    if n == nil or n < 0 then
      bad("critical_incidents: %s is not a count (a whole number >= 0)", tostring(v))
    end
  elseif type(v) == "table" then
    n = 0
    for i, inc in ipairs(v) do
      if type(inc) ~= "table" then
        bad("critical_incidents: element %d is a %s, not an incident table", i, type(inc))
      end
      local sev = inc.severity or (type(inc.labels) == "table" and inc.labels.severity)
      if sev == "critical" then n = n + 1 end
    end
  else
    bad("critical_incidents: a count or a list of incidents expected, got %s", type(v))
  end
  return { name = name, points = M.WEIGHTS.critical_incident * n, counted = true, value = n,
    detail = ("%d critical"):format(n) }
end

local function recommend(f)
  local out = {}
  local e, c, m, i = f[1], f[2], f[3], f[4]
  if c.counted and c.value >= HIGH_UTILISATION then
    out[#out + 1] = ("CPU at %.0f %%: add capacity (scale out or up) or find what is burning it")
      :format(c.value * 100)
  end
  if m.counted and m.value >= HIGH_UTILISATION then
    out[#out + 1] = ("Memory at %.0f %%: raise the limit or look for a leak"):format(m.value * 100)
  end
  if e.counted and e.value >= RISING_ERRORS then
    out[#out + 1] = "Error rate rising: look at what changed (deploys, config, dependencies) "
      .. "and fix the cause before it pages"
  end
  if i.counted and i.value > MANY_INCIDENTS then
    out[#out + 1] = ("%d critical incidents recently: review them together for a shared root "
      .. "cause"):format(i.value)
  end
  return out
end

local function score(t)
  if type(t) ~= "table" then bad("table expected, got %s", type(t)) end
  for k in pairs(t) do
    if not KNOWN[k] then bad("unknown field '%s'", tostring(k)) end
  end
  local floor = t.error_floor or 0
  if type(floor) ~= "number" or not finite(floor) or floor < 0 then
    bad("error_floor: a number >= 0 expected")
  end
  local factors = {
    error_trend(t.error_rates, floor),
    utilisation("cpu", t.cpu, t.percent),
    utilisation("memory", t.memory, t.percent),
    incidents(t.critical_incidents),
  }
  local sum, missing = 0, {}
  for _, f in ipairs(factors) do
    sum = sum + f.points
    if not f.counted then missing[#missing + 1] = f.name end
  end
  local total = round2(math.min(100, sum))
  local level = "low"
  for _, l in ipairs(M.LEVELS) do
    if total >= l[2] then
      level = l[1]
      break
    end
  end
  return { score = total, level = level, factors = factors, recommendations = recommend(factors),
    missing = missing }
end

--- The incident risk of a service now. `t` holds any of: `error_rates` (a series: an array of
-- numbers >= 0, a vigil.prom matrix entry, or a query result with one series), `cpu` and
-- `memory` (a fraction, or a series whose mean counts; `percent = true` for 0-100 values),
-- `critical_incidents` (a count, or a list of incidents/alerts), `error_floor` (the error rate
-- below which a rise is noise, default 0). Returns `{ score, level, factors, recommendations,
-- missing }`; factors are always the four, in that order, each `{ name, points, max, counted,
-- value, detail }`. A missing factor gives no points and is listed in `missing`. Mistakes in
-- `t` raise "bad argument #1 to 'score' (...)".
function M.score(t)
  local r = guarded("score", score, t) -- not a tail call: guarded() raises at our caller
  return r
end

local MA_OPTIONS = { window = true, min_points = true, contamination = true, n_estimators = true,
  random_state = true }

local function whole_opt(opts, key, def, lo, hi)
  local v = opts[key]
  if v == nil then return def end
  local n = type(v) == "number" and math.tointeger(v)
  if not n or n < lo or n > hi then
    bad_opt("%s: a whole number in [%d, %d] expected", key, lo, hi)
  end
  return n
end

local function metric_anomalies(values, opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then bad_opt("table expected, got %s", type(opts)) end
  for k in pairs(opts) do
    if not MA_OPTIONS[k] then bad_opt("unknown option '%s'", tostring(k)) end
  end
  local window = whole_opt(opts, "window", 10, 2, 10000)
  local min_points = whole_opt(opts, "min_points", 30, 1, 1 << 40)
  local c = opts.contamination or 0.05
  if type(c) ~= "number" or not (c > 0 and c <= 0.5) then
    bad_opt("contamination: a number in (0, 0.5] expected")
  end
  local ser = series_of(values, "values")
  local xs, need = ser.values, math.max(min_points, window)
  if #xs < need then
    return nil, ("ENODATA: %d points needed to train, got %d"):format(need, #xs)
  end
  -- The seed standardised the features first; an isolation forest splits each feature
  -- uniformly between its min and max, so scaling a feature changes nothing: left out.
  local rows = detect.window_features(xs, window)
  local model = detect.iforest({ contamination = c, n_estimators = opts.n_estimators,
    random_state = opts.random_state or 0 }):fit(rows)
  local s, p = model:score(rows), model:predict(rows)
  local scores, flags, found = {}, {}, {}
  for i = 1, ser.total do
    scores[i], flags[i] = 0, false
  end
  for r = 1, #rows do
    local k = r + window - 1 -- the row of point k describes the window ending at it
    local at = ser.index[k]
    scores[at], flags[at] = s[r], p[r]
    if p[r] then found[#found + 1] = { index = at, value = xs[k], score = s[r] } end
  end
  return { scores = scores, flags = flags, anomalies = found, points = #xs,
    threshold = model:info().threshold, model = model }
end

--- The seed's per-metric isolation forest: a model trained on `values` (an array of numbers or
-- a vigil.prom series; NaN points left out) through vigil.detect.window_features (value, mean,
-- sd, z and range over the last `opts.window` points, 10), then used to score the same points.
-- opts: `window`, `min_points` (30: fewer gives nil, "ENODATA: ..."), `contamination` (0.05),
-- `n_estimators` (100), `random_state` (0). Returns `{ scores, flags, anomalies, points,
-- threshold, model }`: scores and flags have one entry per input point (0 and false where no
-- window ends: the first window - 1 points and the NaN ones); anomalies lists the flagged
-- points as `{ index, value, score }`; model scores later rows of window_features.
function M.metric_anomalies(values, opts)
  local r, err = guarded("metric_anomalies", metric_anomalies, values, opts)
  return r, err
end

return M
