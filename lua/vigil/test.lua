-- vigil.test: the spec harness behind `vigil test`. describe/it/pending, before_each and
-- after_each, expect(...) assertions with expected-vs-actual messages at the spec's
-- file:line, spies, a virtual clock, and loading a policy exactly as the daemon would.
-- Each `it` runs as its own task: it may sleep, spawn and wait like a policy.
local vigil = require("vigil")
local testing = require("vigil.testing")
local inspect = require("vigil.inspect").inspect

local M = {}

local function show(v)
  return inspect(v, { compact = true, depth = 4, width = 20 })
end

-- ---- assertions ----

local function deep_equal(a, b, seen)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then
    return a ~= a and b ~= b -- NaN equals NaN here
  end
  seen = seen or {}
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in next, a do
    if not deep_equal(v, rawget(b, k), seen) then return false end
  end
  for k in next, b do
    if rawget(a, k) == nil then return false end
  end
  return true
end
M.deep_equal = deep_equal

local Expect = {}
Expect.__index = Expect

local function check(self, ok, message)
  if self.negated then ok = not ok; message = "not " .. message end
  if not ok then error(message, 3) end
  return self
end

--- expect(v):to_be(x): v == x (same value or same table).
function Expect:to_be(expected)
  check(self, self.actual == expected,
    ("expected %s to be %s"):format(show(self.actual), show(expected)))
  return self
end

--- expect(v):to_equal(x): deep equality of tables, == for the rest.
function Expect:to_equal(expected)
  check(self, deep_equal(self.actual, expected),
    ("expected: %s\n     actual: %s"):format(show(expected), show(self.actual)))
  return self
end

function Expect:to_be_truthy()
  check(self, self.actual and true or false, ("expected %s to be truthy"):format(show(self.actual)))
  return self
end

function Expect:to_be_falsy()
  check(self, not self.actual, ("expected %s to be falsy"):format(show(self.actual)))
  return self
end

function Expect:to_be_nil()
  check(self, self.actual == nil, ("expected %s to be nil"):format(show(self.actual)))
  return self
end

function Expect:to_be_a(kind)
  check(self, type(self.actual) == kind,
    ("expected a %s, got %s"):format(kind, show(self.actual)))
  return self
end

function Expect:to_be_near(expected, tolerance)
  tolerance = tolerance or 1e-9
  local ok = type(self.actual) == "number" and math.abs(self.actual - expected) <= tolerance
  local msg = ("expected %s to be within %s of %s"):format(show(self.actual), tolerance, expected)
  check(self, ok, msg)
  return self
end

function Expect:to_be_greater_than(n)
  check(self, type(self.actual) == "number" and self.actual > n,
    ("expected %s to be greater than %s"):format(show(self.actual), n))
  return self
end

function Expect:to_be_less_than(n)
  check(self, type(self.actual) == "number" and self.actual < n,
    ("expected %s to be less than %s"):format(show(self.actual), n))
  return self
end

--- expect(s):to_match(pattern): a Lua pattern found in the string.
function Expect:to_match(pattern)
  local ok = type(self.actual) == "string" and self.actual:find(pattern) ~= nil
  check(self, ok, ("expected %s to match %q"):format(show(self.actual), pattern))
  return self
end

--- expect(s):to_contain(x): plain substring of a string, or a value of a list.
function Expect:to_contain(value)
  local ok = false
  if type(self.actual) == "string" then
    ok = self.actual:find(value, 1, true) ~= nil
  elseif type(self.actual) == "table" then
    for _, v in ipairs(self.actual) do
      if deep_equal(v, value) then ok = true break end
    end
  end
  check(self, ok, ("expected %s to contain %s"):format(show(self.actual), show(value)))
  return self
end

--- expect(fn):to_fail(pattern?): calling fn raises an error (whose text contains `pattern`,
-- plain). Returns the error message for further checks.
function Expect:to_fail(pattern)
  if type(self.actual) ~= "function" then error("to_fail expects a function", 2) end
  local ok, err = pcall(self.actual)
  local text = tostring(err)
  local matched = not ok and (pattern == nil or text:find(pattern, 1, true) ~= nil)
  local message
  if ok then
    message = "expected the function to fail, but it returned"
  else
    message = ("expected an error containing %q, got %q"):format(tostring(pattern), text)
  end
  check(self, matched, message)
  return text
end

