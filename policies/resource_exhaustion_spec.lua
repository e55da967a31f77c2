-- Spec of policies/resource_exhaustion.lua: `vigil test policies`.
local T = require("vigil.test")

local function prom_returning(values)
  local fake = { queries = {} }
  function fake:query_range(q)
    self.queries[#self.queries + 1] = q
    return T.series(values, { pod = "api-7d9f5c-x2x1z" })
  end
  return fake
end

local function alert(labels)
  local l = { alertname = "PodCPUSaturation", severity = "warning", resource = "cpu",
    namespace = "shop", pod = "api-7d9f5c-x2x1z" }
  for k, v in pairs(labels or {}) do l[k] = v end
  return { labels = l }
end

describe("resource-exhaustion", function()
  local policy
  before_each(function() policy = T.policy("policies/resource_exhaustion.lua") end)

  it("confirms the saturation from Prometheus and scales the Deployment out by 20%", function()
    policy.sources.prom = prom_returning({ 0.5, 0.8, 0.95, 0.97 })
    T.cluster({ ["deployment/shop/api"] = { spec = { replicas = 2 } } })
    local _, rec = policy:alert(alert())
    expect(policy.sources.prom.queries[1]):to_be(
      'vigil:pod_saturation:ratio{resource="cpu",namespace="shop",pod="api-7d9f5c-x2x1z"}')
    expect(rec.class):to_be("resource_exhaustion")
    expect(rec.actions[1].action):to_be("scale")
    print(vigil.inspect(rec))
  end)
end)
