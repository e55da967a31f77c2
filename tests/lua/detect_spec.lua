-- Spec of vigil.detect: isolation forests on Lua rows, named streaming detectors that outlive
-- a policy's VM, forecasts, and the error for every kind of bad input.
local detect = require("vigil.detect")
local testing = require("vigil.testing")

-- 200 rows of a deterministic cloud around (0, 0), then one far outlier.
local function cloud()
  local rows, seed = {}, 7
  local function rnd()
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed / 2147483648 - 0.5
  end
  for i = 1, 200 do
    rows[i] = { rnd(), rnd() }
  end
  rows[201] = { 6, 6 }
  return rows
end

local function raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  expect(ok):to_be(false)
  expect(tostring(err)):to_contain(pattern)
end

describe("vigil.detect.iforest", function()
  it("scores an obvious outlier highest and predicts it", function()
    local rows = cloud()
    local model = detect.iforest({ n_estimators = 100, random_state = 1 })
    expect(model:fit(rows)):to_be(model)
    local scores = model:score(rows)
    expect(#scores):to_be(201)
    for i = 1, 200 do
      expect(scores[i] > 0 and scores[i] <= 1):to_be(true)
      expect(scores[i] < scores[201]):to_be(true)
    end
    local pred = model:predict({ rows[1], rows[201] })
    expect(pred):to_equal({ false, true })
    local dec = model:decision({ rows[201] })
    expect(dec[1]):to_be_less_than(0)
    local info = model:info()
    expect(info.fitted):to_be(true)
    expect(info.max_samples):to_be(201)
    expect(info.n_features):to_be(2)
    expect(info.threshold):to_be(0.5)
  end)

  it("is deterministic for a seed, and a contamination sets the threshold", function()
    local rows = cloud()
    local a = detect.iforest({ random_state = 3 }):fit(rows):score(rows)
    local b = detect.iforest({ random_state = 3 }):fit(rows):score(rows)
    expect(a):to_equal(b)
    local m = detect.iforest({ contamination = 0.05, random_state = 3 }):fit(rows)
    local n = 0
    for _, p in ipairs(m:predict(rows)) do
      if p then n = n + 1 end
    end
    expect(n):to_be(10) -- 5 % of 201, above the interpolated quantile
  end)

  it("saves and loads a model", function()
    local rows = cloud()
    local m = detect.iforest({ random_state = 9 }):fit(rows)
    local copy = assert(detect.load(m:save()))
    expect(copy:score(rows)):to_equal(m:score(rows))
    local none, err = detect.load("not a model")
    expect(none):to_be_nil()
    expect(err):to_match("^EDETECT: ")
  end)

  it("raises for bad rows and options", function()
    local m = detect.iforest()
    raises("not fitted", m.score, m, { { 1 } })
    raises("no rows", m.fit, m, {})
    raises("row 2 has 1 columns, row 1 has 2", m.fit, m, { { 1, 2 }, { 3 } })
    raises("row 2 column 1 is not a finite number", m.fit, m, { { 1 }, { 0 / 0 } })
    raises("row 1 column 2 is not a finite number", m.fit, m, { { 1, "2" } })
    raises("row 2 is not a table of numbers", m.fit, m, { { 1 }, 5 })
    raises("table expected", m.fit, m, "rows")
    m:fit({ { 1, 2 }, { 2, 3 }, { 3, 1 } })
    raises("rows have 3 columns, the model was fitted on 2", m.score, m, { { 1, 2, 3 } })
    raises("bad option 'contamination'", detect.iforest, { contamination = 0.7 })
    raises("bad option 'contamination'", detect.iforest, { contamination = "most" })
    raises("bad option 'n_estimators'", detect.iforest, { n_estimators = 0 })
    local big = detect.iforest({ n_estimators = 20000, max_samples = 1000 })
    local many = {}
    for i = 1, 1000 do many[i] = { i } end
    raises("n_estimators x max_samples = 20000 x 1000 is above 4194304", big.fit, big, many)
  end)
end)

describe("vigil.detect.iforest on the thread pool", function()
  -- 60,000 rows (above the 50,000 that send a fit to the pool) of a deterministic cloud, and a
  -- far outlier at the end.
  local function big_rows()
    local rows, seed = {}, 11
    for i = 1, 60000 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      rows[i] = { seed / 2147483648 }
    end
    rows[60001] = { 50 }
    return rows
  end

  it("fits a large input while another task keeps running", function()
    local rows = big_rows()
    local ticks, stop = 0, false
    local ticker = vigil.spawn(function()
      while not stop do
        ticks = ticks + 1
        vigil.sleep(0)
      end
    end)
    local model = detect.iforest({ random_state = 4 })
    local before = ticks
    expect(model:fit(rows)):to_be(model)
    local during = ticks - before
    stop = true
    vigil.wait(ticker)
    expect(during > 0):to_be(true) -- a synchronous fit leaves no turn to the ticker
    local sc = model:score({ rows[1], rows[60001] })
    expect(sc[2] > sc[1]):to_be(true)
    expect(model:info().max_samples):to_be(256)
    -- the same fit in a plain call (background = false) gives the same model
    local sync = detect.iforest({ random_state = 4, background = false }):fit(rows)
    expect(sync:score({ rows[1], rows[60001] })):to_equal(sc)
  end)

  it("frees the work of a cancelled task when it completes", function()
    local rows = big_rows()
    local model = detect.iforest({ random_state = 5, n_estimators = 300, contamination = 0.1 })
    local reached = false
    local t = vigil.spawn(function()
      model:fit(rows)
      reached = true
    end)
    vigil.sleep(0) -- the task starts the fit and waits
    t:cancel()
    local ok, err = vigil.wait(t)
    expect(ok):to_be_nil()
    expect(err):to_match("^ECANCELED")
    expect(reached):to_be(false)
    expect(model:info().fitted):to_be(false) -- the result went nowhere
    -- background = true sends even a small fit to the pool; the model is the same
    local rows3 = { { 1 }, { 2 }, { 3 }, { 40 } }
    local small = detect.iforest({ random_state = 5, background = true })
    local t2 = vigil.spawn(function() return small:fit(rows3) end)
    expect(vigil.wait(t2)):to_be(small)
    local same = detect.iforest({ random_state = 5, background = false }):fit(rows3)
    expect(small:score(rows3)):to_equal(same:score(rows3))
    raises("bad option 'background' (boolean expected, got string)", detect.iforest,
      { background = "yes" })
  end)
end)

describe("vigil.detect.iforest with a name", function()
  -- a second cloud, as code a sandbox runs too: a model fitted on it scores differently
  local SHIFTED = [[
    local rows, seed = {}, 5
    for i = 1, 150 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      local x = seed / 2147483648
      seed = (seed * 1103515245 + 12345) % 2147483648
      rows[i] = { x * 2 + 3, seed / 2147483648 - 2 }
    end
    return rows
  ]]
  local shifted = assert(load(SHIFTED))
  local probe = { { 0, 0 }, { 6, 6 } }

  it("is one model for every handle of the name, the same as an unnamed fit", function()
    local rows = cloud()
    local a = detect.iforest({ name = "spec-shared", n_estimators = 50, random_state = 1 })
    local b = detect.iforest({ name = "spec-shared" })
    expect(a == b):to_be(false) -- two handles, one model
    expect(b:info()):to_equal({ name = "spec-shared", fits = 0, fitted = false, n_estimators = 50 })
    expect(a:fit(rows)):to_be(a)
    local plain = detect.iforest({ n_estimators = 50, random_state = 1 }):fit(rows)
    local want = plain:score(probe)
    expect(b:score(probe)):to_equal(want)
    expect(b:decision(probe)):to_equal(plain:decision(probe))
    expect(b:predict(probe)):to_equal({ false, true })
    local info = b:info()
    expect(info.name):to_be("spec-shared")
    expect(info.fits):to_be(1)
    expect(info.fitted):to_be(true)
    expect(info.n_features):to_be(2)
    expect(info.nodes):to_be(plain:info().nodes)
    expect(tostring(b)):to_be('vigil.detect.iforest "spec-shared" (50 trees, 2 features)')
    -- save gives the current model as an unnamed one
    local copy = assert(detect.load(b:save()))
    expect(copy:info().name):to_be_nil()
    expect(copy:score(probe)):to_equal(want)
    expect(detect.iforest({ name = "spec-shared" }):score(probe)):to_equal(want)
  end)

  it("is the same model in another VM, and a fit there replaces it for everyone", function()
    local rows = cloud()
    local mine = detect.iforest({ name = "spec-vm", random_state = 2 }):fit(rows)
    local before = mine:score(probe)
    local r = testing.sandbox([[
      local f = vigil.detect.iforest({ name = "spec-vm" })
      return f:score({ { 0, 0 }, { 6, 6 } })[2], f:info().fits
    ]])
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(before[2])
    expect(r.results[2]):to_be(1)
    -- that VM is closed, its handle collected: the model is the runtime's and still here
    expect(mine:score(probe)):to_equal(before)
    -- a refit in that VM (a reloaded policy, say) is what this handle scores with next
    local refit = testing.sandbox("local rows = (function() " .. SHIFTED .. [[ end)()
      vigil.detect.iforest({ name = "spec-vm", random_state = 2 }):fit(rows)
    ]])
    expect(refit.status):to_be("ok")
    local want = detect.iforest({ random_state = 2 }):fit(shifted()):score(probe)
    expect(mine:score(probe)):to_equal(want)
    expect(mine:info().fits):to_be(2)
    expect(want[1] ~= before[1]):to_be(true)
  end)

  it("keeps scoring with the old model while a background fit runs", function()
    local old = detect.iforest({ name = "spec-bg", random_state = 3 }):fit(cloud())
    local before = old:score(probe)
    local bg = detect.iforest({ name = "spec-bg", background = true })
    local t = vigil.spawn(function() return bg:fit(shifted()) end)
    vigil.sleep(0) -- the task starts the fit on the pool and waits
    expect(old:score(probe)):to_equal(before)
    expect(old:info().fits):to_be(1)
    expect(vigil.wait(t)):to_be(bg)
    expect(old:info().fits):to_be(2)
    local want = detect.iforest({ random_state = 3 }):fit(shifted()):score(probe)
    expect(old:score(probe)):to_equal(want)
  end)

  it("raises when options given disagree with the name's, or it was never fitted", function()
    detect.iforest({ name = "spec-opts", n_estimators = 20, contamination = 0.1 })
    raises('vigil.detect.iforest{ name = "spec-opts" }: exists with n_estimators = 20, not 30',
      detect.iforest, { name = "spec-opts", n_estimators = 30 })
    raises('exists with contamination = 0.1, not "auto"', detect.iforest,
      { name = "spec-opts", contamination = "auto" })
    raises("exists with random_state = 0, not 5", detect.iforest,
      { name = "spec-opts", random_state = 5 })
    -- the options it has, or none, are fine; background is the handle's own
    local same = detect.iforest({ name = "spec-opts", n_estimators = 20, background = false })
    expect(same:info().n_estimators):to_be(20)
    raises('iforest:score(): the named forest "spec-opts" is not fitted yet', same.score, same,
      probe)
    raises('iforest:save(): the named forest "spec-opts" is not fitted yet', same.save, same)
    expect(tostring(same)):to_be('vigil.detect.iforest "spec-opts" (not fitted)')
    raises("bad option 'name' (a string of 1 to 1024 bytes without NUL expected)",
      detect.iforest, { name = "" })
    raises("bad option 'name'", detect.iforest, { name = 42 })
    raises("bad option 'name'", detect.iforest, { name = ("x"):rep(1025) })
    -- a fit with other columns replaces the model; rows must then match it
    same:fit({ { 1 }, { 2 }, { 3 } })
    raises("rows have 2 columns, the model was fitted on 1", same.score, same, probe)
  end)

  it("leaves unnamed forests as they were: their own model each", function()
    local a = detect.iforest({ random_state = 1 }):fit(cloud())
    local b = detect.iforest({ random_state = 1 })
    expect(b:info()):to_equal({ fitted = false, n_estimators = 100 })
    raises("iforest:score(): the model is not fitted (call :fit(rows) first)", b.score, b, probe)
    expect(a:info().name):to_be_nil()
    expect(tostring(a)):to_be("vigil.detect.iforest (100 trees, 2 features)")
  end)

  it("is reached as vigil.detect too (a lazy field of vigil)", function()
    local r = testing.sandbox([[
      return vigil.detect.iforest == require("vigil.detect").iforest, type(vigil.detect.series)
    ]])
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(true)
    expect(r.results[2]):to_be("function")
  end)
end)

