-- A crash-looping pod: restart its Deployment (a fresh rollout often clears a bad node, a
-- leaked connection or a stuck volume), at most once per 30 minutes. When the engine refuses
-- the restart (cooldown, or its circuit breaker opened after restarts that did not help), the
-- on-call is paged at once; otherwise after 15 minutes if nobody acknowledged the incident.
return {
  name = "crash-loop",
  description = "Crash-looping pod: restart with a cooldown; page when the breaker trips",
  match = { 'alertname=~"KubePodCrashLooping|PodCrashLooping"' },

  enrich = {
    restarts = { source = "prom", query = "increase(kube_pod_container_status_restarts_total"
      .. '{namespace="{{namespace}}",pod="{{pod}}"}[15m])' },
  },

  classify = {
    { class = "crash_looping", confidence = 0.9, when = { above = { restarts = 2 } } },
    { class = "crash_looping", confidence = 0.6, when = function() return true end },
  },

  plan = {
    crash_looping = {
      { action = "restart", kind = "deployment", name = "{{deployment}}",
        namespace = "{{namespace}}" },
    },
  },

  auto = { classes = { "crash_looping", "known_issue" } },
  -- one problem per pod: another pod of the namespace (same incident) is not held back by
  -- this one's cooldown
  group_by = { "namespace", "pod" },
  guard = { cooldown = "30m" },
  escalate = {
    { after = "15m", notify = "oncall", name = "on-call" },
  },
}
