-- vigil.policy: what the runtime hands to a policy besides the alert. One context per loaded
-- policy version; the AIOps pipeline adds store and knowledge base here.
local vigil = require("vigil")

local M = {}

--- Builds the `ctx` a policy's on_alert and every jobs receive.
function M.context(policy_name)
  return {
    policy = policy_name,
    log = vigil.log,
    now = vigil.now,
    -- ctx.sources.prom is vigil.source("prom"): the config's data sources, made on first use
    sources = setmetatable({}, {
      __index = function(t, name)
        local s, err = vigil.source(name)
        if not s then error(err, 2) end
        rawset(t, name, s)
        return s
      end,
    }),
  }
end

return M