--- expect(spy):to_have_been_called(n?): the spy was called (n times).
function Expect:to_have_been_called(n)
  local calls = type(self.actual) == "table" and rawget(self.actual, "calls")
  if not calls then error("to_have_been_called expects a spy", 2) end
  local ok = n == nil and #calls > 0 or #calls == n
  check(self, ok, ("expected the spy to be called %s, it was called %d times")
    :format(n and (n .. " times") or "at least once", #calls))
  return self
end

local function expect(actual)
  local e = setmetatable({ actual = actual, negated = false }, Expect)
  e.never = setmetatable({ actual = actual, negated = true }, Expect)
  return e
end
M.expect = expect

--- spy(fn?): a callable that records its calls ({...} each, in spy.calls) and returns fn(...).
local function spy(fn)
  local s = { calls = {} }
  return setmetatable(s, {
    __call = function(_, ...)
      s.calls[#s.calls + 1] = table.pack(...)
      if fn then return fn(...) end
    end,
  })
end
M.spy = spy

-- ---- policies under test ----

local Policy = {}
Policy.__index = Policy

--- vigil.test.policy(path): loads a policy file the way the daemon does (same sandbox and
-- validation). Returns an object with :matches(alert), :alert(alert) and :run(job); logs the
-- policy writes through ctx.log are kept in policy.logs.
function M.policy(path)
  M.cluster(nil)
  local tbl, name, matchers = testing.load_policy(path)
  local p = setmetatable({ name = name, table = tbl, matchers = matchers, logs = {} }, Policy)
  local function logger(level)
    return function(msg, fields)
      p.logs[#p.logs + 1] = { level = level, msg = msg, fields = fields }
    end
  end
  -- ctx.sources: the config's sources unless the spec puts a fake in policy.sources
  p.sources = {}
  p.ctx = {
    policy = name,
    now = vigil.now,
    log = { debug = logger("debug"), info = logger("info"), warn = logger("warn"),
            error = logger("error") },
    sources = setmetatable({}, { __index = function(_, k)
      return p.sources[k] or assert(vigil.source(k))
    end }),
  }
  -- contract v2: the loader refused any mix of on_alert and the pipeline's hooks
  for _, hook in ipairs(require("vigil.pipeline").HOOKS) do
    p.v2 = p.v2 or rawget(tbl, hook) ~= nil
  end
  return p
end

--- ingest(alert) -> alert: stores the alert in the spec's store as the intake would (a v2
-- postable alert), so it belongs to a real incident; sets alert.incident and fingerprint.
function M.ingest(alert)
  local http = require("vigil.http")
  local doc = { labels = alert.labels, annotations = alert.annotations or {} }
  if alert.starts_at then doc.startsAt = http.format_rfc3339(alert.starts_at) end
  if alert.status == "resolved" then
    doc.endsAt = http.format_rfc3339(math.min(alert.ends_at or vigil.now(), vigil.now()))
  elseif alert.ends_at then
    doc.endsAt = http.format_rfc3339(alert.ends_at)
  end
  local r, err = testing.ingest(require("vigil.json").encode({ doc }))
  if not r then error(err, 2) end
  alert.incident = r[1].incident
  alert.fingerprint = r[1].fingerprint
  alert.outcome = r[1].outcome
  return alert
end

--- cluster{ ["deployment/shop/api"] = { spec = { replicas = 2 } }, ... }: what kubectl get
-- answers in this spec (vigil.actions reads such as scale's "+20%" see these objects; an
-- object not listed is NotFound). cluster(nil) goes back to the real kubectl.
function M.cluster(objects)
  if objects == nil then return require("vigil.actions").fake_reads(nil) end
  local json = require("vigil.json")
  require("vigil.actions").fake_reads(function(opts)
    local key = ("%s/%s/%s"):format(opts.kind or "deployment", opts.namespace or "default",
      opts.name or "")
    local obj = objects[key]
    if obj == nil then
      return nil, ("EEXIT: kubectl get: Error from server (NotFound): %s not found"):format(key)
    end
    return json.encode(obj)
  end)
end

--- A range result as vigil.prom's query_range returns it, for fake sources:
-- series({ 0.5, 0.7, 0.95 }, { pod = "x" } [, step = 30]) ends now.
function M.series(values, labels, step)
  local ts, t0 = {}, vigil.now() - #values * (step or 30)
  for i in ipairs(values) do ts[i] = t0 + i * (step or 30) end
  return { { labels = labels or {}, ts = ts, values = values } }
end

--- True when the policy's matchers accept the alert's labels.
function Policy:matches(alert)
  return self.matchers:match(alert.labels or {})
end

--- Runs on_alert(alert, ctx) in the current task if the alert matches; returns
-- matched, on_alert's results.
function Policy:alert(alert)
  alert.labels = alert.labels or {}
  alert.annotations = alert.annotations or {}
  alert.status = alert.status or "firing"
  alert.name = alert.name or alert.labels.alertname
  alert.severity = alert.severity or alert.labels.severity
  if not self:matches(alert) then return false end
  if self.v2 then
    -- contract v2: the pipeline runs it, on a real incident in the spec's store
    if alert.incident == nil and require("vigil.memory").available() then M.ingest(alert) end
    return true, require("vigil.pipeline").run(self.table, alert, self.ctx)
  end
  local on_alert = rawget(self.table, "on_alert")
  if not on_alert then error("policy '" .. self.name .. "' has no on_alert", 2) end
  return true, on_alert(alert, self.ctx)
end

--- Runs one of the policy's every jobs once.
function Policy:run(job)
  local jobs = rawget(self.table, "every") or {}
  local j = jobs[job]
  if not j then
    error("policy '" .. self.name .. "' has no every job '" .. tostring(job) .. "'", 2)
  end
  return j.run(self.ctx)
end

-- ---- the virtual clock ----

M.clock = {
  --- Moves virtual time forward, firing every timer due on the way (the target included) and
  -- letting the tasks they woke run once before returning.
  advance = function(d)
    vigil.sleep(d)
    vigil.sleep(0)
  end,
  now = vigil.now,
  --- Sets the virtual time (seconds since the epoch), like setting a machine's date: pending
  -- timers keep their remaining delay and nothing fires. Use advance to let time pass.
  set = function(t) testing.set_time(t) end,
  pending = testing.pending_timers,
}

-- ---- describe / it ----

--- Runs one spec file; returns passed, failed, pending.
function M.run_file(path)
  local root = { name = nil, children = {}, before = {}, after = {} }
  local current = root
  local function add(kind, name, fn, opts)
    current.children[#current.children + 1] = { kind = kind, name = name, fn = fn, opts = opts }
  end
  local env = {
    describe = function(name, fn)
      local group = { name = name, children = {}, before = {}, after = {}, parent = current }
      current.children[#current.children + 1] = { kind = "group", group = group }
      local saved = current
      current = group
      fn()
      current = saved
    end,
    it = function(name, fn, opts) add("test", name, fn, opts) end,
    pending = function(name) add("pending", name) end,
    before_each = function(fn) current.before[#current.before + 1] = fn end,
    after_each = function(fn) current.after[#current.after + 1] = fn end,
    expect = expect,
    spy = spy,
  }
  local chunk = testing.load_spec(path, env)
  chunk()

  local passed, failed, npending = 0, 0, 0
  local function full_name(group, name)
    local parts = { name }
    while group and group.name do
      table.insert(parts, 1, group.name)
      group = group.parent
    end
    return table.concat(parts, " › ")
  end
  local function hooks(group, which)
    local list = {}
    local chain = {}
    while group do table.insert(chain, 1, group); group = group.parent end
    if which == "after" then
      for i = #chain, 1, -1 do for _, f in ipairs(chain[i].after) do list[#list + 1] = f end end
    else
      for _, g in ipairs(chain) do for _, f in ipairs(g.before) do list[#list + 1] = f end end
    end
    return list
  end
  local function run_test(group, t)
    local name = full_name(group, t.name)
    if t.kind == "pending" or not t.fn then
      npending = npending + 1
      print("  pending  " .. name)
      return
    end
    local timeout = t.opts and t.opts.timeout or "10m"
    local task = vigil.spawn(function()
      for _, f in ipairs(hooks(group, "before")) do f() end
      t.fn()
      for _, f in ipairs(hooks(group, "after")) do f() end
      return true
    end)
    local ok, err = vigil.wait(task, timeout)
    testing.stop_jobs()
    if ok then
      passed = passed + 1
    else
      failed = failed + 1
      if err and err:sub(1, 10) == "ETIMEDOUT:" then task:cancel("test timed out") end
      err = tostring(err):gsub("^ETASK: ", "")
      -- keep the frames of the spec and of the code under test, not the harness's own
      local lines = {}
      for line in (err .. "\n"):gmatch("(.-)\n") do
        local harness = line:find("lua/vigil/test.lua", 1, true)
          or line:find("in function 'error'", 1, true)
          or line:find("(...tail calls...)", 1, true)
        if not harness then
          lines[#lines + 1] = line
        end
      end
      if lines[#lines] == "stack traceback:" then lines[#lines] = nil end
      print(("  FAIL     %s\n    %s"):format(name, table.concat(lines, "\n    ")))
    end
  end
  local function walk(group)
    for _, child in ipairs(group.children) do
      if child.kind == "group" then walk(child.group) else run_test(group, child) end
    end
  end
  walk(root)
  print(("%s: %d passed, %d failed%s"):format(path, passed, failed,
    npending > 0 and (", " .. npending .. " pending") or ""))
  return passed, failed, npending
end

return M
