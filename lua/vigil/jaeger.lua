-- vigil.jaeger: a client for Jaeger's query HTTP API (the /api/... JSON the UI uses, with its
-- { data, errors } envelope) over vigil.http, in vigil.prom's style. A trace comes back as
--   { id, start, duration, spans = { { id, parent, service, operation, kind, start, duration,
--     tags = { key = value }, error, logs }, ... }, services = { name = { span ids } },
--     errors = <spans tagged error=true>, root = <span id> }
-- with times in unix seconds and durations in seconds. Failures are nil, "ENAME: detail":
-- Jaeger's own refusals (its errors[] list, 4xx) "EQUERY: <msg>", 401/403 "EAUTH: ...", 429
-- "ERATELIMIT: ...", 5xx and unreadable answers "EHTTP: <status> from <path>: ...", transport
-- failures as vigil.http gives them. Documented in docs/sources.md.
local http = require("vigil.http")
local policy_of, trim, urlencode = http.policy_of, http.trim, http.urlencode
local core = require("vigil.core")
local json = require("vigil.json")

local M = {}
local Client = {}
Client.__index = Client

local function list(x)
  return type(x) == "table" and x or {}
end

-- Jaeger writes its errors with a text/plain content type: decode the body whatever it says.
local function document(r)
  if r.json ~= nil then return r.json end
  local ok, doc = pcall(json.decode, r.body)
  if ok then return doc end
  return nil
end

local function messages(doc)
  if type(doc) ~= "table" or type(doc.errors) ~= "table" or #doc.errors == 0 then return nil end
  local out = {}
  for i, e in ipairs(doc.errors) do
    out[i] = type(e) == "table" and tostring(e.msg) or tostring(e)
  end
  return table.concat(out, "; ")
end

local function failure(r, path, doc)
  local msg = trim(messages(doc) or r.body)
  if msg == "" then msg = ("%d from %s"):format(r.status, path) end
  if r.status == 429 then
    local n = tonumber(r.headers["retry-after"] or "")
    return "ERATELIMIT: " .. msg .. (n and ("; retry after %d s"):format(math.ceil(n)) or "")
  end
  if r.status == 401 or r.status == 403 then return "EAUTH: " .. msg end
  if r.status >= 400 and r.status < 500 then return "EQUERY: " .. msg end
  return ("EHTTP: %d from %s: %s"):format(r.status, path, msg)
end

--- Calls one endpoint; returns its `data`, and the messages of a partial success (errors[]
-- beside data, e.g. trace IDs that were not found).
function Client:call(path, params)
  local r, err = http.get(self.url .. path, {
    query = params, timeout = self.timeout, headers = self.headers, max_bytes = self.max_bytes,
    source = self.source, policy = self.policy, idempotent = true,
  })
  if not r then return nil, err end
  local doc = document(r)
  if r.status >= 300 then return nil, failure(r, path, doc) end
  if type(doc) ~= "table" then
    return nil, ("EHTTP: %d from %s: not JSON: %s"):format(r.status, path, trim(r.body):sub(1, 120))
  end
  if type(doc.data) ~= "table" then
    local msg = messages(doc)
    if msg then return nil, "EQUERY: " .. msg end
    return nil, ("EHTTP: %d from %s: no data"):format(r.status, path)
  end
  return doc.data, messages(doc)
end

local function tag_value(t)
  local v = t.value
  if t.type == "int64" and type(v) == "string" then return math.tointeger(tonumber(v)) or v end
  if type(v) == "number" then return math.tointeger(v) or v end
  if v == json.null then return nil end
  return v
end

local function tags(list_of)
  local out = {}
  for _, t in ipairs(list(list_of)) do
    if type(t) == "table" and t.key ~= nil then out[t.key] = tag_value(t) end
  end
  return out
end

local function seconds(us)
  return (tonumber(us) or 0) / 1e6
end

--- Turns one trace of the UI JSON model into the compact form above.
local function convert(t)
  local processes = list(t.processes)
  local spans, services, present = {}, {}, {}
  local errors, first, last = 0, math.huge, -math.huge
  for _, s in ipairs(list(t.spans)) do present[s.spanID] = true end
  for i, s in ipairs(list(t.spans)) do
    local proc = processes[s.processID]
    local service = type(proc) == "table" and proc.serviceName or "unknown"
    local parent
    for _, ref in ipairs(list(s.references)) do
      if parent == nil or ref.refType == "CHILD_OF" then parent = ref.spanID end
      if ref.refType == "CHILD_OF" then break end
    end
    local tg = tags(s.tags)
    local failed = tg.error == true or tg.error == "true"
    local logs = {}
    for j, l in ipairs(list(s.logs)) do
      logs[j] = { ts = seconds(l.timestamp), fields = tags(l.fields) }
    end
    local start_us, dur_us = tonumber(s.startTime) or 0, tonumber(s.duration) or 0
    spans[i] = {
      id = s.spanID,
      parent = parent,
      service = service,
      operation = s.operationName,
      kind = tg["span.kind"],
      start = seconds(start_us),
      duration = seconds(dur_us),
      tags = tg,
      error = failed,
      logs = logs,
      warnings = type(s.warnings) == "table" and s.warnings or nil,
    }
    if failed then errors = errors + 1 end
    first = math.min(first, start_us)
    last = math.max(last, start_us + dur_us)
    services[service] = services[service] or {}
    table.insert(services[service], s.spanID)
  end
  -- the root: a span without a parent in this trace (the earliest, if several)
  local root
  for _, s in ipairs(spans) do
    if (s.parent == nil or not present[s.parent]) and (root == nil or s.start < root.start) then
      root = s
    end
  end
  return {
    id = t.traceID,
    start = #spans > 0 and seconds(first) or nil,
    duration = #spans > 0 and seconds(last - first) or 0,
    spans = spans,
    services = services,
    errors = errors,
    root = root and root.id,
    warnings = type(t.warnings) == "table" and t.warnings or nil,
  }
