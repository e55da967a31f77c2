-- Spec of the `vigil` module (docs/lua-api.md): time, tasks, vigil.all, periodic jobs, logging
-- and the version, on the virtual clock of `vigil test`.

local EPOCH = 1767225600 -- 2026-01-01T00:00:00Z, where the virtual clock of a spec file starts

local function errors_with(fn, ...)
  local ok, err = pcall(fn, ...)
  expect(ok):to_be(false)
  return tostring(err)
end

describe("vigil.version", function()
  it("is the semantic version string of the build", function()
    expect(vigil.version):to_be_a("string")
    expect(vigil.version):to_match("^%d+%.%d+%.%d+$")
    expect(require("vigil").version):to_be(vigil.version)
  end)
end)

describe("vigil.now", function()
  it("starts at the virtual epoch and moves only when tasks wait", function()
    local t0 = vigil.now()
    expect(t0 >= EPOCH):to_be(true)
    expect(t0 < EPOCH + 86400):to_be(true)
    for _ = 1, 1000 do local _ = {} end -- work does not move virtual time
    expect(vigil.now()):to_be(t0)
  end)

  it("has millisecond precision", function()
    local t0 = vigil.now()
    vigil.sleep("250ms")
    expect(vigil.now() - t0):to_be_near(0.25, 1e-6)
    vigil.sleep(0.001)
    expect(vigil.now() - t0):to_be_near(0.251, 1e-6)
  end)
end)

