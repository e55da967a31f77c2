-- An error-rate spike: look at the service's logs in Loki. When the errors of the last 15
-- minutes include a message template the last day never showed (template mining in C, see
-- docs/logs.md), that is likely the cause: page the on-call with the template. A spike of
-- known errors only tells the team, with the top templates.
local RECENT = 15 * 60
local LIMIT = 5000 -- log lines fetched, newest first

-- The analyser (one per service) belongs to the runtime: it outlives runs, reloads and, through
-- its snapshots, restarts. So each alert feeds it only the lines newer than those it has (the
-- day is not counted twice); the policy's store-backed state keeps that mark, and the oldest
-- line it was ever given, across reloads and restarts too.
local MARK_TTL = "2d"

return {
  name = "error-spike",
  description = "Error-rate spike: page with a new log template, else notify with the top errors",
  match = { 'alertname=~"HighErrorRate|ErrorRateSpike"' },

  enrich = {
    logs = { source = "loki", range = "24h", limit = LIMIT, query =
      '{service="{{service}}"} |~ "(?i)error|exception|fatal|panic"' },
  },

  classify = function(alert, ctx)
    local service = alert.labels.service or "unknown"
    local analyser = vigil.logs.analyser("error-spike:" .. service)
    local entries = ctx.data.logs or {}
    local now = vigil.now()
    local key = "fed:" .. service
    local fed = ctx.state.get(key) or {}
    local added, newest, oldest =
      analyser:feed(entries, { after = fed["until"], service = service })
    if added > 0 and newest then
      fed["until"] = math.max(fed["until"] or newest, newest)
      fed.from = math.min(fed.from or oldest, oldest)
      ctx.state.set(key, fed, MARK_TTL)
    end
    -- the limit cut the logs off inside the last 15 minutes, and nothing older was seen
    -- before: every template would look new, so none is claimed to be
    local blind = #entries >= LIMIT and (fed.from or now) > now - RECENT
    local new = analyser:new_templates({ errors = true, since = now - RECENT })
    if #new > 0 and not blind then
      return "new_error_pattern", 0.8, { template = new[1].template, new_templates = #new }
    end
    return "error_spike", 0.6, { top = analyser:top_errors(3), truncated = blind or nil }
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