end

-- A time: a number (unix seconds) or a duration meaning that long ago, sent as an integer in
-- the unit the endpoint wants (microseconds for traces, milliseconds for dependencies).
local function time(t, scale, what)
  if t == nil then return nil end
  if type(t) == "number" then return ("%d"):format(math.floor(t * scale + 0.5)) end
  if type(t) == "string" then
    local ok, secs = pcall(core.duration, t)
    if ok then return ("%d"):format(math.floor((core.now() - secs) * scale + 0.5)) end
  end
  error(("vigil.jaeger: %s is not a time: %s"):format(what, tostring(t)), 3)
end

local function go_duration(d)
  if d == nil or type(d) == "string" then return d end
  if type(d) == "number" then return ("%.6fs"):format(d) end
  error("vigil.jaeger: not a duration: " .. tostring(d), 3)
end

--- trace(id) -> trace
function Client:trace(id)
  if type(id) ~= "string" or id == "" then error("vigil.jaeger: trace takes a trace id", 2) end
  local data, err = self:call("/api/traces/" .. urlencode(id), {})
  if not data then return nil, err end
  if type(data[1]) ~= "table" then return nil, "EQUERY: trace not found" end
  return convert(data[1])
end

--- traces{ service, operation, tags = { k = v }, start, ["end"], limit, min_duration,
-- max_duration } -> list of traces [, messages]
function Client:traces(opts)
  opts = opts or {}
  local params = {
    service = opts.service,
    operation = opts.operation,
    start = time(opts.start, 1e6, "start"),
    ["end"] = time(opts["end"], 1e6, "end"),
    limit = opts.limit,
    minDuration = go_duration(opts.min_duration),
    maxDuration = go_duration(opts.max_duration),
  }
  if opts.tags ~= nil then
    if type(opts.tags) ~= "table" then error("vigil.jaeger: tags must be a table", 2) end
    local t = {}
    for k, v in pairs(opts.tags) do t[tostring(k)] = tostring(v) end
    params.tags = json.encode(t)
  end
  local data, msg = self:call("/api/traces", params)
  if not data then return nil, msg end
  local out = {}
  for i, t in ipairs(data) do out[i] = convert(t) end
  return out, msg
end

--- services() -> names
function Client:services()
  return self:call("/api/services", {})
end

--- operations(service) -> operation names
function Client:operations(service)
  if type(service) ~= "string" then error("vigil.jaeger: operations takes a service name", 2) end
  return self:call("/api/services/" .. urlencode(service) .. "/operations", {})
end

--- dependencies([{ ["end"] = now, lookback = "24h", service }]) -> { { parent, child, calls } }
function Client:dependencies(opts)
  opts = opts or {}
  local lookback = opts.lookback or "24h"
  if type(lookback) == "string" then lookback = core.duration(lookback) end
  local data, err = self:call("/api/dependencies", {
    endTs = time(opts["end"] or core.now(), 1e3, "end"),
    lookback = ("%d"):format(math.floor(lookback * 1000 + 0.5)),
    service = opts.service,
  })
  if not data then return nil, err end
  local out = {}
  for i, d in ipairs(data) do
    local calls = math.tointeger(d.callCount) or d.callCount
    out[i] = { parent = d.parent, child = d.child, calls = calls }
  end
  return out
end


--- vigil.jaeger{ url = "http://jaeger:16686", timeout = "10s", headers = {...}, max_bytes = n,
-- name = ..., retries = 2, ... }: requests go through the source `name` ("jaeger <url>" by
-- default) and its policy in C, like vigil.prom's.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("vigil.jaeger: takes { url = \"http://...\" }", 2)
  end
  local url = opts.url:gsub("/+$", "")
  return setmetatable({
    url = url,
    timeout = opts.timeout or "10s",
    headers = opts.headers,
    max_bytes = opts.max_bytes,
    source = opts.name or ("jaeger " .. url),
    policy = policy_of(opts),
  }, Client)
end

return M
