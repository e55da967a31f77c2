-- Spec of the tutorial's policy (docs/tutorial.md): `vigil test examples/policies`.
local T = require("vigil.test")

local function prom(values)
  return { query_range = function() return T.series(values) end }
end

local ALERT = { alertname = "CheckoutSlow", severity = "warning", service = "checkout",
  namespace = "shop" }

describe("slow-checkout", function()
  local policy
  before_each(function() policy = T.policy("examples/policies/slow_checkout.lua") end)

  it("plans a restart that waits for approval when the latency is really high", function()
    policy.sources.prom = prom({ 0.4, 1.8, 2.1 })
    local _, rec = policy:alert({ labels = ALERT })
    expect(rec.class):to_be("slow")
    expect(rec.auto):to_be(false)
    expect(rec.actions[1].action):to_be("restart")
    -- specs run the executor in dry-run: the restart is recorded, not run (in enforce mode it
    -- would wait in "awaiting_approval" for `vigil approve ID`)
    expect(rec.actions[1].state):to_be("dry-run")
  end)

  it("suppresses the alert when Prometheus shows nothing wrong", function()
    policy.sources.prom = prom({ 0.2, 0.3, 0.25 })
    local _, rec = policy:alert({ labels = ALERT })
    expect(rec.class):to_be("false_positive")
    expect(rec.actions[1].action):to_be("suppress")
    expect(rec.actions[1].state):to_be("done")
  end)

  it("does nothing in between, but the escalation stands", function()
    policy.sources.prom = prom({ 0.9, 1.0, 1.1 })
    local alert = { labels = ALERT }
    local _, rec = policy:alert(alert)
    expect(rec.class):to_be("unknown")
    expect(#rec.actions):to_be(0)
    local timers = require("vigil.memory").escalations(alert.incident)
    expect(#timers):to_be(1)
    expect(timers[1].state):to_be("pending")
  end)
end)
