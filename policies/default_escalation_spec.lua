-- Spec of policies/default_escalation.lua: `vigil test policies`. Timers are read back from the
-- store with vigil.memory.escalations; firing them (and acknowledging) is the daemon's part,
-- covered by tests/integration/pipeline_e2e.sh. Each test has its own namespace (incident).
local T = require("vigil.test")
local memory = require("vigil.memory")

local function alert(namespace, severity)
  return { labels = { alertname = "KubeAPIErrorsHigh", severity = severity or "critical",
    namespace = namespace }, starts_at = vigil.now() - 60 }
end

local function timers(incident)
  local out = {}
  for i, e in ipairs(memory.escalations(incident)) do
    out[i] = { level = e.level, name = e.name, state = e.state, due_at = e.due_at / 1000 }
  end
  return out
end

describe("default-escalation", function()
  local policy
  before_each(function() policy = T.policy("policies/default_escalation.lua") end)

  it("matches critical alerts of any name, nothing else", function()
    expect(policy:matches(alert("m"))):to_be(true)
    expect(policy:matches({ labels = { alertname = "X", severity = "critical" } })):to_be(true)
    expect(policy:matches(alert("m", "warning"))):to_be(false)
    expect(policy:matches({ labels = { alertname = "X" } })):to_be(false)
  end)

  it("a critical alert: on-call 5 minutes after it started, managers 25 minutes after", function()
    local a = alert("crit")
    local matched, rec = policy:alert(a)
    expect(matched):to_be(true)
    expect(#rec.escalations):to_be(2)
    expect(rec.escalations[1].created):to_be(true)
    expect(rec.escalations[2].created):to_be(true)
    expect(timers(a.incident)):to_equal({
      { level = 1, name = "on-call", state = "pending", due_at = a.starts_at + 5 * 60 },
      { level = 2, name = "incident managers", state = "pending", due_at = a.starts_at + 25 * 60 },
    })
    -- escalation only: nothing classified, nothing done
    expect(rec.class):to_be("unknown")
    expect(rec.actions):to_equal({})
  end)

  it("a warning schedules nothing", function()
    local a = T.ingest(alert("warn", "warning"))
    expect(policy:alert(a)):to_be(false)
    expect(memory.escalations(a.incident)):to_equal({})
  end)

  it("the same alert delivered again keeps the timers it has", function()
    local a = alert("again")
    local _, first = policy:alert(a)
    T.clock.advance("2m")
    local b = alert("again")
    b.starts_at = a.starts_at
    local _, rec = policy:alert(b)
    expect(b.incident):to_be(a.incident)
    expect(rec.escalations):to_equal({
      { level = 1, id = first.escalations[1].id, created = false },
      { level = 2, id = first.escalations[2].id, created = false },
    })
    expect(timers(a.incident)[1].due_at):to_be(a.starts_at + 5 * 60)
  end, { timeout = "1h" })

  it("an alert that started long ago has its timers due at once", function()
    local a = alert("late")
    a.starts_at = vigil.now() - 3600
    policy:alert(a)
    for _, t in ipairs(timers(a.incident)) do
      expect(t.due_at):to_be_less_than(vigil.now())
      expect(t.state):to_be("pending")
    end
  end)

  it("the incident resolving cancels the timers that have not fired", function()
    local a = alert("resolves")
    policy:alert(a)
    local r = alert("resolves")
    r.status = "resolved"
    policy:alert(r)
    for _, t in ipairs(timers(a.incident)) do expect(t.state):to_be("cancelled") end
    expect(#timers(a.incident)):to_be(2)
  end)

  it("leaves the verdict of the policy that classified the incident", function()
    local crash = T.policy("policies/crash_loop.lua")
    crash.sources.prom = { query = function() return { { labels = {}, value = 4 } } end }
    local a = alert("verdict")
    a.labels.alertname, a.labels.pod = "KubePodCrashLooping", "api-7d9f5c-x2x1z"
    crash:alert(a)
    policy:alert(a)
    local kb = memory.report(a.incident).kb
    expect(kb.policy):to_be("crash-loop")
    expect(kb.class):to_be("crash_looping")
    expect(kb.fix):to_be("crash_looping")
  end)
end)
