-- vigil.json: JSON encode/decode on the VM's private lua-cjson instance. Failures of the
-- input return nil, "EJSON: ..." instead of raising: JSON usually comes from the outside world.
local cjson = require("cjson.safe")

local M = {}

M.null = cjson.null

--- Decodes a JSON text. Returns the value, or nil, "EJSON: <reason>".
function M.decode(text)
  if type(text) ~= "string" then
    error("bad argument #1 to 'decode' (string expected, got " .. type(text) .. ")", 2)
  end
  local value, err = cjson.decode(text)
  if value == nil and err ~= nil then return nil, "EJSON: " .. err end
  return value
end

--- Encodes a value as JSON. Returns the text, or nil, "EJSON: <reason>" (functions, cycles,
-- NaN...).
function M.encode(value)
  local text, err = cjson.encode(value)
  if text == nil then return nil, "EJSON: " .. tostring(err) end
  return text
end

return M
