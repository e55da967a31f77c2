-- Spec of policies/resource_exhaustion.lua: `vigil test policies`. The spec's store lasts for
-- the whole file, so each test names its own namespace (its own incident); the executor runs
-- in dry-run, so nothing is "done" and specs have no notifiers (notify is ENONOTIFIER).
local T = require("vigil.test")
local memory = require("vigil.memory")

local POD = "api-7d9f5c-x2x1z"

-- A Prometheus that answers every range query with `values` and keeps the queries it got.
local function prom_returning(values)
  local fake = { queries = {} }
  function fake:query_range(q)
    self.queries[#self.queries + 1] = q
    return T.series(values, { pod = POD })
  end
  return fake
end

local function alert(namespace, labels)
  local l = { alertname = "PodCPUSaturation", severity = "warning", resource = "cpu",
    namespace = namespace, pod = POD }
  for k, v in pairs(labels or {}) do l[k] = v end
  return { labels = l }
end

-- What the action ledger holds for the incident: { { type, target, state }, ... }.
local function ledger(incident)
  local out = {}
  for i, a in ipairs(memory.report(incident).actions) do
    out[i] = { type = a.type, target = a.target, state = a.state }
  end
  return out
end

describe("resource-exhaustion", function()
  local policy
  before_each(function() policy = T.policy("policies/resource_exhaustion.lua") end)

  it("matches CPU and memory saturation only", function()
    expect(policy:matches(alert("m"))):to_be(true)
    expect(policy:matches(alert("m", { alertname = "PodMemorySaturation" }))):to_be(true)
    expect(policy:matches(alert("m", { alertname = "PodCPUThrottling" }))):to_be(false)
  end)

  it("asks Prometheus for the recording rule with the alert's labels, quoted", function()
    policy.sources.prom = prom_returning({ 0.5 })
    policy:alert(alert("query", { resource = "memory" }))
    expect(#policy.sources.prom.queries):to_be(1)
    expect(policy.sources.prom.queries[1]):to_be('vigil:pod_saturation:ratio'
      .. '{resource="memory",namespace="query",pod="api-7d9f5c-x2x1z"}')
  end)

  it("confirmed above 0.9: scales the pod's Deployment out, without approval", function()
    policy.sources.prom = prom_returning({ 0.5, 0.8, 0.95, 0.97 })
    T.cluster({ ["deployment/shop/api"] = { spec = { replicas = 2 } } })
    local a = alert("shop")
    local matched, rec = policy:alert(a)
    expect(matched):to_be(true)
    expect(rec.class):to_be("resource_exhaustion")
    expect(rec.confidence):to_be(0.9)
    expect(rec.plan):to_be("resource_exhaustion")
    expect(rec.auto):to_be(true)
    expect(rec.refused):to_be_nil()
    expect(rec.metrics.usage.last):to_be(0.97)
    expect(#rec.actions):to_be(2)
    expect(rec.actions[1].action):to_be("scale")
    expect(rec.actions[1].state):to_be("dry-run")
    expect(rec.actions[1].stopped):to_be_nil()
    -- the team notification is optional: it failing (no notifier here) stops nothing
    expect(rec.actions[2].action):to_be("notify")
    expect(rec.actions[2].optional):to_be(true)
    expect(rec.actions[2].error):to_be("ENONOTIFIER: no notifier 'team' in the config")
    expect(ledger(a.incident)):to_equal({
      { type = "scale", target = "shop/deployment/api", state = "dry-run" } })
    expect(memory.report(a.incident).kb.class):to_be("resource_exhaustion")
  end)

  it("below the threshold: unconfirmed, nothing is done", function()
    policy.sources.prom = prom_returning({ 0.95, 0.97, 0.6 }) -- the last point decides
    local a = alert("below")
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("unconfirmed")
    expect(rec.confidence):to_be(0.6)
    expect(rec.actions):to_equal({})
    expect(rec.summary):to_be("unconfirmed (0.60): no action")
    expect(ledger(a.incident)):to_equal({})
  end)

  it("at exactly the threshold: not confirmed either", function()
    policy.sources.prom = prom_returning({ 0.5, 0.9 })
    local _, rec = policy:alert(alert("at"))
    expect(rec.class):to_be("unconfirmed")
    expect(rec.actions):to_equal({})
  end)

  it("without data (no series, or Prometheus down): unclassified, nothing is done", function()
    policy.sources.prom = prom_returning({})
    local _, rec = policy:alert(alert("nodata"))
    expect(rec.class):to_be("unknown")
    expect(rec.actions):to_equal({})

    policy.sources.prom = { query_range = function() return nil, "EHTTP: 503 from /api/v1" end }
    local a = alert("down")
    _, rec = policy:alert(a)
    expect(rec.class):to_be("unknown")
    expect(rec.actions):to_equal({})
    expect(rec.steps[2].step):to_be("enrich")
    expect(rec.steps[2].errors.usage):to_be("EHTTP: 503 from /api/v1")
    expect(ledger(a.incident)):to_equal({})
  end)

  it("a hostile pod label cannot leave the PromQL string, nor reach kubectl", function()
    policy.sources.prom = prom_returning({ 0.99 })
    local pod = 'api"} or vector(1) or {x="\n'
    local a = alert("hostile", { pod = pod })
    local _, rec = policy:alert(a)
    local q = policy.sources.prom.queries[1]
    expect(q):to_be('vigil:pod_saturation:ratio{resource="cpu",namespace="hostile",'
      .. 'pod="api\\"} or vector(1) or {x=\\"\\n"}')
    expect(q:find("\n", 1, true)):to_be_nil()
    -- the Deployment name derived from it is no Kubernetes name: refused before any command
    expect(rec.class):to_be("resource_exhaustion")
    expect(rec.actions[1].state):to_be("failed")
    expect(rec.actions[1].error):to_match("^EINVAL: name: ")
    expect(rec.actions[1].stopped):to_be(true)
    expect(#rec.actions):to_be(1)
    expect(ledger(a.incident)):to_equal({})
  end)

  it("derives the Deployment from the pod name; a deployment label wins", function()
    policy.sources.prom = prom_returning({ 0.99 })
    T.cluster({
      ["deployment/derive/checkout-api"] = { spec = { replicas = 3 } },
      ["deployment/label/web"] = { spec = { replicas = 3 } },
    })
    local a = alert("derive", { pod = "checkout-api-5f6d7c8b9-abcde" })
    policy:alert(a)
    expect(ledger(a.incident)):to_equal({
      { type = "scale", target = "derive/deployment/checkout-api", state = "dry-run" } })

    local b = alert("label", { pod = "checkout-api-5f6d7c8b9-abcde", deployment = "web" })
    policy:alert(b)
    expect(ledger(b.incident)):to_equal({
      { type = "scale", target = "label/deployment/web", state = "dry-run" } })
  end)

  it("takes the replica count from kube-state-metrics when Prometheus has it: no kubectl get",
    function()
      local prom = prom_returning({ 0.99 })
      function prom:query(q)
        self.instant = q
        return { { labels = { deployment = "api" }, value = 4, ts = vigil.now() } }
      end
      policy.sources.prom = prom
      T.cluster({}) -- a kubectl read would find nothing and fail the plan
      local a = alert("ksm")
      local _, rec = policy:alert(a)
      expect(prom.instant):to_be('kube_deployment_spec_replicas{namespace="ksm",deployment="api"}')
      expect(rec.actions[1].state):to_be("dry-run")
      expect(ledger(a.incident)):to_equal({
        { type = "scale", target = "ksm/deployment/api", state = "dry-run" } })
      expect(rec.actions[1].error):to_be_nil()
    end)

  it("without the metric (or with a count that is no integer), the scale reads it itself",
    function()
      local prom = prom_returning({ 0.99 })
      function prom.query() return {} end
      policy.sources.prom = prom
      T.cluster({ ["deployment/noksm/api"] = { spec = { replicas = 2 } } })
      local _, rec = policy:alert(alert("noksm"))
      expect(rec.actions[1].state):to_be("dry-run")
      function prom.query() return { { labels = {}, value = 2.5, ts = vigil.now() } } end
      T.cluster({})
      _, rec = policy:alert(alert("halfksm"))
      expect(rec.actions[1].state):to_be("failed") -- it read: the Deployment is not there
      expect(rec.actions[1].error):to_match("NotFound")
    end)

  it("scales by 20% but never past 10 replicas", function()
    policy.sources.prom = prom_returning({ 0.99 })
    T.cluster({
      ["deployment/nine/api"] = { spec = { replicas = 9 } },
      ["deployment/ten/api"] = { spec = { replicas = 10 } },
    })
    local _, rec = policy:alert(alert("nine")) -- 9 * 1.2 is bounded to 10: still a change
    expect(rec.actions[1].state):to_be("dry-run")
    local a = alert("ten")
    _, rec = policy:alert(a) -- 12 would be past the bound: nothing to change
    expect(rec.actions[1].state):to_be("skipped")
    expect(rec.actions[1].error):to_be("ENOCHANGE: already at 10 replicas")
    expect(ledger(a.incident)):to_equal({})
  end)

  it("a missing Deployment fails the plan: nothing else runs", function()
    policy.sources.prom = prom_returning({ 0.99 })
    T.cluster({})
    local _, rec = policy:alert(alert("gone"))
    expect(#rec.actions):to_be(1)
    expect(rec.actions[1].state):to_be("failed")
    expect(rec.actions[1].error):to_match("NotFound")
    expect(rec.actions[1].stopped):to_be(true)
  end)

  it("holds the cooldown per pod: another pod of the same incident is still scaled", function()
    policy.sources.prom = prom_returning({ 0.99 })
    T.cluster({ ["deployment/pods/api"] = { spec = { replicas = 2 } },
      ["deployment/pods/web"] = { spec = { replicas = 2 } } })
    local first = alert("pods")
    policy:alert(first)
    local other = alert("pods", { pod = "web-5c8d9f7b6-abcde" })
    local _, rec = policy:alert(other)
    expect(other.incident):to_be(first.incident)
    expect(rec.refused):to_be_nil()
    expect(rec.actions[1].state):to_be("dry-run")
    expect(#ledger(first.incident)):to_be(2)
  end)

  it("the guard's cooldown refuses a second action on the same pod for 10 minutes",
    function()
      policy.sources.prom = prom_returning({ 0.99 })
      T.cluster({ ["deployment/cool/api"] = { spec = { replicas = 2 } } })
      local first = alert("cool")
      local _, rec = policy:alert(first)
      expect(rec.actions[1].state):to_be("dry-run")

      T.clock.advance("9m")
      local again = alert("cool")
      _, rec = policy:alert(again)
      expect(again.incident):to_be(first.incident)
      expect(rec.class):to_be("resource_exhaustion")
      expect(rec.refused):to_match("^ECOOLDOWN: the policy acted on "
        .. "incident%-%d+:group:resource%-exhaustion:cool:api%-7d9f5c%-x2x1z 540s")
      expect(rec.actions):to_equal({})
      expect(#ledger(first.incident)):to_be(1)

      T.clock.advance("2m")
      _, rec = policy:alert(alert("cool"))
      expect(rec.refused):to_be_nil()
      expect(rec.actions[1].state):to_be("dry-run")
      expect(#ledger(first.incident)):to_be(2)
    end, { timeout = "1h" })

  describe("a known fix", function()
    local FIX_PLAN = { { action = "scale", kind = "deployment", name = "{{deployment}}",
      namespace = "{{namespace}}", replicas = 4 } }

    it("that worked before is applied instead of the policy's plan", function()
      local id = assert(memory.kb.add_fix({ key = "PodMemorySaturation", name = "scale-out",
        plan = FIX_PLAN, who = "spec" }))
      expect(memory.kb.fix_outcome(id, true)):to_equal({ uses = 1, successes = 1, failures = 0 })
      policy.sources.prom = prom_returning({ 0.99 })
      T.cluster({ ["deployment/known/api"] = { spec = { replicas = 2 } } })
      local a = alert("known", { alertname = "PodMemorySaturation", resource = "memory" })
      local _, rec = policy:alert(a)
      expect(rec.class):to_be("known_issue")
      expect(rec.confidence):to_be_near(2 / 3, 1e-9) -- (successes + 1) / (uses + 2)
      expect(rec.known_fix):to_be("scale-out")
      expect(rec.evidence.policy_class):to_be("resource_exhaustion")
      expect(rec.plan):to_be("kb:scale-out")
      expect(rec.auto):to_be(true)
      expect(#rec.actions):to_be(1) -- the fix's one step, not the policy's two
      expect(rec.actions[1].action):to_be("scale")
      expect(rec.actions[1].state):to_be("dry-run")
      expect(ledger(a.incident)):to_equal({
        { type = "scale", target = "known/deployment/api", state = "dry-run" } })

      -- only rehearsed (dry-run): the resolution does not count as a success of the fix
      local resolved = alert("known", { alertname = "PodMemorySaturation", resource = "memory" })
      resolved.status = "resolved"
      _, rec = policy:alert(resolved)
      expect(rec.summary):to_be("resolved; the plan was only rehearsed (not learnt)")
      expect(memory.kb.fixes("PodMemorySaturation")[1].uses):to_be(1)
    end)

    it("that failed more than it worked is not", function()
      local id = assert(memory.kb.add_fix({ key = "PodCPUSaturation", name = "scale-to-4",
        plan = FIX_PLAN, who = "spec" }))
      memory.kb.fix_outcome(id, false)
      policy.sources.prom = prom_returning({ 0.99 })
      T.cluster({ ["deployment/failed/api"] = { spec = { replicas = 2 } } })
      local _, rec = policy:alert(alert("failed"))
      expect(rec.class):to_be("resource_exhaustion")
      expect(rec.known_fix):to_be_nil()
      expect(#rec.actions):to_be(2)
    end)
  end)
end)
