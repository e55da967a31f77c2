-- Spec of vigil.risk: the incident risk score on constructed inputs, so every expected score is
-- exact: each factor alone, each level's boundary from both sides, the inputs it accepts
-- (arrays, vigil.prom series, percentages, incident lists) and the error for each mistake.
-- Then the seed's per-metric isolation forest (metric_anomalies).
local risk = require("vigil.risk")
local T = require("vigil.test")

local function factor(r, name)
  for _, f in ipairs(r.factors) do
    if f.name == name then return f end
  end
  error("no factor " .. name)
end

local function raises(pattern, t)
  local ok, err = pcall(function() return risk.score(t) end)
  expect(ok):to_be(false)
  expect(tostring(err)):to_contain("bad argument #1 to 'score' (" .. pattern)
end

describe("vigil.risk.score: each factor alone", function()
  it("gives nothing and lists every factor as missing for an empty table", function()
    local r = risk.score({})
    expect(r.score):to_be(0)
    expect(r.level):to_be("low")
    expect(r.missing):to_equal({ "error_rate_trend", "cpu", "memory", "critical_incidents" })
    expect(#r.factors):to_be(4)
    for _, f in ipairs(r.factors) do
      expect(f.counted):to_be(false)
      expect(f.points):to_be(0)
      expect(f.detail):to_be("not given")
    end
    expect(r.recommendations):to_equal({})
  end)

  it("counts CPU and memory in proportion: 25 points at 100 %", function()
    expect(risk.score({ cpu = 0.5 }).score):to_be(12.5)
    expect(risk.score({ cpu = 1 }).score):to_be(25)
    expect(risk.score({ memory = 0.75 }).score):to_be(18.75)
    expect(risk.score({ memory = 0 }).score):to_be(0)
    local r = risk.score({ cpu = 0.5 })
    expect(factor(r, "cpu")):to_equal({ name = "cpu", points = 12.5, max = 25, counted = true,
      value = 0.5, detail = "50 %" })
    expect(r.missing):to_equal({ "error_rate_trend", "memory", "critical_incidents" })
  end)

  it("takes percentages with percent = true", function()
    expect(risk.score({ cpu = 50, memory = 100, percent = true }).score):to_be(37.5)
  end)

  it("gives 20 points per recent critical incident", function()
    expect(risk.score({ critical_incidents = 0 }).score):to_be(0)
    expect(risk.score({ critical_incidents = 1 }).score):to_be(20)
    expect(risk.score({ critical_incidents = 2.0 }).score):to_be(40)
    local r = risk.score({ critical_incidents = 6 })
    expect(factor(r, "critical_incidents").points):to_be(120)
    expect(r.score):to_be(100) -- capped
    expect(r.level):to_be("critical")
  end)

  it("counts the critical ones in a list of incidents or alerts", function()
    local r = risk.score({ critical_incidents = {
      { severity = "critical" }, { labels = { severity = "critical" } }, { severity = "warning" },
      { labels = { severity = "page" } },
    } })
    expect(r.score):to_be(40)
    expect(factor(r, "critical_incidents").detail):to_be("2 critical")
  end)

  it("scores the error-rate trend by its fitted rise relative to its mean", function()
    -- 1, 2, 3: the line rises by 2 over a mean of 2 (100 %): all 30 points
    expect(risk.score({ error_rates = { 1, 2, 3 } }).score):to_be(30)
    -- more than a doubling still gives 30
    expect(risk.score({ error_rates = { 1, 5, 9 } }).score):to_be(30)
    -- 4, 5, 6: a rise of 2 over a mean of 5 (40 %): 12 points
    local r = risk.score({ error_rates = { 4, 5, 6 } })
    expect(r.score):to_be(12)
    expect(factor(r, "error_rate_trend").detail)
      :to_be("rising: the fitted rate grew by 40 % of its mean over 3 points")
    -- flat and falling rates give nothing
    r = risk.score({ error_rates = { 2, 2, 2, 2 } })
    expect(r.score):to_be(0)
    expect(factor(r, "error_rate_trend").detail):to_be("flat over 4 points")
    expect(factor(r, "error_rate_trend").counted):to_be(true)
    r = risk.score({ error_rates = { 3, 2, 1 } })
    expect(r.score):to_be(0)
    expect(factor(r, "error_rate_trend").detail):to_be("falling over 3 points")
    expect(risk.score({ error_rates = { 0, 0, 0 } }).score):to_be(0)
  end)

  it("measures a rise near zero against error_floor when that is larger than the mean", function()
    expect(risk.score({ error_rates = { 0, 0.001, 0.002 } }).score):to_be(30)
    local r = risk.score({ error_rates = { 0, 0.001, 0.002 }, error_floor = 0.01 })
    expect(r.score):to_be(6) -- 0.002 / 0.01 = 20 % of 30
    expect(factor(r, "error_rate_trend").detail)
      :to_be("rising: the fitted rate grew by 20 % of error_floor over 3 points")
  end)

  it("does not count an error-rate series of fewer than 3 finite points", function()
    local r = risk.score({ error_rates = { 1, 2 }, cpu = 1 })
    expect(r.score):to_be(25)
    local f = factor(r, "error_rate_trend")
    expect(f.counted):to_be(false)
    expect(f.detail):to_be("3 points needed, got 2")
    expect(r.missing):to_equal({ "error_rate_trend", "memory", "critical_incidents" })
    f = factor(risk.score({ error_rates = { 1, 0 / 0, 2 } }), "error_rate_trend")
    expect(f.detail):to_be("3 points needed, got 2 (1 non-finite points dropped)")
  end)
end)

describe("vigil.risk.score: levels", function()
  it("is critical from 80", function()
    local r = risk.score({ error_rates = { 1, 2, 3 }, cpu = 1, memory = 1 })
    expect(r.score):to_be(80)
    expect(r.level):to_be("critical")
    r = risk.score({ error_rates = { 1, 2, 3 }, cpu = 0.9996, memory = 1 })
    expect(r.score):to_be(79.99)
    expect(r.level):to_be("high")
  end)

  it("is high from 60", function()
    local r = risk.score({ critical_incidents = 3 })
    expect(r.score):to_be(60)
    expect(r.level):to_be("high")
    r = risk.score({ critical_incidents = 2, cpu = 0.7996 })
    expect(r.score):to_be(59.99)
    expect(r.level):to_be("medium")
  end)

  it("is medium from 40, low below", function()
    local r = risk.score({ critical_incidents = 2 })
    expect(r.score):to_be(40)
    expect(r.level):to_be("medium")
    r = risk.score({ cpu = 1, memory = 0.5996 })
    expect(r.score):to_be(39.99)
    expect(r.level):to_be("low")
  end)
end)

describe("vigil.risk.score: series and recommendations", function()
  it("reads a vigil.prom matrix entry with its times, dropping NaN points", function()
    local entry = { labels = { job = "api" }, ts = { 0, 7, 15, 30 }, values = { 4, 0 / 0, 5, 6 } }
    local r = risk.score({ error_rates = entry })
    expect(r.score):to_be(12)
    expect(factor(r, "error_rate_trend").detail)
      :to_be("rising: the fitted rate grew by 40 % of its mean over 3 points "
        .. "(1 non-finite points dropped)")
    -- the times count: through (0, 4), (1, 5), (100, 6) the line rises 300/19802 per second,
    -- 1.515 over the span, 30.3 % of the mean: 9.09 points (12 if evenly spaced)
    r = risk.score({ error_rates = { ts = { 0, 1, 100 }, values = { 4, 5, 6 } } })
    expect(r.score):to_be(9.09)
  end)

  it("reads a query result holding one series, and the mean of a utilisation series", function()
    local r = risk.score({
      error_rates = T.series({ 4, 5, 6 }, { job = "api" }, 15),
      cpu = T.series({ 0.5, 0.7, 0.9 }),
      memory = { 0.25, 0.75 },
    })
    expect(r.score):to_be(12 + 17.5 + 12.5)
    expect(factor(r, "cpu").detail):to_be("70 % on average over 3 points")
  end)

  it("recommends a mitigation per factor past its threshold, in factor order", function()
    local r = risk.score({ error_rates = { 1, 2, 3 }, cpu = { 0.8, 0.9, 1.0 }, memory = 0.85,
      critical_incidents = 4 })
    expect(r.score):to_be(100)
    expect(r.recommendations):to_equal({
      "CPU at 90 %: add capacity (scale out or up) or find what is burning it",
      "Memory at 85 %: raise the limit or look for a leak",
      "Error rate rising: look at what changed (deploys, config, dependencies) "
        .. "and fix the cause before it pages",
      "4 critical incidents recently: review them together for a shared root cause",
    })
    -- just below each threshold: nothing to recommend
    r = risk.score({ error_rates = { 100, 100, 109.9 }, cpu = 0.79, memory = 0.79,
      critical_incidents = 3 })
    expect(r.recommendations):to_equal({})
  end)
end)

describe("vigil.risk.score: mistakes raise", function()
  it("names the field and what was expected", function()
    raises("table expected, got nil", nil)
    raises("unknown field 'cpu_usage'", { cpu_usage = 0.5 })
    raises("cpu: 85 is not a fraction in [0, 1]; for 0-100 values set percent = true",
      { cpu = 85 })
    raises("memory: -0.1 is not a fraction in [0, 1]", { memory = -0.1 })
    raises("cpu: 120 is not a percentage in [0, 100])", { cpu = 120, percent = true })
    raises("cpu: value 2, 1.5 is not a fraction in [0, 1]", { cpu = { 0.5, 1.5 } })
    raises("memory: not a finite number", { memory = 0 / 0 })
    raises("cpu: an array of numbers or a vigil.prom series expected, got string",
      { cpu = "high" })
    raises("error_rates: an array of numbers or a vigil.prom series expected, got number",
      { error_rates = 0.5 })
    raises("error_rates: value 2 is a string, not a number", { error_rates = { 1, "2", 3 } })
    raises("error_rates: value 2 is negative (-1)", { error_rates = { 1, -1, 3 } })
    raises("error_rates: 2 times for 3 values", { error_rates = { ts = { 1, 2 },
      values = { 1, 2, 3 } } })
    raises("error_rates: times must increase (time 3)", { error_rates = { ts = { 1, 2, 2 },
      values = { 1, 2, 3 } } })
    raises("error_rates: value 3 is negative (-1)", { error_rates = { 0 / 0, 1, -1, 3 } })
    raises("memory: value 3, 2 is not a fraction in [0, 1]", { memory = { 0 / 0, 1, 2 } })
    raises("error_rates: a query result with 2 series; pass one of them",
      { error_rates = { { values = { 1 } }, { values = { 2 } } } })
    raises("critical_incidents: 1.5 is not a count", { critical_incidents = 1.5 })
    raises("critical_incidents: -1 is not a count", { critical_incidents = -1 })
    raises("critical_incidents: a count or a list of incidents expected, got string",
      { critical_incidents = "3" })
    raises("critical_incidents: element 1 is a number, not an incident table",
      { critical_incidents = { 1 } })
    raises("error_floor: a number >= 0 expected", { error_floor = -1 })
  end)

  it("points the error at the caller's line", function()
    local ok, err = pcall(function() risk.score({ cpu = 2 }) end)
    expect(ok):to_be(false)
    expect(err):to_match("risk_spec%.lua:%d+: bad argument #1 to 'score'")
  end)

  it("is vigil.risk, loaded on first use", function()
    expect(vigil.risk.score):to_be(risk.score)
  end)
end)

describe("vigil.risk.metric_anomalies", function()
  -- 40 calm points (20 + i % 3), then a spike: the seed's per-metric model finds it
  local function calm_then_spike()
    local v = {}
    for i = 1, 40 do v[i] = 20 + i % 3 end
    v[41] = 90
    return v
  end

  it("flags the spike and only it, with one score per input point", function()
    local r = risk.metric_anomalies(calm_then_spike())
    expect(r.points):to_be(41)
    expect(#r.scores):to_be(41)
    expect(#r.flags):to_be(41)
    for i = 1, 9 do -- no window of 10 ends there
      expect(r.scores[i]):to_be(0)
      expect(r.flags[i]):to_be(false)
    end
    for i = 10, 40 do
      expect(r.scores[i] > 0 and r.scores[i] < r.scores[41]):to_be(true)
      expect(r.flags[i]):to_be(false)
    end
    expect(r.flags[41]):to_be(true)
    expect(#r.anomalies):to_be(1)
    expect(r.anomalies[1].index):to_be(41)
    expect(r.anomalies[1].value):to_be(90)
    expect(r.anomalies[1].score):to_be(r.scores[41])
    expect(r.scores[41] > r.threshold):to_be(true)
    -- deterministic for a seed, and the model scores new windows
    expect(risk.metric_anomalies(calm_then_spike()).scores):to_equal(r.scores)
    local rows = require("vigil.detect").window_features(calm_then_spike(), 10)
    expect(r.model:score({ rows[#rows] })[1]):to_be(r.scores[41])
  end)

  it("leaves NaN points out and reports at their input positions", function()
    local v = calm_then_spike()
    v[20] = 0 / 0
    local r = risk.metric_anomalies({ labels = {}, values = v })
    expect(r.points):to_be(40)
    expect(#r.scores):to_be(41)
    expect(r.scores[20]):to_be(0)
    expect(r.flags[20]):to_be(false)
    expect(r.scores[10] > 0):to_be(true) -- the 10th finite point is the 10th input point
    expect(r.anomalies[1].index):to_be(41)
  end)

  it("needs min_points (30) to train, and says so", function()
    local v = calm_then_spike()
    local r, err = risk.metric_anomalies({ table.unpack(v, 1, 29) })
    expect(r):to_be_nil()
    expect(err):to_be("ENODATA: 30 points needed to train, got 29")
    r, err = risk.metric_anomalies({ 1, 2, 3, 4 }, { min_points = 2, window = 5 })
    expect(r):to_be_nil()
    expect(err):to_be("ENODATA: 5 points needed to train, got 4")
    r = risk.metric_anomalies({ table.unpack(v, 1, 29) }, { min_points = 20, window = 5 })
    expect(#r.scores):to_be(29)
  end)

  it("raises for bad values and options", function()
    local function fails(pattern, ...)
      local ok, err = pcall(risk.metric_anomalies, ...)
      expect(ok):to_be(false)
      expect(tostring(err)):to_contain("bad argument #" .. pattern)
    end
    fails("1 to 'metric_anomalies' (values: an array of numbers or a vigil.prom series "
      .. "expected, got nil)", nil)
    fails("1 to 'metric_anomalies' (values: value 2 is a string, not a number)", { 1, "x" })
    fails("2 to 'metric_anomalies' (table expected, got string)", { 1 }, "fast")
    fails("2 to 'metric_anomalies' (unknown option 'windows')", { 1 }, { windows = 3 })
    fails("2 to 'metric_anomalies' (window: a whole number in [2, 10000] expected)", { 1 },
      { window = 1 })
    fails("2 to 'metric_anomalies' (min_points: a whole number", { 1 }, { min_points = 2.5 })
    fails("2 to 'metric_anomalies' (contamination: a number in (0, 0.5] expected)", { 1 },
      { contamination = 0.6 })
    local ok, err = pcall(function() risk.metric_anomalies({ 1 }, { window = 0 }) end)
    expect(ok):to_be(false)
    expect(err):to_match("risk_spec%.lua:%d+: bad argument #2")
  end)
end)