describe("vigil.detect.window_features", function()
  it("gives the seed's rows and feeds an isolation forest", function()
    local rows = detect.window_features({ 1, 3, 2, 6 }, 2)
    expect(#rows):to_be(3)
    expect(rows[3]):to_equal({ 6, 4, 2, 1, 4 }) -- value, mean, sd, z, range of { 2, 6 }
    local values = {}
    for i = 1, 60 do values[i] = 10 + (i % 4) end
    values[61] = 40
    local feats = detect.window_features(values, 5)
    local m = detect.iforest({ contamination = 0.05, random_state = 2 }):fit(feats)
    local scores = m:score(feats)
    local top = 1
    for i, sc in ipairs(scores) do
      if sc > scores[top] then top = i end
    end
    expect(top):to_be(#feats) -- the jump to 40 is the most isolated window
    raises("3 values for a window of 5", detect.window_features, { 1, 2, 3 }, 5)
    raises("window must be in [2, 100000]", detect.window_features, { 1, 2, 3 }, 1)
    raises("value 2 is not a finite number", detect.window_features, { 1, 0 / 0, 3 }, 2)
  end)
end)

describe("vigil.detect.series", function()
  it("returns the same live detector for a name, also to another VM", function()
    local s = detect.series("spec-latency", { kind = "ewma" })
    for i = 1, 40 do
      local score, flag = s:update(100 + (i % 3), 1700000000 + i)
      expect(score >= 0 and score <= 1):to_be(true)
      expect(flag):to_be(false)
    end
    local again = detect.series("spec-latency")
    expect(again == s):to_be(true)
    expect(again:state().updates):to_be(40)
    local score, flag = again:update(500)
    expect(flag):to_be(true)
    expect(score > 0.9):to_be(true)
    -- a fresh policy VM (what a reload makes) sees the same object
    local r = testing.sandbox([[
      local s = require("vigil.detect").series("spec-latency")
      return s:state().updates, s:state().kind, s:state().last_ts
    ]])
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(41)
    expect(r.results[2]):to_be("ewma")
    expect(r.results[3]):to_be(1700000040)
  end)

  it("warms up before scoring, and the default needs no options", function()
    local s = detect.series("spec-default")
    local st = s:state()
    expect(st.kind):to_be("default")
    expect(st.warm):to_be(false)
    for i = 1, 40 do
      local score = s:update(10 + (i % 2))
      if i <= 30 then expect(score):to_be(0) end
    end
    expect(s:state().warm):to_be(true)
    local _, flag = s:update(1000)
    expect(flag):to_be(true)
    s:reset()
    expect(s:state().n):to_be(0)
  end)

  it("snapshots and restores a detector's state", function()
    local a = detect.series("spec-snap-a", { kind = "cusum" })
    for i = 1, 100 do a:update(20 + (i % 7)) end
    local blob = a:snapshot()
    expect(#blob):to_be(996)
    local b = detect.series("spec-snap-b", { kind = "ewma" })
    expect(b:restore(blob)):to_be(true)
    expect(b:state().kind):to_be("cusum")
    for i = 1, 20 do
      local sa, fa = a:update(30 + i)
      local sb, fb = b:update(30 + i)
      expect(sb):to_be(sa)
      expect(fb):to_be(fa)
    end
    local ok, err = b:restore("garbage")
    expect(ok):to_be_nil()
    expect(err):to_be("EDETECT: not a detector snapshot")
  end)

  it("learns a daily cycle with the seasonal kind", function()
    -- 5-minute points: 50 at night, a bump to 90 around 14:00 UTC, a small wobble
    local day0 = 1700006400
    local function value(i)
      local h = (i % 288) / 12
      return 50 + 40 * math.exp(-((h - 14) / 1.5) ^ 2) + (i * 7 % 5 - 2) * 0.4
    end
    local s = detect.series("spec-seasonal", { kind = "seasonal", buckets = 24, warmup = 12 })
    local ewma = detect.series("spec-seasonal-ewma", { kind = "ewma" })
    local flagged, ewma_flagged = 0, 0
    for i = 0, 288 * 4 - 1 do
      local _, flag = s:update(value(i), day0 + 300 * i)
      local _, eflag = ewma:update(value(i), day0 + 300 * i)
      if flag then flagged = flagged + 1 end
      if eflag then ewma_flagged = ewma_flagged + 1 end
    end
    expect(flagged):to_be(0) -- the daily peak is normal
    expect(ewma_flagged > 0):to_be(true) -- not to ewma
    local st = s:state()
    expect(st.kind):to_be("seasonal")
    expect(st.buckets):to_be(24)
    expect(st.warm):to_be(true)
    local score, flag = s:update(62, day0 + 4 * 86400 + 3 * 3600) -- 03:00, 12 above the night
    expect(flag):to_be(true)
    expect(score > 0.5):to_be(true)
    raises("a seasonal detector needs the point's timestamp", s.update, s, 50)
    raises("buckets must be in [2, 24] with the weekend split, got 48", detect.series,
      "spec-seasonal-bad", { kind = "seasonal", buckets = 48, weekend = true })
    raises("bad option 'weekend' (boolean expected, got string)", detect.series,
      "spec-seasonal-bad", { kind = "seasonal", weekend = "yes" })
  end)

  it("takes vigil.prom results without a conversion loop", function()
    local prom = require("vigil.prom")
    local vals = {}
    for i = 1, 40 do vals[i] = { 1700000000 + 60 * i, tostring(100 + i % 3) } end
    vals[41] = { 1700000000 + 60 * 41, "NaN" }
    local matrix = prom.convert({ resultType = "matrix", result = {
      { metric = { job = "api" }, values = vals } } })
    local s = detect.series("spec-prom", { kind = "ewma" })
    local scores, flags = s:feed(matrix[1])
    expect(#scores):to_be(41)
    expect(flags[41]):to_be(false)
    expect(scores[41]):to_be(0) -- the NaN is a gap
    expect(s:state().updates):to_be(40)
    expect(s:state().last_ts):to_be(1700000000 + 60 * 40)
    -- the next instant query: one entry of a vector result
    local vec = prom.convert({ resultType = "vector", result = {
      { metric = { job = "api" }, value = { 1700000000 + 60 * 42, "500" } } } })
    local score, flag = s:update(vec[1])
    expect(flag):to_be(true)
    expect(score > 0.9):to_be(true)
    expect(s:state().last_ts):to_be(1700000000 + 60 * 42)
    local nan = prom.convert({ resultType = "vector", result = {
      { metric = {}, value = { 1700000000 + 60 * 43, "NaN" } } } })
    expect(select(2, s:update(nan[1]))):to_be(false)
    expect(s:state().updates):to_be(41)
    -- feed on a plain array, with times for a seasonal detector
    local sea = detect.series("spec-prom-seasonal", { kind = "seasonal", buckets = 2 })
    local sc = sea:feed({ 1, 2, 3 }, { times = { 0, 60, 120 } })
    expect(sc):to_equal({ 0, 0, 0 })
    expect(sea:state().n):to_be(3)
    raises("a seasonal detector needs times", sea.feed, sea, { 1, 2 })
    raises("a seasonal detector needs the point's timestamp", sea.update, sea,
      { labels = {}, value = 1 })
    raises("a whole vector result of 1 series; pass one of its entries", s.update, s, vec)
    raises("a whole matrix result of 1 series", s.feed, s, matrix)
    raises("a vigil.prom vector entry has a number in field value", s.update, s, { value = "1" })
    raises("points: no values", s.feed, s, {})
  end)

  it("keeps the seed's rule available", function()
    local s = detect.series("spec-seed", { kind = "zscore5" })
    for _, v in ipairs({ 1, 2, 3, 4, 5 }) do s:update(v) end
    local score, flag = s:update(10) -- z = 7 / sqrt(2)
    expect(flag):to_be(true)
    expect(math.abs(score - 24.5 / 33.5) < 1e-12):to_be(true)
  end)

  it("raises for bad input", function()
    local s = detect.series("spec-bad")
    raises("value is not a finite number", s.update, s, 0 / 0)
    raises("number expected, got string", s.update, s, "high")
    raises("timestamp is not a finite number", s.update, s, 1, 1 / 0)
    raises("not one of default, ewma", detect.series, "x", { kind = "magic" })
    raises("exists with kind default, not ewma", detect.series, "spec-bad", { kind = "ewma" })
    raises("window must be in [3, 64], got 100", detect.series, "spec-w", { kind = "robust",
      window = 100 })
    raises("a name of 1 to 1024 bytes", detect.series, "")
  end)
end)

describe("vigil.detect.scan", function()
  -- 40 points of a calm series, then a spike: what a range query gives.
  local function calm_then_spike()
    local values = {}
    for i = 1, 40 do values[i] = 100 + (i % 3) end
    values[41] = 500
    return values
  end

  it("scores an array with a fresh detector", function()
    local scores, flags = detect.scan(calm_then_spike(), { kind = "ewma" })
    expect(#scores):to_be(41)
    expect(#flags):to_be(41)
    for i = 1, 30 do
      expect(scores[i]):to_be(0) -- warm-up
      expect(flags[i]):to_be(false)
    end
    for i = 31, 40 do expect(flags[i]):to_be(false) end
    expect(flags[41]):to_be(true)
    expect(scores[41] > 0.9):to_be(true)
    -- the same as feeding a named series point by point
    local s = detect.series("spec-scan-same", { kind = "ewma" })
    for i, v in ipairs(calm_then_spike()) do
      local sc, fl = s:update(v)
      expect(sc):to_be(scores[i])
      expect(fl):to_be(flags[i])
    end
  end)

  it("takes a vigil.prom matrix entry as it is, NaN being a gap", function()
    local prom = require("vigil.prom")
    local raw = { 100, 101, 102, "NaN" }
    local vals = {}
    for i = 1, 44 do vals[i] = { 1700000000 + 60 * i, tostring(raw[i % 4 + 1]) } end
    vals[45] = { 1700000000 + 60 * 45, "900" }
    local matrix = prom.convert({ resultType = "matrix", result = {
      { metric = { job = "api" }, values = vals } } })
    local scores, flags = detect.scan(matrix[1])
    expect(#scores):to_be(45)
    expect(flags[45]):to_be(true)
    for i = 1, 44 do
      expect(flags[i]):to_be(false)
      if raw[i % 4 + 1] == "NaN" then expect(scores[i]):to_be(0) end
    end
    raises("a whole matrix result of 1 series; pass one of its entries", detect.scan, matrix)
    -- the seasonal kind takes the entry's times; 45 points fill no bucket's warm-up
    local sc = detect.scan(matrix[1], { kind = "seasonal", buckets = 2, warmup = 40 })
    expect(sc[45]):to_be(0)
    local sc2, fl2 = detect.scan(matrix[1], { kind = "seasonal", buckets = 2, warmup = 20 })
    expect(fl2[45]):to_be(true)
    expect(sc2[45] > 0.9):to_be(true)
  end)

  it("raises for bad input", function()
    raises("values: no values", detect.scan, {})
    raises("value 2 is not a number, got string", detect.scan, { 1, "2" })
    raises("table of numbers or a vigil.prom matrix entry expected, got number", detect.scan, 5)
    raises("3 times for 2 values", detect.scan, { 1, 2 }, { times = { 1, 2, 3 } })
    raises("2 times for 3 values", detect.scan, { ts = { 1, 2 }, values = { 1, 2, 3 } })
    raises("not one of default, ewma", detect.scan, { 1 }, { kind = "magic" })
    raises("window must be in [3, 64], got 2", detect.scan, { 1 }, { kind = "robust", window = 2 })
    raises("a seasonal detector needs times", detect.scan, { 1, 2 }, { kind = "seasonal" })
  end)
end)

describe("vigil.detect.forecast", function()
  it("fits a linear trend and tells when a threshold is reached", function()
    local f = detect.forecast({ 1, 3, 2, 4 }, { horizon = 1, threshold = 10 })
    expect(f.method):to_be("linear")
    expect(math.abs(f.slope - 0.8) < 1e-12):to_be(true)
    expect(math.abs(f.level - 3.7) < 1e-12):to_be(true)
    expect(math.abs(f.forecast - 4.5) < 1e-12):to_be(true)
    expect(math.abs(f.hi - f.forecast - 1.96 * 1.5) < 1e-9):to_be(true)
    expect(math.abs(f.time_to_threshold - 6.3 / 0.8) < 1e-9):to_be(true)
    expect(f.tier):to_be("plan") -- growth 0.8 / 3.7 = 21.6 % over the horizon
  end)

  it("uses Holt with times and durations", function()
    local times, values = {}, {}
    for i = 1, 20 do
      times[i] = 1700000000 + 60 * i
      values[i] = 50 + 0.5 * i
    end
    local f = detect.forecast(values, { method = "holt", times = times, horizon = "1h",
      threshold = 100 })
    expect(f.method):to_be("holt")
    expect(math.abs(f.slope - 0.5 / 60) < 1e-9):to_be(true)
    expect(math.abs(f.forecast - (60 + 30)) < 1e-6):to_be(true)
    expect(math.abs(f.time_to_threshold - 80 * 60) < 1e-6):to_be(true) -- 40 at 0.5/min
    expect(f.tier):to_be("plan") -- +30 on 60 in an hour is 50 %; "urgent" is above 50 %
    local flat = detect.forecast({ 5, 5, 5 }, { threshold = 9 })
    expect(flat.time_to_threshold):to_be_nil()
    expect(flat.tier):to_be("adequate")
  end)

  it("fits Holt-Winters to a trend with a daily season, from a vigil.prom matrix entry", function()
    local prom = require("vigil.prom")
    local vals = {}
    for i = 0, 24 * 5 - 1 do -- hourly: 100 + 0.5 an hour + a daily wave of 10
      vals[i + 1] = { 1700006400 + 3600 * i, ("%.17g"):format(100 + 0.5 * i
        + 10 * math.sin(2 * math.pi * i / 24)) }
    end
    local entry = prom.convert({ resultType = "matrix",
      result = { { metric = {}, values = vals } } })[1]
    local f = detect.forecast(entry, { method = "holt_winters", season = 24, horizon = "6h",
      threshold = 170 })
    expect(f.method):to_be("holt_winters")
    expect(f.season):to_be(24)
    expect(math.abs(f.slope - 0.5 / 3600) < 1e-12):to_be(true)
    local i = 24 * 5 - 1 + 6
    local truth = 100 + 0.5 * i + 10 * math.sin(2 * math.pi * i / 24)
    expect(math.abs(f.forecast - truth) < 1e-8):to_be(true)
    expect(f.lo <= truth and truth <= f.hi):to_be(true)
    -- the first hour at or above 170 comes with a crest of the wave, before the trend's 140
    local first = 24 * 5
    while 100 + 0.5 * first + 10 * math.sin(2 * math.pi * first / 24) < 170 do first = first + 1 end
    expect(math.abs(f.time_to_threshold - 3600 * (first - (24 * 5 - 1))) < 1e-6):to_be(true)
    expect(f.tier):to_be("monitor") -- +3 on ~160 in six hours
    -- linear on the same entry uses its times too
    local lin = detect.forecast(entry)
    expect(math.abs(lin.slope - 0.5 / 3600) < 0.05 / 3600):to_be(true) -- the wave biases it
  end)

  it("raises for bad input", function()
    raises("need at least 2 points, got 1", detect.forecast, { 1 })
    raises("value 2 is not a finite number", detect.forecast, { 1, 0 / 0 })
    raises("3 times for 2 values", detect.forecast, { 1, 2 }, { times = { 1, 2, 3 } })
    raises("times must increase", detect.forecast, { 1, 2 }, { times = { 2, 1 } })
    raises("is not linear, holt or holt_winters", detect.forecast, { 1, 2 }, { method = "arima" })
    raises("holt_winters needs the points per season", detect.forecast, { 1, 2, 3, 4 },
      { method = "holt_winters" })
    raises("need at least two seasons (2 x 3 points), got 4", detect.forecast, { 1, 2, 3, 4 },
      { method = "holt_winters", season = 3 })
    raises("bad option 'season'", detect.forecast, { 1, 2, 3, 4 },
      { method = "holt_winters", season = 1 })
    raises("holt_winters needs evenly spaced points", detect.forecast, { 1, 2, 3, 4 },
      { method = "holt_winters", season = 2, times = { 0, 1, 2, 10 } })
    raises("values: value 2 is not a finite number", detect.forecast,
      { ts = { 1, 2 }, values = { 1, 0 / 0 } })
    raises("values: 1 times for 2 values", detect.forecast, { ts = { 1 }, values = { 1, 2 } })
    raises("values: table of numbers expected, got no value", detect.forecast)
  end)
end)
