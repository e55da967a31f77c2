-- vigil.http: HTTP requests from policies, specs and the REPL. The C half (vigil.httpc, on
-- the runtime's libcurl multi handle) does the I/O without blocking the loop; this file
-- shapes requests and responses. Documented in docs/lua-api.md.
local httpc = require("vigil.httpc")
local core = require("vigil.core")
local json = require("vigil.json")

local M = {}

local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true, HEAD = true }
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true }

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end
M.urlencode = urlencode

--- Encodes a table as a query string, keys sorted so the URL is stable; a list value repeats
-- its key (filter=a&filter=b).
function M.query_string(q)
  local keys = {}
  for k in pairs(q) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = q[k]
    if type(v) == "table" then
      for _, item in ipairs(v) do parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(item) end
    else
      parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(v)
    end
  end
  return table.concat(parts, "&")
end

local function check(cond, msg)
  if not cond then error("vigil.http.request: " .. msg, 3) end
end

--- request{ method, url, headers, query, body | json, timeout, max_bytes } waits for the
-- answer and returns { status, headers, body, json?, elapsed }, or nil, "ENAME: detail" when
-- there is no answer (ECONNREFUSED, ETIMEDOUT, ETOOBIG, ENOTFOUND, ETLS, EPROTO, EINVAL...).
-- A 4xx or 5xx is an answer. With `source = "name"` (and optionally `policy = { retries,
-- max_concurrency, breaker_failures, breaker_cooldown, backoff, backoff_max }`) the request
-- goes through that source's policy in C: retries when `idempotent` (GET, HEAD, PUT, DELETE
-- by default), a concurrency limit, and a circuit breaker (ECIRCUIT while open).
function M.request(opts)
  check(type(opts) == "table", "takes a table { url = ..., ... }")
  local method = (opts.method or "GET"):upper()
  check(METHODS[method], "unknown method '" .. tostring(opts.method) .. "'")
  check(type(opts.url) == "string", "url must be a string")
  local url = opts.url
  if opts.query ~= nil then
    check(type(opts.query) == "table", "query must be a table")
    local qs = M.query_string(opts.query)
    if qs ~= "" then url = url .. (url:find("?", 1, true) and "&" or "?") .. qs end
  end
  local headers, has_type = {}, false
  if opts.headers ~= nil then
    check(type(opts.headers) == "table", "headers must be a table")
    for k, v in pairs(opts.headers) do
      check(type(k) == "string" and (type(v) == "string" or type(v) == "number"),
        "headers must map names to strings")
      headers[#headers + 1] = k .. ": " .. tostring(v)
      has_type = has_type or k:lower() == "content-type"
    end
  end
  local body = opts.body
  if opts.json ~= nil then
    check(body == nil, "give body or json, not both")
    body = json.encode(opts.json)
    if not has_type then headers[#headers + 1] = "Content-Type: application/json" end
  end
  check(body == nil or type(body) == "string", "body must be a string")
  local timeout = opts.timeout and core.duration(opts.timeout) or 30
  check(opts.source == nil or type(opts.source) == "string", "source must be a name")
  local idempotent = opts.idempotent
  if idempotent == nil then idempotent = IDEMPOTENT[method] end
  local status, raw, text, elapsed = httpc.request(method, url, headers, body,
    math.max(1, math.floor(timeout * 1000 + 0.5)), opts.max_bytes or 0,
    opts.source, opts.policy, idempotent)
  if not status then return nil, raw end
  local h = {}
  for line in raw:gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      h[name] = h[name] and (h[name] .. ", " .. value) or value
    end
  end
  local resp = { status = status, headers = h, body = text, elapsed = elapsed }
  local ct = h["content-type"]
  if ct and ct:find("json", 1, true) and text ~= "" then
    local ok, decoded = pcall(json.decode, text)
    if ok then resp.json = decoded end
  end
  return resp
end

-- ---- shared by the source clients (prom, loki, jaeger, datadog, alertmanager) ----

local POLICY_KEYS = { "retries", "max_concurrency", "max_queue", "breaker_failures",
  "breaker_cooldown", "backoff", "backoff_max" }

--- The request policy keys of a client's options (retries, breaker...), for its source in C;
-- nil when there are none.
function M.policy_of(opts)
  local policy
  for _, k in ipairs(POLICY_KEYS) do
    if opts[k] ~= nil then
      policy = policy or {}
      policy[k] = opts[k]
    end
  end
  return policy
end

local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

--- unix seconds -> RFC 3339 in UTC with milliseconds ("2026-12-02T10:00:00.000Z").
function M.format_rfc3339(t)
  local secs = math.floor(t)
  local ms = math.floor((t - secs) * 1000 + 0.5)
  if ms == 1000 then secs, ms = secs + 1, 0 end
  return os.date("!%Y-%m-%dT%H:%M:%S", secs) .. (".%03dZ"):format(ms)
end

--- An RFC 3339 time as unix seconds (a number, fraction included) and unix nanoseconds (an
-- integer); nil when it is not one.
function M.rfc3339(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, frac, tz =
    s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
  if not y then return nil end
  local off = 0
  if tz ~= "Z" and tz ~= "z" then
    local sign, oh, om = tz:match("^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    off = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  local secs = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec) - off
  local ns = 0
  if #frac > 1 then ns = tonumber((frac:sub(2) .. "000000000"):sub(1, 9)) end
  return #frac > 1 and secs + tonumber("0" .. frac) or secs, secs * 1000000000 + ns
end

--- A backend's message, trimmed and cut to 300 bytes for an error text.
function M.trim(s)
  s = tostring(s or ""):gsub("^%s+", ""):gsub("%s+$", "")
  if #s > 300 then s = s:sub(1, 300) .. "..." end
  return s
end

--- Shorthands: get(url, opts), post(url, opts).
function M.get(url, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.url, o.method = url, "GET"
  return M.request(o)
end

function M.post(url, opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.url, o.method = url, "POST"
  return M.request(o)
end

return M
