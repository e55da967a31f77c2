-- Resource exhaustion: a pod's CPU or memory is saturated. The saturation is confirmed from
-- Prometheus over the 5 minutes before the alert (an alert alone is not enough to act on);
-- then the Deployment is scaled out by 20%, never past `max` replicas, and the team is told.
--
-- The query reads the recording rule vigil:pod_saturation:ratio (0..1 of the limit, with a
-- `resource` label), defined from cAdvisor and kube-state-metrics series in
-- examples/prometheus/vigil-rules.yml; the alert rule there sets the `resource` label.
--
-- The Deployment's replica count comes from kube-state-metrics when Prometheus has it, which
-- spares a `kubectl get` (a sandboxed process) per scale. A count that is out of date cannot
-- do harm: kubectl scale runs with --current-replicas, so the API server refuses the change
-- if the Deployment has moved on. Without the metric, the scale reads the count itself.
local last_value = require("vigil.pipeline").last_value

local THRESHOLD = 0.9 -- saturation above this counts as confirmed
local MAX_REPLICAS = 10

return {
  name = "resource-exhaustion",
  description = "CPU/memory saturation confirmed from Prometheus: scale out 20% (bounded), notify",
  match = { 'alertname=~"PodCPUSaturation|PodMemorySaturation"' },

  enrich = {
    usage = { source = "prom", range = "5m", step = "30s", query = "vigil:pod_saturation:ratio"
      .. '{resource="{{resource}}",namespace="{{namespace}}",pod="{{pod}}"}' },
    replicas = { source = "prom", query = "kube_deployment_spec_replicas"
      .. '{namespace="{{namespace}}",deployment="{{deployment}}"}' },
  },

  classify = {
    { class = "resource_exhaustion", confidence = 0.9, when = { above = { usage = THRESHOLD } } },
    -- the data is there but does not show it (any more, or only at the threshold): nothing is
    -- done, the alert is only recorded. No data at all leaves the alert unclassified.
    { class = "unconfirmed", confidence = 0.6,
      when = function(_, ctx) return last_value(ctx.data.usage) ~= nil end },
  },

  plan = function(class, _, ctx)
    if class ~= "resource_exhaustion" then return nil end -- known_issue: the known fix
    local current = math.tointeger(last_value(ctx.data.replicas))
    return {
      { action = "scale", kind = "deployment", name = "{{deployment}}", namespace = "{{namespace}}",
        replicas = "+20%", max = MAX_REPLICAS, current = current },
      { action = "notify", to = "team", optional = true,
        text = "{{alertname}}: scaled deployment {{namespace}}/{{deployment}} out by 20%" },
    }
  end,

  -- bounded and reversible: it may run without approval, at any severity
  auto = { classes = { "resource_exhaustion", "known_issue" } },
  -- one problem per pod: another pod of the namespace (same incident) is not held back by
  -- this one's cooldown
  group_by = { "namespace", "pod" },
  guard = { cooldown = "10m" },
}
