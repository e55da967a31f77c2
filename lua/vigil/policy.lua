-- vigil.policy: what the runtime hands to a policy besides the alert. One context per loaded
-- policy version; the AIOps pipeline adds sources, store and knowledge base here.
local vigil = require("vigil")

local M = {}

--- Builds the `ctx` a policy's on_alert and every jobs receive.
function M.context(policy_name)
  return {
    policy = policy_name,
    log = vigil.log,
    now = vigil.now,
  }
end

return M
