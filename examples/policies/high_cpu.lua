-- A high-CPU alert on a pod: note it, wait a little to see whether it clears by itself, then
-- scale its Deployment out. The executor decides what that means: in the default dry-run mode
-- it records the exact kubectl command and runs nothing (docs/actions.md).
return {
  name = "high-cpu",
  description = "Pods over their CPU budget: watch for 30 s, then scale the Deployment to 4",
  match = { 'alertname="HighCPU"', 'severity=~"critical|warning"' },

  on_alert = function(alert, ctx)
    local pod = alert.labels.pod or "unknown"
    ctx.log.info("high CPU", { pod = pod, severity = alert.severity })
    if alert.status == "resolved" then return end
    vigil.sleep("30s") -- the task yields; other alerts keep flowing
    -- "api-7d9f" belongs to Deployment "api" unless the alert says which one
    local deployment = alert.labels.deployment or pod:match("^(.-)%-%w+$") or pod
    local r, err = vigil.actions.scale({ alert = alert, kind = "deployment", name = deployment,
      namespace = alert.labels.namespace or "default", replicas = 4, max = 10,
      why = "CPU still high after 30 s" })
    ctx.log.warn("still firing after 30s: scale-out", { deployment = deployment,
      state = r and r.state or "invalid", error = r and r.error or err })
  end,
}
