-- A filesystem filling up: forecast when it will be full from the last 6 hours of
-- node-exporter data (Holt's linear trend), then act on the answer: full within 4 hours pages
-- the on-call, within 3 days tells the team, later than that is only recorded.
local detect = require("vigil.detect")

local PAGE_WITHIN = 4 * 3600
local NOTIFY_WITHIN = 3 * 86400

local function hours(s) return ("%.1f h"):format(s / 3600) end

return {
  name = "disk-filling",
  description = "Forecast time-to-full from node-exporter; page (< 4 h) or notify (< 3 d)",
  match = { 'alertname=~"NodeFilesystemFillingUp|NodeFilesystemAlmostOutOfSpace|DiskFilling"' },

  enrich = {
    avail = { source = "prom", range = "6h", step = "5m", query =
      'node_filesystem_avail_bytes{instance="{{instance}}",mountpoint="{{mountpoint}}"}' },
  },

  classify = function(_, ctx)
    local s = ctx.data.avail and ctx.data.avail[1]
    if not s or #s.values < 6 then
      return "disk_filling_unknown", 0.3, { why = "less than 30 minutes of history" }
    end
    local f = detect.forecast(s.values, { method = "holt", times = s.ts, horizon = "7d",
      threshold = 0 })
    -- the threshold is a limit in the trend's direction: with free space growing, "0 s" means
    -- "already above 0", not "full now"
    local ttf = f.slope < 0 and f.time_to_threshold or nil
    local evidence = { time_to_full_s = ttf, avail_bytes = s.values[#s.values] }
    if ttf and ttf < PAGE_WITHIN then return "disk_full_soon", 0.9, evidence end
    if ttf and ttf < NOTIFY_WITHIN then return "disk_filling", 0.8, evidence end
    return "disk_filling_slow", 0.7, evidence
  end,

  plan = function(class, alert, ctx)
    local ttf = ctx.analysis.evidence and ctx.analysis.evidence.time_to_full_s
    local where = ("%s:%s"):format(alert.labels.instance or "?", alert.labels.mountpoint or "?")
    -- every filesystem of every node is one incident (one alert name, no namespace): each is
    -- told about under its own subject, or the second would be a duplicate of the first
    local subject = ctx.subject .. "/" .. where
    if class == "disk_full_soon" then
      return { { action = "notify", to = "oncall", severity = "critical", subject = subject,
        summary = ("%s will be full in %s"):format(where, hours(ttf)) } }
    elseif class == "disk_filling" then
      return { { action = "notify", to = "team", subject = subject,
        text = ("%s will be full in %s"):format(where, hours(ttf)) } }
    end
    return nil -- slow or unknown: recorded on the timeline, nothing sent
  end,

  auto = true, -- notifications only
}
