-- Spec of policies/crash_loop.lua: `vigil test policies`. One store for the whole file: each
-- test has its own namespace (its own incident). Specs run the executor in dry-run.
local T = require("vigil.test")
local memory = require("vigil.memory")

local POD = "api-7d9f5c-x2x1z"

-- A Prometheus whose instant queries answer `restarts` (nil: an empty vector).
local function prom_returning(restarts)
  local fake = { queries = {} }
  function fake:query(q)
    self.queries[#self.queries + 1] = q
    if restarts == nil then return {} end
    return { { labels = { pod = POD }, value = restarts } }
  end
  return fake
end

local function alert(namespace, labels)
  local l = { alertname = "KubePodCrashLooping", severity = "warning", namespace = namespace,
    pod = POD, container = "api" }
  for k, v in pairs(labels or {}) do l[k] = v end
  return { labels = l, starts_at = vigil.now() - 60 }
end

local function timers(incident)
  local out = {}
  for i, e in ipairs(memory.escalations(incident)) do
    out[i] = { level = e.level, name = e.name, state = e.state, due_at = e.due_at / 1000 }
  end
  return out
end

local function ledger(incident)
  local out = {}
  for i, a in ipairs(memory.report(incident).actions) do
    out[i] = { type = a.type, target = a.target, state = a.state }
  end
  return out
end

describe("crash-loop", function()
  local policy
  before_each(function()
    policy = T.policy("policies/crash_loop.lua")
    policy.sources.prom = prom_returning(5)
  end)

  it("matches the crash-looping alerts only", function()
    expect(policy:matches(alert("m"))):to_be(true)
    expect(policy:matches(alert("m", { alertname = "PodCrashLooping" }))):to_be(true)
    expect(policy:matches(alert("m", { alertname = "KubePodNotReady" }))):to_be(false)
  end)

  it("counts the pod's restarts over 15 minutes, labels quoted", function()
    policy:alert(alert("query"))
    expect(policy.sources.prom.queries):to_equal({ "increase(kube_pod_container_status_"
      .. 'restarts_total{namespace="query",pod="api-7d9f5c-x2x1z"}[15m])' })
  end)

  it("restarts the Deployment without approval, even at critical, and schedules the page",
    function()
      local a = alert("shop", { severity = "critical" })
      local _, rec = policy:alert(a)
      expect(rec.class):to_be("crash_looping")
      expect(rec.confidence):to_be(0.9)
      expect(rec.plan):to_be("crash_looping")
      expect(rec.auto):to_be(true)
      expect(#rec.actions):to_be(1)
      expect(rec.actions[1].action):to_be("restart")
      expect(rec.actions[1].state):to_be("dry-run")
      expect(ledger(a.incident)):to_equal({
        { type = "restart", target = "shop/deployment/api", state = "dry-run" } })
      -- the on-call is paged 15 minutes after the alert started unless someone acknowledges
      expect(rec.escalations):to_equal({ { level = 1, id = rec.escalations[1].id,
        created = true } })
      expect(timers(a.incident)):to_equal({ { level = 1, name = "on-call", state = "pending",
        due_at = a.starts_at + 15 * 60 } })
    end)

  it("two restarts or fewer, or no data: still crash looping, with less confidence", function()
    policy.sources.prom = prom_returning(2)
    local _, rec = policy:alert(alert("few"))
    expect(rec.class):to_be("crash_looping")
    expect(rec.confidence):to_be(0.6)
    expect(rec.actions[1].state):to_be("dry-run")

    policy.sources.prom = prom_returning(nil)
    _, rec = policy:alert(alert("nodata"))
    expect(rec.confidence):to_be(0.6)
    expect(rec.actions[1].action):to_be("restart")
  end)

  it("refused by the cooldown: no second restart, the page is brought forward to now",
    function()
      local a = alert("cool")
      local _, rec = policy:alert(a)
      expect(rec.actions[1].state):to_be("dry-run")
      local planned = a.starts_at + 15 * 60

      T.clock.advance("10m")
      local again = alert("cool")
      again.starts_at = a.starts_at
      _, rec = policy:alert(again)
      expect(again.incident):to_be(a.incident)
      expect(rec.refused):to_match("^ECOOLDOWN: the policy acted on "
        .. "incident%-%d+:group:crash%-loop:cool:api%-7d9f5c%-x2x1z 600s ago")
      expect(rec.actions):to_equal({})
      expect(rec.steps[5].step):to_be("escalate_now")
      expect(rec.steps[5].error):to_be_nil()
      local now = vigil.now()
      expect(now):to_be_less_than(planned)
      expect(timers(a.incident)):to_equal({ { level = 1, name = "on-call", state = "pending",
        due_at = now } })
      expect(#ledger(a.incident)):to_be(1)

      -- after 30 minutes the policy may act on it again
      T.clock.advance("21m")
      _, rec = policy:alert(alert("cool"))
      expect(rec.refused):to_be_nil()
      expect(rec.actions[1].state):to_be("dry-run")
    end, { timeout = "2h" })

  it("a restart that fails stops the plan and brings the page forward too", function()
    local a = alert("fails", { pod = "API_7d9f5c" }) -- no Kubernetes name: refused by the builder
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("crash_looping")
    expect(rec.actions[1].state):to_be("failed")
    expect(rec.actions[1].error):to_match("^EINVAL: ")
    expect(rec.actions[1].stopped):to_be(true)
    expect(ledger(a.incident)):to_equal({})
    expect(timers(a.incident)):to_equal({ { level = 1, name = "on-call", state = "pending",
      due_at = vigil.now() } })
  end)

  it("a plan that went through leaves the page where it was", function()
    local a = alert("through")
    a.starts_at = vigil.now() - 5 * 60
    policy:alert(a)
    expect(timers(a.incident)[1].due_at):to_be(a.starts_at + 15 * 60)
  end)
end)