describe("vigil.sleep", function()
  it("waits the given duration, as seconds or a string", function()
    local t0 = vigil.now()
    vigil.sleep(2)
    expect(vigil.now() - t0):to_be(2)
    vigil.sleep("1m30s")
    expect(vigil.now() - t0):to_be(92)
    vigil.sleep("500ms")
    expect(vigil.now() - t0):to_be(92.5)
  end)

  it("returns nothing", function()
    expect(select("#", vigil.sleep(0))):to_be(0)
    expect(select("#", vigil.sleep(1))):to_be(0)
  end)

  it("with 0 lets the other tasks run first, without moving the clock", function()
    local order = {}
    local t0 = vigil.now()
    vigil.spawn(function() order[#order + 1] = "child" end)
    order[#order + 1] = "parent"
    vigil.sleep(0)
    order[#order + 1] = "parent again"
    expect(order):to_equal({ "parent", "child", "parent again" })
    expect(vigil.now()):to_be(t0)
  end)

  it("wakes sleepers in the order of their deadlines", function()
    local order = {}
    for _, d in ipairs({ 3, 1, 2, 1 }) do
      vigil.spawn(function() vigil.sleep(d); order[#order + 1] = d end)
    end
    vigil.sleep(5)
    expect(order):to_equal({ 1, 1, 2, 3 })
  end)

  it("raises on a bad duration", function()
    expect(errors_with(vigil.sleep, "soon")):to_contain('invalid duration "soon"')
    expect(errors_with(vigil.sleep, -1)):to_contain("duration out of range")
    expect(errors_with(vigil.sleep, 1 / 0)):to_contain("duration out of range")
    expect(errors_with(vigil.sleep)):to_contain("bad argument #1")
    expect(errors_with(vigil.sleep, {})):to_contain("bad argument #1")
  end)

  it("raises where the task cannot wait", function()
    local err = errors_with(table.sort, { 3, 1, 2 }, function(a, b)
      vigil.sleep(1)
      return a < b
    end)
    expect(err):to_contain("vigil.sleep: cannot wait inside a table.sort comparator")
    err = errors_with(string.gsub, "abc", "%w", function() vigil.sleep(1) end)
    expect(err):to_contain("vigil.sleep: cannot wait inside a string.gsub replacement function")
    -- a metamethod that C code calls (tostring -> __tostring) cannot be suspended
    err = errors_with(tostring, setmetatable({}, {
      __tostring = function() vigil.sleep(1); return "x" end,
    }))
    expect(err):to_contain("vigil.sleep: cannot wait here")
    -- and afterwards waiting works again
    local t0 = vigil.now()
    vigil.sleep(1)
    expect(vigil.now() - t0):to_be(1)
  end)
end)

describe("vigil.duration", function()
  it("parses durations to seconds", function()
    expect(vigil.duration("1h30m")):to_be(5400)
    expect(vigil.duration("250ms")):to_be(0.25)
    expect(vigil.duration("1w")):to_be(604800)
    expect(vigil.duration("2d")):to_be(172800)
    expect(vigil.duration("5m")):to_be(300)
    expect(vigil.duration("30")):to_be(30)
    expect(vigil.duration(3)):to_be(3)
    expect(vigil.duration(0.5)):to_be(0.5)
    expect(vigil.duration(0)):to_be(0)
  end)

  it("raises on bad input", function()
    expect(errors_with(vigil.duration, "soon")):to_contain('invalid duration "soon"')
    expect(errors_with(vigil.duration, "1h30")):to_contain("invalid duration")
    expect(errors_with(vigil.duration, "")):to_contain("invalid duration")
    expect(errors_with(vigil.duration, -5)):to_contain("duration out of range")
    expect(errors_with(vigil.duration, 0 / 0)):to_contain("duration out of range")
    expect(errors_with(vigil.duration, true)):to_contain("bad argument #1")
  end)
end)

describe("vigil.spawn and vigil.wait", function()
  it("runs the function with its arguments and returns all its results", function()
    local t = vigil.spawn(function(a, b) vigil.sleep(1); return a + b, a * b, "done" end, 2, 3)
    expect(t:status()):to_be("ready")
    local sum, product, word = vigil.wait(t)
    expect(sum):to_be(5)
    expect(product):to_be(6)
    expect(word):to_be("done")
    expect(t:status()):to_be("ok")
    -- a finished task can be waited for again
    expect(select("#", vigil.wait(t))):to_be(3)
    expect(t:wait()):to_be(5)
  end)

  it("returns at once the handle of a task that has not run yet", function()
    local ran = false
    local t = vigil.spawn(function() ran = true end)
    expect(ran):to_be(false)
    expect(vigil.wait(t)):to_be_nil()
    expect(ran):to_be(true)
    expect(select("#", vigil.wait(t))):to_be(0)
  end)

  it("shows the task's state", function()
    local t = vigil.spawn(function() vigil.sleep(10) end)
    expect(t:status()):to_be("ready")
    vigil.sleep(0)
    expect(t:status()):to_be("waiting")
    expect(t.name):to_match("/spawn%-%d+$")
    expect(tostring(t)):to_match("^vigil%.task%(.*, waiting%)$")
    expect(t.error):to_be_nil()
    expect(t.nonexistent):to_be_nil()
    vigil.wait(t)
    expect(t:status()):to_be("ok")
  end)

  it("returns nil, 'ETASK: ...' with the traceback when the task raises", function()
    local t = vigil.spawn(function() error("boom") end)
    local v, err = vigil.wait(t)
    expect(v):to_be_nil()
    expect(err):to_match("^ETASK: .*boom")
    expect(err):to_contain("stack traceback:")
    expect(t:status()):to_be("error")
    expect(t.error):to_contain("boom")
    -- the failure belongs to the child: the waiting task goes on
    local again, err2 = t:wait()
    expect(again):to_be_nil()
    expect(err2):to_be(err)
  end)

  it("reports errors that are not strings without running their metamethods", function()
    local called = false
    local obj = setmetatable({}, { __tostring = function() called = true; return "x" end })
    local _, err = vigil.wait(vigil.spawn(function() error(obj) end))
    expect(err):to_contain("ETASK: (error object is a table value)")
    expect(called):to_be(false)
    _, err = vigil.wait(vigil.spawn(function() error(42) end))
    expect(err):to_match("^ETASK: 42")
  end)

  it("returns nil, 'ECANCELED: reason' for a cancelled task", function()
    local t = vigil.spawn(function() vigil.sleep("1h") end)
    vigil.sleep(1)
    t:cancel("not needed")
    local v, err = vigil.wait(t)
    expect(v):to_be_nil()
    expect(err):to_be("ECANCELED: not needed")
    expect(t:status()):to_be("cancelled")
    expect(t.error):to_be("not needed")
  end)

  it("cancels with a default reason and ignores a second cancel", function()
    local t = vigil.spawn(function() vigil.sleep("1h") end)
    t:cancel()
    t:cancel("again")
    local _, err = vigil.wait(t)
    expect(err):to_be("ECANCELED: cancelled by vigil.task:cancel()")
  end)

  it("can still wait after cancelling another task", function()
    local t = vigil.spawn(function() vigil.sleep("1h") end)
    vigil.sleep(1)
    t:cancel("done with it")
    local t0 = vigil.now()
    vigil.sleep(2)
    expect(vigil.now() - t0):to_be(2)
    local c = vigil.spawn(function() return "child of the same parent" end)
    expect(vigil.wait(c)):to_be("child of the same parent")
  end)

  it("cancels a task that has not started: it never runs", function()
    local ran = false
    local t = vigil.spawn(function() ran = true end)
    t:cancel("early")
    vigil.sleep(1)
    expect(ran):to_be(false)
    expect(select(2, vigil.wait(t))):to_be("ECANCELED: early")
  end)

  it("runs the <close> handlers of a cancelled task", function()
    local closed = 0
    local t = vigil.spawn(function()
      local counter = { __close = function() closed = closed + 1 end }
      local guard <close> = setmetatable({}, counter) -- luacheck: ignore 211
      vigil.sleep("1h")
      closed = closed + 100 -- never reached
    end)
    vigil.sleep(1)
    t:cancel("stop")
    vigil.sleep(1)
    expect(closed):to_be(1)
  end)

  it("returns nil, 'ETIMEDOUT: ...' when the timeout passes first; the task goes on", function()
    local t = vigil.spawn(function() vigil.sleep(5); return "late" end)
    local t0 = vigil.now()
    local v, err = vigil.wait(t, "1s")
    expect(v):to_be_nil()
    expect(err):to_be(("ETIMEDOUT: task '%s' still running"):format(t.name))
    expect(vigil.now() - t0):to_be(1)
    expect(t:status()):to_be("waiting")
    v, err = t:wait(2)
    expect(v):to_be_nil()
    expect(err):to_match("^ETIMEDOUT")
    expect(vigil.wait(t, "1m")):to_be("late")
    expect(vigil.now() - t0):to_be(5)
  end)

  it("does not time out a task that finishes in time", function()
    local t = vigil.spawn(function() vigil.sleep(1); return "quick" end)
    expect(vigil.wait(t, "10s")):to_be("quick")
    vigil.sleep(20) -- the stopped timer must not fire into anything
    expect(t:status()):to_be("ok")
  end)

  it("refuses to wait for itself", function()
    local me
    me = vigil.spawn(function()
      vigil.sleep(0)
      return pcall(vigil.wait, me)
    end)
    local ok, err = vigil.wait(me)
    expect(ok):to_be(false)
    expect(err):to_contain("a task cannot wait for itself")
  end)

  it("lets several tasks wait for the same one", function()
    local target = vigil.spawn(function() vigil.sleep(3); return "shared" end)
    local a = vigil.spawn(function() return vigil.wait(target) end)
    local b = vigil.spawn(function() return vigil.wait(target) end)
    expect(vigil.wait(a)):to_be("shared")
    expect(vigil.wait(b)):to_be("shared")
  end)

  it("cancels children when their parent ends", function()
    local child
    local parent = vigil.spawn(function()
      child = vigil.spawn(function() vigil.sleep("1h") end)
      vigil.sleep(1)
      return "parent done"
    end)
    expect(vigil.wait(parent)):to_be("parent done")
    expect(child:status()):to_be("cancelled")
    expect(select(2, vigil.wait(child))):to_be("ECANCELED: parent task ended")
  end)

  it("cancels grandchildren with a failing parent", function()
    local grandchild
    local parent = vigil.spawn(function()
      vigil.spawn(function()
        grandchild = vigil.spawn(function() vigil.sleep("1h") end)
        vigil.sleep("1h")
      end)
      vigil.sleep(1)
      error("parent failed")
    end)
    local _, err = vigil.wait(parent)
    expect(err):to_contain("parent failed")
    expect(grandchild:status()):to_be("cancelled")
  end)

  it("raises on bad arguments", function()
    expect(errors_with(vigil.spawn, "not a function")):to_contain("bad argument #1")
    expect(errors_with(vigil.wait, {})):to_contain("bad argument #1")
    local t = vigil.spawn(function() end)
    expect(errors_with(vigil.wait, t, "soon")):to_contain("invalid duration")
  end)
end)

describe("vigil.all", function()
  it("runs the functions at once and returns their results in order", function()
    local t0 = vigil.now()
    local results, errors = vigil.all({
      function() vigil.sleep(1); return "cpu" end,
      function() vigil.sleep(2); return "logs" end,
      function() return nil, "EQUERY: bad_data: parse error" end,
      function() error("kaput") end,
    }, { timeout = "10s" })
    expect(vigil.now() - t0):to_be(2) -- concurrently, not 1 + 2
    expect(results[1]):to_be("cpu")
    expect(results[2]):to_be("logs")
    expect(results[3]):to_be_nil()
    expect(results[4]):to_be_nil()
    expect(errors[1]):to_be_nil()
    expect(errors[2]):to_be_nil()
    expect(errors[3]):to_be("EQUERY: bad_data: parse error")
    expect(errors[4]):to_match("^ETASK: .*kaput")
  end)

  it("returns nil errors when everything succeeded", function()
    local results, errors = vigil.all({ function() return 1 end, function() return 2 end })
    expect(results):to_equal({ 1, 2 })
    expect(errors):to_be_nil()
    results, errors = vigil.all({})
    expect(results):to_equal({})
    expect(errors):to_be_nil()
  end)

  it("times out, cancels the unfinished functions and reports ETIMEDOUT", function()
    local finished = false
    local t0 = vigil.now()
    local results, errors = vigil.all({
      function() return "fast" end,
      function() vigil.sleep("1h"); finished = true; return "slow" end,
    }, { timeout = "10s" })
    expect(vigil.now() - t0):to_be(10)
    expect(results[1]):to_be("fast")
    expect(results[2]):to_be_nil()
    expect(errors[2]):to_be("ETIMEDOUT: function 2 did not finish within 10s")
    vigil.sleep("5m")
    expect(finished):to_be(false)
  end)

  it("raises on bad arguments", function()
    expect(errors_with(vigil.all, "x")):to_contain("table of functions expected")
    expect(errors_with(vigil.all, { function() end, 5 }))
      :to_contain("element 2 is a number, not a function")
  end)
end)

describe("vigil.every", function()
  it("runs the job every interval until stopped", function()
    local seen = {}
    local t0 = vigil.now()
    local job = vigil.every("10s", function() seen[#seen + 1] = vigil.now() - t0 end,
      { name = "count" })
    expect(job.active):to_be(true)
    vigil.sleep("35s")
    job:stop()
    expect(seen):to_equal({ 10, 20, 30 })
    expect(job.runs):to_be(3)
    expect(job.skipped):to_be(0)
    expect(job.failures):to_be(0)
    expect(job.active):to_be(false)
    vigil.sleep("1m")
    expect(#seen):to_be(3) -- stopped means stopped
    expect(job.runs):to_be(3) -- the counts stay readable
    job:stop() -- twice is harmless
  end)

  it("delays the first run by opts.first", function()
    local seen = {}
    local t0 = vigil.now()
    local job = vigil.every("1m", function() seen[#seen + 1] = vigil.now() - t0 end,
      { first = "5s" })
    vigil.sleep("2m10s")
    job:stop()
    expect(seen):to_equal({ 5, 65, 125 })
  end)

  it("skips ticks while the previous run is still going, and counts them", function()
    local runs = 0
    local job = vigil.every("10s", function() runs = runs + 1; vigil.sleep("25s") end)
    vigil.sleep("65s")
    job:stop()
    expect(runs):to_be(2) -- at 10 s and 40 s
    expect(job.runs):to_be(2)
    expect(job.skipped):to_be(4) -- 20, 30, 50, 60
  end)

  it("counts failed runs and keeps going", function()
    local job = vigil.every("10s", function() error("tick failed") end)
    vigil.sleep("31s")
    expect(job.failures):to_be(3)
    expect(job.runs):to_be(3)
    expect(job.active):to_be(true)
    job:stop()
    expect(job.failures):to_be(3)
  end)

  it("has no other fields", function()
    local job = vigil.every("1m", function() end)
    expect(job.nonexistent):to_be_nil()
    job:stop()
  end)

  it("raises on bad arguments", function()
    expect(errors_with(vigil.every, "5ms", function() end))
      :to_contain("interval must be at least 10ms")
    expect(errors_with(vigil.every, "soon", function() end)):to_contain("invalid duration")
    expect(errors_with(vigil.every, "1s", "not a function")):to_contain("bad argument #2")
    expect(errors_with(vigil.every, "1s", function() end, { first = "later" }))
      :to_contain("invalid duration")
  end)
end)

describe("vigil.log", function()
  it("has one function per level, returning nothing", function()
    for _, level in ipairs({ "debug", "info", "warn", "error" }) do
      expect(vigil.log[level]):to_be_a("function")
      expect(select("#", vigil.log[level]("spec log line", { level = level }))):to_be(0)
    end
  end)

  it("accepts any message and field values, and skips non-string keys", function()
    vigil.log.info(42)
    vigil.log.info("fields", { n = 1, f = 1.5, b = true, t = {}, [1] = "positional",
      s = setmetatable({}, { __tostring = function() return "custom" end }) })
    vigil.log.warn("label with a newline is escaped", { pod = "evil\nlevel=error" })
    vigil.log.info("no fields")
    expect(true):to_be(true)
  end)

  it("refuses unknown levels in the core function", function()
    local core = require("vigil.core")
    expect(errors_with(core.log, "loud", "msg")):to_contain("invalid option 'loud'")
    expect(errors_with(core.log, "info")):to_contain("bad argument #2")
  end)
end)

describe("the vigil table", function()
  it("is read-only for the code that uses it", function()
    expect(errors_with(function() vigil.sleep = nil end)) -- luacheck: ignore 122
      :to_contain("attempt to modify read-only table 'vigil'")
    expect(errors_with(function() vigil.log.info = print end)) -- luacheck: ignore 122
      :to_contain("attempt to modify read-only table")
  end)

  it("offers the documented functions", function()
    for _, name in ipairs({ "sleep", "now", "duration", "spawn", "wait", "all", "every",
                            "inspect" }) do
      expect(vigil[name]):to_be_a("function")
    end
    expect(vigil.json.decode):to_be_a("function")
    expect(vigil.json.encode):to_be_a("function")
  end)
end)
