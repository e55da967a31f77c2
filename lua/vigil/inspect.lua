-- vigil.inspect: renders any Lua value as readable, deterministic text (REPL, test failures).
-- Tables print with sorted keys, cycles are marked, and depth and width are capped so that a
-- huge or hostile value cannot flood the terminal. Metamethods are never invoked.
local M = {}

local rawget, rawlen, next, type, tostring = rawget, rawlen, next, type, tostring
local fmt, rep, concat, sort = string.format, string.rep, table.concat, table.sort

local function is_identifier(s)
  return type(s) == "string" and s:find("^[%a_][%w_]*$") ~= nil
end

-- Orders keys by type name, then numbers and strings by value, false before true, and the
-- rest (tables, functions...) by when `next` met them: comparing or printing those would run
-- their __lt or __tostring, and their addresses would not be deterministic anyway.
local function key_order(rank)
  return function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    if ta == "boolean" then return not a and b end
    return rank[a] < rank[b]
  end
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return fmt("%q", v):gsub("\\\n", "\\n") end
  if t == "number" then
    if v ~= v then return "0/0" end
    if v == math.huge then return "math.huge" end
    if v == -math.huge then return "-math.huge" end
    return fmt(math.type(v) == "integer" and "%d" or "%.17g", v)
  end
  if t == "nil" or t == "boolean" then return tostring(v) end
  return "<" .. t .. ">"
end

--- Renders `value` as text.
-- opts.depth (default 6): nesting shown before "{...}";
-- opts.width (default 200): entries per table;
-- opts.indent (default "  "); opts.compact: one line.
function M.inspect(value, opts)
  opts = opts or {}
  local max_depth, max_width = opts.depth or 6, opts.width or 200
  local ind = opts.compact and "" or (opts.indent or "  ")
  local nl = opts.compact and " " or "\n"
  local seen, out = {}, {}

  local function emit(v, depth)
    if type(v) ~= "table" then
      out[#out + 1] = scalar(v)
      return
    end
    if seen[v] then out[#out + 1] = "<cycle>"; return end
    if depth >= max_depth then out[#out + 1] = "{...}"; return end
    seen[v] = true
    local n = rawlen(v)
    local keys, rank = {}, {}
    for k in next, v do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        keys[#keys + 1] = k
        rank[k] = #keys
      end
    end
    sort(keys, key_order(rank))
    if n == 0 and #keys == 0 then out[#out + 1] = "{}"; seen[v] = nil; return end
    out[#out + 1] = "{"
    local pad, count = rep(ind, depth + 1), 0
    local function entry(k, val, positional)
      count = count + 1
      if count > max_width then return false end
      out[#out + 1] = nl .. pad
      if not positional then
        out[#out + 1] = is_identifier(k) and k or ("[" .. scalar(k) .. "]")
        out[#out + 1] = " = "
      end
      emit(val, depth + 1)
      out[#out + 1] = ","
      return true
    end
    local more = true
    for i = 1, n do
      more = entry(i, rawget(v, i), true)
      if not more then break end
    end
    if more then
      for _, k in ipairs(keys) do
        more = entry(k, rawget(v, k), false)
        if not more then break end
      end
    end
    if not more then out[#out + 1] = nl .. pad .. "..." end
    out[#out + 1] = nl .. rep(ind, depth) .. "}"
    seen[v] = nil
  end

  emit(value, 0)
  return concat(out)
end

return setmetatable(M, { __call = function(_, ...) return M.inspect(...) end })
