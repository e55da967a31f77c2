-- Disk filling up: classify by how close to full the volume is, using a helper shared by
-- policies (policies/lib/severity.lua, loaded with require "lib.severity").
local severity = require("lib.severity")

return {
  name = "disk-full",
  match = { alertname = "DiskFull" },

  on_alert = function(alert, ctx)
    local used = tonumber(alert.annotations.used_percent or "")
    if not used then
      ctx.log.warn("DiskFull without used_percent annotation", { instance = alert.labels.instance })
      return
    end
    ctx.log.info("disk filling", {
      instance = alert.labels.instance, used = used, urgency = severity.of_usage(used),
    })
  end,
}
