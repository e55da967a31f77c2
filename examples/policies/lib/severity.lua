-- Shared helper for the example policies: urgency from a usage percentage.
local M = {}

function M.of_usage(percent)
  if percent >= 95 then return "page" end
  if percent >= 85 then return "ticket" end
  return "watch"
end

return M
