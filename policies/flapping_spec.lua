-- Spec of policies/flapping.lua: `vigil test policies`. The daemon hands a policy only new or
-- changed alerts, so flapping is fire, resolve, fire again. One store for the whole file: each
-- test uses its own instance (its own alert and incident).
local T = require("vigil.test")
local memory = require("vigil.memory")

local function labels_of(instance, extra)
  local l = { alertname = "NodeLoadHigh", severity = "warning", instance = instance }
  for k, v in pairs(extra or {}) do l[k] = v end
  return l
end

-- The alert as the daemon passes it: stored first, with its fingerprint (the key the policy
-- counts firings under).
local function stored(labels, status)
  local a = T.ingest({ labels = labels, status = status })
  for _, s in ipairs(memory.report(a.incident).alerts) do
    if s.labels.instance == labels.instance then a.fingerprint = s.fingerprint end
  end
  a.status = status
  return a
end

-- Fires the alert, resolves it `up` later, waits `down`; returns the firing's record.
local function flap(policy, labels, up, down)
  local _, rec = policy:alert(stored(labels))
  T.clock.advance(up or "5m")
  policy:alert(stored(labels, "resolved"))
  T.clock.advance(down or "5m")
  return rec
end

describe("flapping", function()
  local policy
  before_each(function() policy = T.policy("policies/flapping.lua") end)

  it("judges warning and lower alerts, never critical ones", function()
    for _, sev in ipairs({ "warning", "info", "low", "medium" }) do
      expect(policy:matches({ labels = labels_of("m", { severity = sev }) })):to_be(true)
    end
    expect(policy:matches({ labels = labels_of("m", { severity = "critical" }) })):to_be(false)
    expect(policy:matches({ labels = { alertname = "NodeLoadHigh" } })):to_be(false)
  end)

  it("the first three firings within the hour are not judged; the fourth is noise", function()
    local labels = labels_of("node-1:9100")
    for _ = 1, 3 do
      local rec = flap(policy, labels)
      expect(rec.class):to_be("unknown")
      expect(rec.actions):to_equal({})
      expect(rec.summary):to_be("unknown (0.00): no action")
    end
    local a = stored(labels)
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("false_positive")
    expect(rec.confidence):to_be(0.8)
    expect(rec.evidence):to_equal({ firings = 4, window = "1h" })
    expect(rec.plan):to_be("false_positive")
    expect(rec.auto):to_be(true) -- false positives at warning run without approval
    expect(#rec.actions):to_be(1)
    expect(rec.actions[1].action):to_be("suppress")
    expect(rec.actions[1].state):to_be("done") -- a local suppression is not an outside change
    expect(rec.actions[1].error):to_be_nil()
  end, { timeout = "2h" })

  it("suppresses by the labels naming the alert's source that it has", function()
    local plan = policy.table.plan
    local node = plan("false_positive", { labels = labels_of("node-2:9100") })
    expect(node[1].by):to_equal({ "alertname", "instance" })
    expect(node[1].duration):to_be("1h")
    expect(node[1].reason):to_be("flapping: fired more than 3 times within an hour")
    local pod = plan("false_positive", { labels = { alertname = "PodNotReady", pod = "api-1",
      service = "api", severity = "warning" } })
    expect(pod[1].by):to_equal({ "alertname", "pod", "service" })
    expect(plan("unknown", { labels = labels_of("x") })):to_be_nil()
  end)

  it("firings older than an hour do not count", function()
    local labels = labels_of("node-3:9100")
    flap(policy, labels, "5m", "20m")          -- t = 0
    flap(policy, labels, "5m", "5m")           -- t = 25m
    flap(policy, labels, "5m", "30m")          -- t = 35m
    local rec = flap(policy, labels, "5m", "0s") -- t = 70m: the first is out of the window
    expect(rec.class):to_be("unknown")
    rec = flap(policy, labels)                 -- t = 75m: 25m, 35m, 70m, 75m
    expect(rec.class):to_be("false_positive")
    expect(rec.evidence.firings):to_be(4)
  end, { timeout = "3h" })

  it("counts each alert apart: another instance's firings are not this one's", function()
    for _ = 1, 3 do flap(policy, labels_of("node-4:9100")) end
    local rec = flap(policy, labels_of("node-5:9100"))
    expect(rec.class):to_be("unknown")
    rec = flap(policy, labels_of("node-4:9100"))
    expect(rec.class):to_be("false_positive")
  end, { timeout = "2h" })

  it("a suppressed flap that resolves is not learnt as a fix for other policies", function()
    local labels = labels_of("node-6:9100", { alertname = "NodeDiskPressure" })
    for _ = 1, 3 do flap(policy, labels) end
    local _, rec = policy:alert(stored(labels))
    expect(rec.actions[1].state):to_be("done")
    T.clock.advance("5m")
    _, rec = policy:alert(stored(labels, "resolved"))
    expect(rec.carried_out):to_be(true)
    expect(rec.summary):to_be("resolved after false_positive: noise, not learnt as a fix")
    expect(memory.kb.fixes("NodeDiskPressure")):to_equal({})
  end, { timeout = "2h" })

  it("leaves the verdict of a policy that classified the same alert", function()
    local other = T.policy("policies/resource_exhaustion.lua")
    other.sources.prom = { query_range = function() return T.series({ 0.5 }) end }
    local a = T.ingest({ labels = { alertname = "PodCPUSaturation", severity = "warning",
      resource = "cpu", namespace = "kb", pod = "api-7d9f5c-x2x1z" } })
    local _, rec = other:alert(a)
    expect(rec.class):to_be("unconfirmed")
    _, rec = policy:alert(a)
    expect(rec.class):to_be("unknown")
    local kb = memory.report(a.incident).kb
    expect(kb.policy):to_be("resource-exhaustion")
    expect(kb.class):to_be("unconfirmed")
  end)
end)
