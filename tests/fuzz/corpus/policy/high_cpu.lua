-- A high-CPU alert on a pod: note it, wait a little to see whether it clears by itself, and
-- say what a remediation would do. (Actions arrive with the executor; this policy only logs.)
return {
  name = "high-cpu",
  description = "Pods over their CPU budget: watch for 30 s, then recommend a scale-out",
  match = { 'alertname="HighCPU"', 'severity=~"critical|warning"' },

  on_alert = function(alert, ctx)
    local pod = alert.labels.pod or "unknown"
    ctx.log.info("high CPU", { pod = pod, severity = alert.severity })
    if alert.status == "resolved" then return end
    vigil.sleep("30s") -- the task yields; other alerts keep flowing
    ctx.log.warn("still firing after 30s: would scale out", { pod = pod })
  end,
}
