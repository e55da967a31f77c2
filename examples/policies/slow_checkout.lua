-- The tutorial's policy (docs/tutorial.md): checkout's p99 latency alert. Confirm it from
-- Prometheus; when the latency is really high, restart the Deployment, but only with an
-- operator's approval; page the on-call if nobody acknowledges within 10 minutes.
return {
  name = "slow-checkout",
  description = "Checkout p99 latency: confirm, restart with approval, page after 10 min",
  match = { alertname = "CheckoutSlow" },

  enrich = {
    p99 = { source = "prom", range = "10m", step = "1m", query = "histogram_quantile(0.99, "
      .. 'sum by (le) (rate(http_request_duration_seconds_bucket{service="{{service}}"}[5m])))' },
  },

  classify = {
    { class = "slow", confidence = 0.9, when = { above = { p99 = 1.5 } } },
    { class = "false_positive", confidence = 0.7, when = { below = { p99 = 0.5 } } },
  },

  plan = {
    slow = {
      { action = "restart", kind = "deployment", name = "{{service}}",
        namespace = "{{namespace}}" },
    },
    false_positive = {
      { action = "suppress", by = { "alertname", "service" }, duration = "30m",
        reason = "p99 is normal: the alert is wrong" },
    },
  },
  auto = { classes = { "false_positive" } }, -- a restart waits for `vigil approve`

  escalate = { { after = "10m", notify = "oncall", name = "on-call" } },
}
