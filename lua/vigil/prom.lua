-- vigil.prom: a Prometheus HTTP API client over vigil.http. Results come back in compact
-- forms a policy can use directly:
--   vector -> { { labels = {...}, value = 0.5, ts = 1700000000 }, ... }
--   matrix -> { { labels = {...}, ts = { t1, t2, ... }, values = { v1, v2, ... } }, ... }
--   scalar, string -> { value = ..., ts = ... }
-- "NaN", "+Inf" and "-Inf" become the Lua numbers. Failures are nil, "ENAME: detail":
-- Prometheus' own errors are "EQUERY: <errorType>: <error>", a non-JSON answer "EHTTP: ...",
-- transport failures as vigil.http gives them. Documented in docs/lua-api.md.
local http = require("vigil.http")
local core = require("vigil.core")

local M = {}
local Client = {}
Client.__index = Client

local function number(s)
  if s == "NaN" then return 0 / 0 end
  if s == "+Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  return tonumber(s)
end

--- A time for the API: a number (unix seconds), an RFC 3339 string, or a duration string
-- ("5m") meaning that long before now.
local function time(t)
  if t == nil then return nil end
  if type(t) == "number" then return ("%.3f"):format(t) end
  if type(t) == "string" then
    if t:match("^%d%d%d%d%-%d%d%-%d%dT") then return t end
    local ok, secs = pcall(core.duration, t)
    if ok then return ("%.3f"):format(core.now() - secs) end
  end
  error("vigil.prom: not a time: " .. tostring(t), 3)
end

local function step(s)
  if type(s) == "number" then return tostring(s) end
  local ok, secs = pcall(core.duration, s)
  if not ok then error("vigil.prom: not a step: " .. tostring(s), 3) end
  return tostring(secs)
end

local function convert(data)
  local kind, result = data.resultType, data.result
  if kind == "vector" then
    local out = {}
    for i, s in ipairs(result) do
      out[i] = { labels = s.metric or {}, ts = s.value[1], value = number(s.value[2]) }
    end
    return out
  elseif kind == "matrix" then
    local out = {}
    for i, s in ipairs(result) do
      local ts, values = {}, {}
      for j, p in ipairs(s.values or {}) do
        ts[j], values[j] = p[1], number(p[2])
      end
      out[i] = { labels = s.metric or {}, ts = ts, values = values }
    end
    return out
  elseif kind == "scalar" then
    return { ts = result[1], value = number(result[2]) }
  elseif kind == "string" then
    return { ts = result[1], value = result[2] }
  end
  return result
end

--- Calls one endpoint; returns the `data` of a success, with the warnings beside it.
function Client:call(path, params, method)
  local opts = { timeout = self.timeout, headers = self.headers, max_bytes = self.max_bytes,
    source = self.source, policy = self.policy, idempotent = true }
  local r, err
  if method == "POST" then
    opts.body = http.query_string(params or {})
    opts.headers = {}
    for k, v in pairs(self.headers or {}) do opts.headers[k] = v end
    opts.headers["Content-Type"] = "application/x-www-form-urlencoded"
    r, err = http.post(self.url .. path, opts)
  else
    opts.query = params
    r, err = http.get(self.url .. path, opts)
  end
  if not r then return nil, err end
  local doc = r.json
  if type(doc) ~= "table" then
    return nil, ("EHTTP: %d from %s: %s"):format(r.status, path, r.body:sub(1, 200))
  end
  if doc.status ~= "success" then
    return nil, ("EQUERY: %s: %s"):format(tostring(doc.errorType), tostring(doc.error))
  end
  return doc.data, doc.warnings
end

--- query(expr [, { time = ... }]) -> result [, warnings]
function Client:query(expr, opts)
  local params = { query = expr, time = time(opts and opts.time) }
  local data, warnings = self:call("/api/v1/query", params, "POST")
  if not data then return nil, warnings end
  local out = convert(data)
  return out, warnings
end

--- query_range(expr, { start = "1h", ["end"] = now, step = "15s" }) -> matrix [, warnings]
function Client:query_range(expr, opts)
  opts = opts or {}
  local params = {
    query = expr,
    start = time(opts.start or "1h"),
    ["end"] = time(opts["end"] or core.now()),
    step = step(opts.step or "15s"),
  }
  local data, warnings = self:call("/api/v1/query_range", params, "POST")
  if not data then return nil, warnings end
  return convert(data), warnings
end

--- series(matchers, { start, end }) -> list of label sets
function Client:series(matchers, opts)
  opts = opts or {}
  if type(matchers) == "string" then matchers = { matchers } end
  return self:call("/api/v1/series",
    { ["match[]"] = matchers, start = time(opts.start), ["end"] = time(opts["end"]) }, "POST")
end

--- labels() -> names; label_values(name) -> values
function Client:labels() return self:call("/api/v1/labels", {}) end

function Client:label_values(name)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    error("vigil.prom: not a label name: " .. tostring(name), 2)
  end
  return self:call("/api/v1/label/" .. name .. "/values", {})
end

--- alerts(), rules(), targets(): Prometheus' own lists, as it returns them.
function Client:alerts()
  local data, err = self:call("/api/v1/alerts", {})
  return data and data.alerts, err
end

function Client:rules()
  local data, err = self:call("/api/v1/rules", {})
  return data and data.groups, err
end

function Client:targets()
  return self:call("/api/v1/targets", {})
end

--- vigil.prom{ url = "http://prometheus:9090", timeout = "5s", headers = {...}, name = ...,
-- retries = 2, max_concurrency = 8, breaker_failures = 5, breaker_cooldown = "30s" }. Every
-- client of the same `name` (the URL by default) shares one policy in C: its breaker and
-- concurrency outlive policy reloads.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("vigil.prom: takes { url = \"http://...\" }", 2)
  end
  local url = opts.url:gsub("/+$", "")
  return setmetatable({
    url = url,
    timeout = opts.timeout or "10s",
    headers = opts.headers,
    max_bytes = opts.max_bytes,
    source = opts.name or ("prometheus " .. url),
    policy = http.policy_of(opts),
  }, Client)
end

--- The compact form of a Prometheus-shaped `data` (vector, matrix, scalar, string); Loki's
-- metric queries answer in the same shapes.
M.convert = convert

return M
