-- False positives: an alert that keeps firing and resolving (flapping) is noise, not an
-- outage. vigil's own record is the data: when the same alert has fired 3 times within the
-- hour, its next firing is classified false_positive and vigil stops acting on it for an hour
-- (a local suppression with the reason; the alerts are still stored and visible).
local FLAPS = 3
local WINDOW = "1h"
-- The labels that name where an alert comes from. The suppression matches those the alert
-- has: a label it lacks cannot be matched (the suppression would be refused).
local BY = { "alertname", "instance", "pod", "service" }

return {
  name = "flapping",
  description = "Alerts that fired 3+ times within an hour: suppress them for 1 h, with a reason",
  match = { 'severity=~"warning|info|low|medium"' },
  known_issues = false, -- other policies apply known fixes; this one only judges noise

  classify = function(alert, ctx)
    local key = "firings:" .. tostring(alert.fingerprint or alert.name)
    local now = vigil.now()
    local seen = {}
    for _, t in ipairs(ctx.state.get(key) or {}) do
      if now - t < vigil.duration(WINDOW) then seen[#seen + 1] = t end
    end
    seen[#seen + 1] = now
    ctx.state.set(key, seen, WINDOW)
    if #seen > FLAPS then
      return "false_positive", 0.8, { firings = #seen, window = WINDOW }
    end
    return nil
  end,

  plan = function(class, alert)
    if class ~= "false_positive" then return nil end
    local by = {}
    for _, label in ipairs(BY) do
      if alert.labels[label] ~= nil then by[#by + 1] = label end
    end
    return { { action = "suppress", by = by, duration = WINDOW,
      reason = "flapping: fired more than 3 times within an hour" } }
  end,
}
