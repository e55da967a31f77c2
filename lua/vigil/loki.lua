-- vigil.loki: a Grafana Loki HTTP API client over vigil.http, in vigil.prom's style.
-- Log queries come back as one list of entries, newest first for "backward" (the default),
-- oldest first for "forward":
--   { { ts = 1719912598123456789 (ns, an integer), line = "...", labels = {...},
--       level = "error", service = "checkout" }, ... }
-- Metric queries come back like Prometheus' (matrix / vector, see prom.lua). Failures are
-- nil, "ENAME: detail": Loki's own refusals (plain-text 400s) "EQUERY: <message>", 401/403
-- "EAUTH: ...", 429 "ERATELIMIT: ...; retry after N s", 5xx and unreadable answers
-- "EHTTP: <status> from <path>: ...", transport failures as vigil.http gives them.
-- Documented in docs/sources.md.
local http = require("vigil.http")
local policy_of, trim = http.policy_of, http.trim
local core = require("vigil.core")
local json = require("vigil.json")
local prom = require("vigil.prom")

local M = {}
local Client = {}
Client.__index = Client

-- seconds (a number) -> a nanosecond integer string; integers of 16 digits or more are
-- nanoseconds already (an entry's ts can be passed back to page).
local function ns_string(t)
  if math.type(t) == "integer" and t >= 1000000000000000 then return ("%d"):format(t) end
  local sec = math.floor(t)
  local frac = math.floor((t - sec) * 1e9 + 0.5)
  return ("%d"):format(math.tointeger(sec) * 1000000000 + frac)
end

--- A time for the API: unix seconds (a number; a nanosecond integer is accepted too), an
-- RFC 3339 string, or a duration ("5m") meaning that long before now. Sent as nanoseconds.
local function time(t)
  if t == nil then return nil end
  if type(t) == "number" then return ns_string(t) end
  if type(t) == "string" then
    if t:match("^%d%d%d%d%-%d%d%-%d%dT") then return t end
    local ok, secs = pcall(core.duration, t)
    if ok then return ns_string(core.now() - secs) end
  end
  error("vigil.loki: not a time: " .. tostring(t), 3)
end

local function step(s)
  if s == nil then return nil end
  if type(s) == "number" then return tostring(s) end
  local ok, secs = pcall(core.duration, s)
  if not ok then error("vigil.loki: not a step: " .. tostring(s), 3) end
  return tostring(secs)
end

local function level_of(labels)
  return labels.level or labels.detected_level or labels.severity or labels.lvl
end

local function service_of(labels)
  return labels.service or labels.service_name or labels.app or labels.job
end

local function entries(result, direction)
  local out = {}
  for _, s in ipairs(result) do
    local labels = type(s.stream) == "table" and s.stream or {}
    local level, service = level_of(labels), service_of(labels)
    for _, v in ipairs(s.values or {}) do
      local e = {
        ts = math.tointeger(tonumber(v[1])) or tonumber(v[1]),
        line = v[2],
        labels = labels,
        level = level,
        service = service,
        n = #out + 1,
      }
      if type(v[3]) == "table" then e.metadata = v[3] end
      out[#out + 1] = e
    end
  end
  local forward = direction == "forward"
  table.sort(out, function(a, b)
    if a.ts ~= b.ts then
      if forward then return a.ts < b.ts end
      return a.ts > b.ts
    end
    return a.n < b.n
  end)
  for _, e in ipairs(out) do e.n = nil end
  return out
end

local function convert(data, direction)
  local kind, result = data.resultType, data.result
  if type(result) ~= "table" then return {} end
  if kind == "streams" then
    return entries(result, direction)
  end
  return prom.convert(data)
end

local function retry_after(h)
  local n = tonumber(h["retry-after"] or "")
  return n and ("; retry after %d s"):format(math.ceil(n)) or ""
end

--- Names a failed answer: what Loki said, and how a caller should take it.
local function failure(r, path)
  local msg
  local doc = r.json
  if type(doc) == "table" then
    msg = doc.error or doc.message
    if doc.errorType and msg then msg = tostring(doc.errorType) .. ": " .. tostring(msg) end
  end
  msg = trim(msg or r.body)
  if msg == "" then msg = ("%d from %s"):format(r.status, path) end
  if r.status == 429 then return "ERATELIMIT: " .. msg .. retry_after(r.headers) end
  if r.status == 401 or r.status == 403 then return "EAUTH: " .. msg end
  if r.status >= 400 and r.status < 500 then return "EQUERY: " .. msg end
  return ("EHTTP: %d from %s: %s"):format(r.status, path, msg)
end

--- Calls one endpoint; returns the `data` of a success (nil when Loki left it out, as it
-- does for empty label lists), with the warnings beside it.
function Client:call(path, params)
  local r, err = http.get(self.url .. path, {
    query = params, timeout = self.timeout, headers = self.headers, max_bytes = self.max_bytes,
    source = self.source, policy = self.policy, idempotent = true,
  })
  if not r then return nil, err end
  if r.status >= 300 then return nil, failure(r, path) end
  local doc = r.json
  if type(doc) ~= "table" then
    return nil, ("EHTTP: %d from %s: not JSON: %s"):format(r.status, path, trim(r.body):sub(1, 120))
  end
  if doc.status ~= "success" then
    return nil, "EQUERY: " .. trim(doc.error or json.encode(doc))
  end
  return true, doc.data, doc.warnings
end

--- query_range(logql, { start = "1h", ["end"] = now, limit = 100, direction = "backward",
-- step = ... }) -> entries (log queries) or a matrix (metric queries) [, warnings]
function Client:query_range(logql, opts)
  opts = opts or {}
  if type(logql) ~= "string" then error("vigil.loki: query_range takes a LogQL string", 2) end
  local direction = opts.direction or "backward"
  local params = {
    query = logql,
    start = time(opts.start or "1h"),
    ["end"] = time(opts["end"] or core.now()),
    limit = opts.limit,
    direction = direction,
    step = step(opts.step),
    interval = step(opts.interval),
  }
  local ok, data, warnings = self:call("/loki/api/v1/query_range", params)
  if not ok then return nil, data end
  return convert(data or {}, direction), warnings
end

--- query(logql [, { time = now, limit, direction }]) -> vector (or scalar) [, warnings].
-- Loki answers log (not metric) queries here with EQUERY.
function Client:query(logql, opts)
  opts = opts or {}
  if type(logql) ~= "string" then error("vigil.loki: query takes a LogQL string", 2) end
  local params = {
    query = logql,
    time = time(opts.time),
    limit = opts.limit,
    direction = opts.direction,
  }
  local ok, data, warnings = self:call("/loki/api/v1/query", params)
  if not ok then return nil, data end
  return convert(data or {}, opts.direction), warnings
end

local function meta_params(opts)
  opts = opts or {}
  return { start = time(opts.start), ["end"] = time(opts["end"]), query = opts.query }
end

--- labels([{ start, ["end"], query = '{app="x"}' }]) -> names (an empty list when none)
function Client:labels(opts)
  local ok, data = self:call("/loki/api/v1/labels", meta_params(opts))
  if not ok then return nil, data end
  return type(data) == "table" and data or {}
end

--- label_values(name [, { start, ["end"], query }]) -> values (an empty list when none)
function Client:label_values(name, opts)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    error("vigil.loki: not a label name: " .. tostring(name), 2)
  end
  local ok, data = self:call("/loki/api/v1/label/" .. name .. "/values", meta_params(opts))
  if not ok then return nil, data end
  return type(data) == "table" and data or {}
end


--- vigil.loki{ url = "http://loki:3100", timeout = "10s", headers = {...}, tenant = "t1",
-- max_bytes = n, name = ..., retries = 2, max_concurrency = 8, breaker_failures = 5, ... };
-- `tenant` is sent as X-Scope-OrgID (multi-tenant Loki). Requests go through the source
-- `name` ("loki <url>" by default) and its policy in C, like vigil.prom's.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("vigil.loki: takes { url = \"http://...\" }", 2)
  end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  if opts.tenant ~= nil then headers["X-Scope-OrgID"] = tostring(opts.tenant) end
  local url = opts.url:gsub("/+$", "")
  return setmetatable({
    url = url,
    timeout = opts.timeout or "10s",
    headers = headers,
    max_bytes = opts.max_bytes,
    source = opts.name or ("loki " .. url),
    policy = policy_of(opts),
  }, Client)
end

return M
