-- vigil.datadog: Datadog's metrics query (v1) and logs search (v2) over vigil.http, in
-- vigil.prom's style.
--   query(q, { from, to })  -> { { metric, scope, labels = { host = "web-1" }, expression,
--                                unit, ts = { unix seconds ... }, values = { ... } }, ... }
--   search{ query, from, to, limit } -> { { id, ts (ns, an integer), line, level, service,
--                                host, labels = { tag = value }, tags, attributes }, ... }
-- Null points (no data in that bucket) are left out. Failures are nil, "ENAME: detail":
-- Datadog's own refusals ({"errors": [...]}, 4xx) "EQUERY: <messages>", 401/403 "EAUTH: ...",
-- 429 "ERATELIMIT: ...; retry after N s" (from X-RateLimit-Reset, else Retry-After, else
-- X-RateLimit-Period; until then the client answers ERATELIMIT without asking), 5xx and
-- unreadable answers "EHTTP: <status> from <path>: ...". Documented in docs/sources.md.
local http = require("vigil.http")
local policy_of, trim = http.policy_of, http.trim
local core = require("vigil.core")
local json = require("vigil.json")

local M = {}
local Client = {}
Client.__index = Client
-- the headers carrying the keys live here, not in the client, so printing a client (the REPL
-- does) never shows them
local secret_headers = setmetatable({}, { __mode = "k" })

--- An RFC 3339 / ISO 8601 time -> unix nanoseconds (an integer), or nil.
local function rfc3339_ns(s)
  local _, ns = http.rfc3339(s)
  return ns
end

--- A time: unix seconds, an RFC 3339 string or a duration ("15m") meaning that long ago;
-- returned as unix seconds (a number).
local function seconds(t, what)
  if type(t) == "number" then return t end
  if type(t) == "string" then
    local ns = rfc3339_ns(t)
    if ns then return ns / 1e9 end
    local ok, secs = pcall(core.duration, t)
    if ok then return core.now() - secs end
  end
  error(("vigil.datadog: %s is not a time: %s"):format(what, tostring(t)), 4)
end

-- logs filters take date math ("now-15m"), ISO 8601 or milliseconds as a string
local function logs_time(t, what)
  if t == nil then return nil end
  if type(t) == "string" and (t:match("^now") or rfc3339_ns(t)) then return t end
  return ("%d"):format(math.floor(seconds(t, what) * 1000 + 0.5))
end

local function labels_of(tags)
  local out = {}
  for _, tag in ipairs(type(tags) == "table" and tags or {}) do
    local k, v = tostring(tag):match("^([^:]+):(.*)$")
    if k then out[k] = v else out[tostring(tag)] = "" end
  end
  return out
end

local function wait_of(h)
  local n = tonumber(h["x-ratelimit-reset"] or "") or tonumber(h["retry-after"] or "")
    or tonumber(h["x-ratelimit-period"] or "")
  return n and math.max(0, math.ceil(n)) or nil
end

local function failure(self, r, path)
  local doc = r.json
  if doc == nil then
    local ok, d = pcall(json.decode, r.body)
    if ok then doc = d end
  end
  local msg
  if type(doc) == "table" and type(doc.errors) == "table" and #doc.errors > 0 then
    local parts = {}
    for i, e in ipairs(doc.errors) do parts[i] = tostring(e) end
    msg = table.concat(parts, "; ")
  end
  msg = trim(msg or r.body)
  if msg == "" then msg = ("%d from %s"):format(r.status, path) end
  if r.status == 429 then
    local wait = wait_of(r.headers)
    if wait then
      self.limited[path] = core.now() + wait
      return ("ERATELIMIT: %s; retry after %d s"):format(msg, wait)
    end
    return "ERATELIMIT: " .. msg
  end
  if r.status == 401 or r.status == 403 then return "EAUTH: " .. msg end
  if r.status >= 400 and r.status < 500 then return "EQUERY: " .. msg end
  return ("EHTTP: %d from %s: %s"):format(r.status, path, msg)
end

--- Calls one endpoint (GET with a query, or POST with a JSON body); returns the decoded
-- answer. A bucket that answered 429 is not asked again before its reset.
function Client:call(method, path, params, body)
  local until_ = self.limited[path]
  if until_ then
    local left = until_ - core.now()
    if left > 0 then
      return nil, ("ERATELIMIT: %s is rate limited; retry after %d s"):format(path, math.ceil(left))
    end
    self.limited[path] = nil
  end
  local r, err = http.request({
    method = method,
    url = self.url .. path,
    query = params,
    json = body,
    headers = secret_headers[self],
    timeout = self.timeout,
    max_bytes = self.max_bytes,
    source = self.source,
    policy = self.policy,
    -- both endpoints only read, but the C policy knows Retry-After, not X-RateLimit-Reset: a
    -- 429 would be retried too early, so retries are only made when asked for
    idempotent = self.policy ~= nil and self.policy.retries ~= nil,
  })
  if not r then return nil, err end
  if r.status >= 300 then return nil, failure(self, r, path) end
  if type(r.json) ~= "table" then
    return nil, ("EHTTP: %d from %s: not JSON: %s"):format(r.status, path, trim(r.body):sub(1, 120))
  end
  return r.json
end

local function num(x)
  if type(x) ~= "number" then return nil end
  return math.tointeger(x) or x
end

