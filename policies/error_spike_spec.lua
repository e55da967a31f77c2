-- Spec of policies/error_spike.lua: `vigil test policies`. The policy's analysers live in the
-- runtime for the whole file (shared by every VM), and alerts are grouped by service: each
-- test has its own service. Specs have no notifiers, so notify steps end ENONOTIFIER; what
-- they would send is read from the plan the pipeline remembers.
local T = require("vigil.test")
local memory = require("vigil.memory")

local NEW = "FATAL payment provider returned invalid signature for order 1001"

-- A day of known errors, one every 10 minutes: two templates, oldest 24 h ago, newest now.
local function day_of_errors()
  local lines = {}
  for i = 0, 143 do
    lines[#lines + 1] = { age = i * 600, line = i % 2 == 0
      and ("ERROR db timeout after %ds (query %d)"):format(30 + i % 5, 1000 + i)
      or ("ERROR upstream reset by peer (conn %d)"):format(i) }
  end
  return lines
end

-- A Loki answering log queries as vigil.loki does: { ts = <ns>, line }, newest first.
local function loki_returning(lines)
  local fake = { calls = {} }
  function fake:query_range(q, opts)
    self.calls[#self.calls + 1] = { query = q, start = opts.start, limit = opts.limit }
    local now = vigil.now()
    table.sort(lines, function(a, b) return a.age < b.age end)
    local out = {}
    for i, l in ipairs(lines) do
      out[i] = { ts = math.floor((now - l.age) * 1e9), line = l.line }
    end
    return out
  end
  return fake
end

local function alert(service)
  return { labels = { alertname = "HighErrorRate", severity = "error", service = service } }
end

local function planned(a)
  local p = memory.state("error-spike").get("plan:incident-" .. a.incident)
  return p and p.steps
end

describe("error-spike", function()
  local policy
  before_each(function() policy = T.policy("policies/error_spike.lua") end)

  it("matches the error-rate alerts only", function()
    expect(policy:matches(alert("m"))):to_be(true)
    expect(policy:matches({ labels = { alertname = "ErrorRateSpike" } })):to_be(true)
    expect(policy:matches({ labels = { alertname = "HighLatency" } })):to_be(false)
  end)

  it("asks Loki for the service's error lines of the last day, the label quoted", function()
    policy.sources.loki = loki_returning({})
    policy:alert(alert("query"))
    policy:alert(alert('x"} |= "'))
    expect(policy.sources.loki.calls):to_equal({
      { start = "24h", limit = 5000,
        query = '{service="query"} |~ "(?i)error|exception|fatal|panic"' },
      { start = "24h", limit = 5000,
        query = '{service="x\\"} |= \\""} |~ "(?i)error|exception|fatal|panic"' },
    })
  end)

  it("an error template the day never showed, in the last 15 minutes: pages with it", function()
    local lines = day_of_errors()
    lines[#lines + 1] = { age = 14 * 60, line = NEW }
    lines[#lines + 1] = { age = 60, line = NEW:gsub("1001", "1002") }
    policy.sources.loki = loki_returning(lines)
    local a = alert("checkout")
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("new_error_pattern")
    expect(rec.confidence):to_be(0.8)
    expect(rec.evidence):to_equal({ new_templates = 1,
      template = "FATAL payment provider returned invalid signature for order <*>" })
    expect(rec.auto):to_be(true)
    expect(#rec.actions):to_be(1)
    expect(rec.actions[1].action):to_be("notify")
    expect(rec.actions[1].error):to_be("ENONOTIFIER: no notifier 'oncall' in the config")
    expect(planned(a)):to_equal({ { action = "notify", to = "oncall", severity = "error",
      summary = "checkout: new error pattern: FATAL payment provider returned invalid "
        .. "signature for order <*>" } })
  end)

  it("only errors the day already showed: error_spike, tells the team the top ones", function()
    policy.sources.loki = loki_returning(day_of_errors())
    local a = alert("cart")
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("error_spike")
    expect(rec.confidence):to_be(0.6)
    local top = rec.evidence.top
    expect(#top):to_be(2)
    expect(top[1].count):to_be(72)
    expect(top[2].count):to_be(72)
    expect(rec.actions[1].action):to_be("notify")
    expect(rec.actions[1].optional):to_be(true)
    local text = planned(a)[1].text
    expect(text):to_contain("cart error spike; top errors:\n72 x ")
    expect(text):to_contain("ERROR db timeout after <*> (query <*>)")
    expect(text):to_contain("ERROR upstream reset by peer (conn <*>)")
  end)

  it("a template first seen more than 15 minutes ago is not new", function()
    local lines = day_of_errors()
    lines[#lines + 1] = { age = 16 * 60, line = NEW }
    lines[#lines + 1] = { age = 60, line = NEW:gsub("1001", "1002") }
    policy.sources.loki = loki_returning(lines)
    local _, rec = policy:alert(alert("payments"))
    expect(rec.class):to_be("error_spike")
  end)

  it("a service whose first errors ever are recent: they are new", function()
    policy.sources.loki = loki_returning({ { age = 120, line = NEW } })
    local _, rec = policy:alert(alert("fresh"))
    expect(rec.class):to_be("new_error_pattern")
  end)

  it("a second alert does not count the day twice", function()
    policy.sources.loki = loki_returning(day_of_errors())
    local _, rec = policy:alert(alert("twice"))
    expect(rec.evidence.top[1].count):to_be(72)
    T.clock.advance("10m")
    _, rec = policy:alert(alert("twice"))
    expect(rec.class):to_be("error_spike")
    -- 72 of each template in the day before, one more of the newest 10 minutes
    expect(rec.evidence.top[1].count + rec.evidence.top[2].count):to_be(145)
  end, { timeout = "1h" })

  it("a reload (a new VM, the same analyser) does not count the day twice", function()
    policy.sources.loki = loki_returning(day_of_errors())
    policy:alert(alert("reloaded"))
    local again = T.policy("policies/error_spike.lua")
    again.sources.loki = loki_returning(day_of_errors())
    local _, rec = again:alert(alert("reloaded"))
    expect(rec.evidence.top[1].count + rec.evidence.top[2].count):to_be(144)
    expect(vigil.logs.analyser("error-spike:reloaded"):stats().lines):to_be(144)
  end)

  it("the limit cut the logs off inside the last 15 minutes: no pattern is called new",
    function()
      local lines = {}
      for i = 1, 5000 do
        lines[i] = { age = i * 0.1, line = ("ERROR cache miss storm on shard %d"):format(i % 7) }
      end
      lines[1].line = NEW
      policy.sources.loki = loki_returning(lines)
      local _, rec = policy:alert(alert("busy"))
      expect(rec.class):to_be("error_spike")
      expect(rec.evidence.truncated):to_be(true)
    end)

  it("Loki down: recorded, a spike of unknown errors", function()
    policy.sources.loki = { query_range = function() return nil, "EHTTP: 502 from /loki" end }
    local _, rec = policy:alert(alert("dark"))
    expect(rec.steps[2].errors.logs):to_be("EHTTP: 502 from /loki")
    expect(rec.class):to_be("error_spike")
    expect(rec.evidence.top):to_equal({})
  end)
end)
