-- An error-rate spike: look at the service's logs in Loki. When the errors of the last 15
-- minutes include a message template the last day never showed (template mining in C, see
-- docs/logs.md), that is likely the cause: page the on-call with the template. A spike of
-- known errors only tells the team, with the top templates.
local RECENT = 15 * 60

return {
  name = "error-spike",
  description = "Error-rate spike: page with a new log template, else notify with the top errors",
  match = { 'alertname=~"HighErrorRate|ErrorRateSpike"' },

  enrich = {
    logs = { source = "loki", range = "24h", limit = 5000, query =
      '{service="{{service}}"} |~ "(?i)error|exception|fatal|panic"' },
  },

  classify = function(alert, ctx)
    local service = alert.labels.service or "unknown"
    local analyser = vigil.logs.analyser("error-spike:" .. service)
    local entries = ctx.data.logs or {}
    for i = #entries, 1, -1 do -- oldest first, so "first seen" means something
      local e = entries[i]
      analyser:add(e.line, { ts = e.ts and e.ts / 1e9 or nil, service = service })
    end
    local new = analyser:new_templates({ errors = true, since = vigil.now() - RECENT })
    if #new > 0 then
      return "new_error_pattern", 0.8, { template = new[1].template, new_templates = #new }
    end
    return "error_spike", 0.6, { top = analyser:top_errors(3) }
  end,

  plan = function(class, alert, ctx)
    local e = ctx.analysis.evidence or {}
    local service = alert.labels.service or "unknown"
    if class == "new_error_pattern" then
      return { { action = "notify", to = "oncall", severity = "error",
        summary = ("%s: new error pattern: %s"):format(service, e.template) } }
    end
    local lines = {}
    for _, t in ipairs(e.top or {}) do
      lines[#lines + 1] = ("%d x %s"):format(t.count, t.template)
    end
    return { { action = "notify", to = "team", optional = true,
      text = ("%s error spike; top errors:\n%s"):format(service, table.concat(lines, "\n")) } }
  end,

  auto = true, -- notifications only
}