--- query(q, { from = "1h", to = now }) -> series (v1 timeseries query)
function Client:query(q, opts)
  opts = opts or {}
  if type(q) ~= "string" then error("vigil.datadog: query takes a metrics query string", 2) end
  local from = seconds(opts.from or "1h", "from")
  local to = seconds(opts.to or core.now(), "to")
  local doc, err = self:call("GET", "/api/v1/query", {
    query = q, from = ("%d"):format(math.floor(from)), to = ("%d"):format(math.floor(to)),
  })
  if not doc then return nil, err end
  if doc.status == "error" then return nil, "EQUERY: " .. trim(doc.error or doc.message) end
  local out = {}
  for i, s in ipairs(type(doc.series) == "table" and doc.series or {}) do
    local ts, values = {}, {}
    for _, p in ipairs(type(s.pointlist) == "table" and s.pointlist or {}) do
      if type(p[1]) == "number" and type(p[2]) == "number" then
        ts[#ts + 1] = num(p[1] / 1000)
        values[#values + 1] = p[2]
      end
    end
    local unit = type(s.unit) == "table" and type(s.unit[1]) == "table" and s.unit[1].name or nil
    out[i] = {
      metric = s.metric,
      scope = s.scope,
      expression = s.expression,
      labels = labels_of(s.tag_set),
      aggr = type(s.aggr) == "string" and s.aggr or nil,
      unit = type(unit) == "string" and unit or nil,
      interval = num(s.interval),
      ts = ts,
      values = values,
    }
  end
  return out
end

local function entry(d)
  local a = type(d.attributes) == "table" and d.attributes or {}
  local function str(x) return type(x) == "string" and x or nil end
  return {
    id = d.id,
    ts = rfc3339_ns(a.timestamp),
    line = str(a.message) or "",
    level = str(a.status),
    service = str(a.service),
    host = str(a.host),
    labels = labels_of(a.tags),
    tags = type(a.tags) == "table" and a.tags or {},
    attributes = type(a.attributes) == "table" and a.attributes or {},
  }
end

--- search{ query = "service:x status:error", from = "15m", to = now, limit = 100,
-- page_size = 1000, indexes = {...}, sort = "-timestamp" } -> entries [, warnings]
-- Follows meta.page.after until `limit` entries came back or there are no more.
function Client:search(opts)
  opts = opts or {}
  local limit = opts.limit or 100
  local page_size = math.min(opts.page_size or 1000, 1000)
  local body = {
    filter = {
      query = opts.query or "*",
      from = logs_time(opts.from or "15m", "from"),
      to = logs_time(opts.to or "now", "to"),
      indexes = opts.indexes,
    },
    sort = opts.sort or "-timestamp",
    page = {},
  }
  local out, warnings, cursor, seen = {}, nil, nil, {}
  local function warn(msg)
    if not seen[msg] then
      seen[msg] = true
      warnings = warnings or {}
      warnings[#warnings + 1] = msg
    end
  end
  repeat
    body.page.limit = math.min(page_size, limit - #out)
    body.page.cursor = cursor
    local doc, err = self:call("POST", "/api/v2/logs/events/search", nil, body)
    if not doc then return nil, err end
    local data = type(doc.data) == "table" and doc.data or {}
    for _, d in ipairs(data) do
      if #out < limit and type(d) == "table" then out[#out + 1] = entry(d) end
    end
    local meta = type(doc.meta) == "table" and doc.meta or {}
    for _, w in ipairs(type(meta.warnings) == "table" and meta.warnings or {}) do
      warn(type(w) == "table"
        and trim(tostring(w.title or "") .. ": " .. tostring(w.detail or "")) or tostring(w))
    end
    if meta.status == "timeout" then warn("partial results: the search timed out") end
    local next_ = type(meta.page) == "table" and meta.page.after or nil
    if type(next_) ~= "string" or next_ == cursor or #data == 0 then break end
    cursor = next_
  until #out >= limit
  return out, warnings
end


M.SITES = {
  "datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu",
  "ap1.datadoghq.com", "ap2.datadoghq.com", "uk1.datadoghq.com", "ddog-gov.com", "us2.ddog-gov.com",
}

--- vigil.datadog{ site = "datadoghq.com", api_key = ..., app_key = ..., timeout = "10s",
-- url = <instead of https://api.<site>>, max_bytes = n, name = ..., retries = 2, ... }:
-- requests go through the source `name` ("datadog <url>" by default) and its policy in C,
-- like vigil.prom's, but are retried only when `retries` is given (Datadog's 429 carries
-- X-RateLimit-Reset, which the C policy does not read).
function M.new(opts)
  if type(opts) ~= "table" then
    error("vigil.datadog: takes { site = ..., api_key = ..., app_key = ... }", 2)
  end
  -- a configured source (`name`) may have its keys added in C instead
  if opts.name == nil and (type(opts.api_key) ~= "string" or type(opts.app_key) ~= "string") then
    error("vigil.datadog: api_key and app_key (strings) are required", 2)
  end
  local url = opts.url
  if url == nil then
    local site = opts.site or "datadoghq.com"
    if type(site) ~= "string" or not site:match("^[%w%.%-]+$") then
      error("vigil.datadog: not a site: " .. tostring(site), 2)
    end
    url = "https://api." .. site
  end
  if type(url) ~= "string" then error("vigil.datadog: url must be a string", 2) end
  local headers = { Accept = "application/json" }
  for k, v in pairs(opts.headers or {}) do headers[k] = v end
  headers["DD-API-KEY"] = opts.api_key
  headers["DD-APPLICATION-KEY"] = opts.app_key -- (nil leaves them out)
  url = url:gsub("/+$", "")
  local client = setmetatable({
    url = url,
    source = opts.name or ("datadog " .. url),
    policy = policy_of(opts),
    timeout = opts.timeout or "10s",
    max_bytes = opts.max_bytes,
    limited = {},
  }, Client)
  secret_headers[client] = headers
  return client
end

return M
