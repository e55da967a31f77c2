-- vigil.alertmanager: Prometheus Alertmanager's API v2 over vigil.http, in vigil.prom's style.
--   alerts{ filter, active, silenced, inhibited, unprocessed, receiver }
--     -> { { fingerprint, labels, annotations, state, silenced_by, inhibited_by, receivers,
--            starts_at, ends_at, updated_at, generator_url }, ... }   (times in unix seconds)
--   silences([{ filter, state }]) -> { { id, state, matchers = { 'name="value"', ... },
--            starts_at, ends_at, updated_at, created_by, comment }, ... }
--   silence{ matchers, duration, comment, created_by } -> id ; expire(id) -> true ; status()
-- Matchers are 'name="value"' strings (=, !=, =~, !~), { name = "value" } maps, or
-- { name, value, regex, equal } tables. Failures are nil, "ENAME: detail": Alertmanager's own
-- refusals (a JSON string, a {code, message} object or text; 4xx, and the 500 "silence not
-- found" of older versions) "EQUERY: <message>", 401/403 "EAUTH: ...", 5xx and unreadable
-- answers "EHTTP: <status> from <path>: ...". Documented in docs/sources.md.
local http = require("vigil.http")
local policy_of, trim, urlencode = http.policy_of, http.trim, http.urlencode
local core = require("vigil.core")
local json = require("vigil.json")

local M = {}
local Client = {}
Client.__index = Client

--- RFC 3339 -> unix seconds (a number), or nil.
local function unix(s)
  return (http.rfc3339(s))
end

local rfc3339 = http.format_rfc3339

local function time(t, what)
  if type(t) == "number" then return t end
  if type(t) == "string" then
    local u = unix(t)
    if u then return u end
  end
  error(("vigil.alertmanager: %s is not a time: %s"):format(what, tostring(t)), 3)
end

local function unquote(v)
  local inner = v:match('^"(.*)"$')
  if not inner then return v end
  return (inner:gsub("\\(.)", { n = "\n", ['"'] = '"', ["\\"] = "\\" }))
end

local function quote(v)
  return '"' .. tostring(v):gsub('[\\"]', "\\%0"):gsub("\n", "\\n") .. '"'
end

local OPS = { "=~", "!~", "!=", "=" }

--- Any matcher form -> { name, value, isRegex, isEqual }
local function matcher(m)
  if type(m) == "string" then
    local name, rest = m:match("^%s*([%a_][%w_]*)%s*(.-)%s*$")
    for _, op in ipairs(name and OPS or {}) do
      if rest:sub(1, #op) == op then
        local value = rest:sub(#op + 1):match("^%s*(.-)$")
        return { name = name, value = unquote(value), isRegex = op:sub(2) == "~",
                 isEqual = op:sub(1, 1) == "=" }
      end
    end
    error("vigil.alertmanager: not a matcher: " .. m, 4)
  elseif type(m) == "table" and type(m.name) == "string" and m.value ~= nil then
    local regex, equal = m.regex, m.equal
    if regex == nil then regex = m.isRegex end
    if equal == nil then equal = m.isEqual end
    return { name = m.name, value = tostring(m.value), isRegex = regex == true,
             isEqual = equal ~= false }
  end
  error("vigil.alertmanager: not a matcher: " .. tostring(m), 4)
end

--- A list of matcher strings/tables, one string, or a { name = "value" } map -> matchers
local function matchers(ms)
  if type(ms) == "string" then return { matcher(ms) } end
  if type(ms) ~= "table" then error("vigil.alertmanager: matchers must be a table", 3) end
  local out = {}
  if #ms > 0 then
    for i, m in ipairs(ms) do out[i] = matcher(m) end
  else
    local names = {}
    for k in pairs(ms) do names[#names + 1] = k end
    table.sort(names)
    for i, k in ipairs(names) do out[i] = matcher({ name = k, value = ms[k] }) end
  end
  return out
end

local function matcher_string(m)
  local op = (m.isEqual == false and "!" or "=") .. (m.isRegex and "~" or "")
  if op == "!" then op = "!=" end
  return m.name .. op .. quote(m.value)
end

local function filters(f)
  if f == nil then return nil end
  local out = {}
  for i, m in ipairs(matchers(f)) do out[i] = matcher_string(m) end
  return out
end

local function failure(r, path)
  local doc = r.json
  if doc == nil then
    local ok, d = pcall(json.decode, r.body)
    if ok then doc = d end
  end
  local msg
  if type(doc) == "string" then msg = doc
  elseif type(doc) == "table" and doc.message then msg = tostring(doc.message) end
  msg = trim(msg or r.body)
  if msg == "" then msg = ("%d from %s"):format(r.status, path) end
  if r.status == 429 then return "ERATELIMIT: " .. msg end
  if r.status == 401 or r.status == 403 then return "EAUTH: " .. msg end
  if (r.status >= 400 and r.status < 500) or msg:match("not found$") then
    return "EQUERY: " .. msg
  end
  return ("EHTTP: %d from %s: %s"):format(r.status, path, msg)
end

--- Calls one endpoint; returns the decoded answer (true for an empty one).
function Client:call(method, path, params, body)
  local r, err = http.request({
    method = method,
    url = self.url .. path,
    query = params,
    json = body,
    headers = self.headers,
    timeout = self.timeout,
    max_bytes = self.max_bytes,
    source = self.source,
    policy = self.policy,
    idempotent = method ~= "POST", -- creating a silence twice makes two
  })
  if not r then return nil, err end
  if r.status >= 300 then return nil, failure(r, path) end
  if r.body == "" then return true end
  if r.json == nil then
    return nil, ("EHTTP: %d from %s: not JSON: %s"):format(r.status, path, trim(r.body):sub(1, 120))
  end
  return r.json
end

local function list(x)
  return type(x) == "table" and x or {}
end

local function bool(v)
  if v == nil then return nil end
  return v and "true" or "false"
end

--- alerts([{ filter = {...}, active, silenced, inhibited, unprocessed, receiver }]) -> alerts
function Client:alerts(opts)
  opts = opts or {}
  local doc, err = self:call("GET", "/api/v2/alerts", {
    filter = filters(opts.filter),
    active = bool(opts.active),
    silenced = bool(opts.silenced),
    inhibited = bool(opts.inhibited),
    unprocessed = bool(opts.unprocessed),
    receiver = opts.receiver,
  })
  if not doc then return nil, err end
  local out = {}
  for i, a in ipairs(list(doc)) do
    local st = type(a.status) == "table" and a.status or {}
    local receivers = {}
    for j, rc in ipairs(list(a.receivers)) do receivers[j] = rc.name end
    out[i] = {
      fingerprint = a.fingerprint,
      labels = type(a.labels) == "table" and a.labels or {},
      annotations = type(a.annotations) == "table" and a.annotations or {},
      state = st.state,
      silenced_by = list(st.silencedBy),
      inhibited_by = list(st.inhibitedBy),
      receivers = receivers,
      starts_at = unix(a.startsAt),
      ends_at = unix(a.endsAt),
      updated_at = unix(a.updatedAt),
      generator_url = type(a.generatorURL) == "string" and a.generatorURL or nil,
    }
  end
  return out
end

--- silences([{ filter = {...}, state = "active" | "pending" | "expired" }]) -> silences
-- (Alertmanager keeps expired silences for days: `state` keeps only those in that state.)
function Client:silences(opts)
  opts = opts or {}
  local doc, err = self:call("GET", "/api/v2/silences", { filter = filters(opts.filter) })
  if not doc then return nil, err end
  local out = {}
  for _, s in ipairs(list(doc)) do
    local state = type(s.status) == "table" and s.status.state or nil
    if opts.state == nil or opts.state == state then
      local ms = {}
      for j, m in ipairs(list(s.matchers)) do ms[j] = matcher_string(m) end
      out[#out + 1] = {
        id = s.id,
        state = state,
        matchers = ms,
        starts_at = unix(s.startsAt),
        ends_at = unix(s.endsAt),
        updated_at = unix(s.updatedAt),
        created_by = s.createdBy,
        comment = s.comment,
      }
    end
  end
  return out
end

--- silence{ matchers = {...}, duration = "1h" | ends_at = t, starts_at = now,
-- comment = "...", created_by = "vigil", id = <to update> } -> silence id
function Client:silence(opts)
  if type(opts) ~= "table" or opts.matchers == nil then
    error("vigil.alertmanager: silence takes { matchers = ..., duration = ... }", 2)
  end
  local starts = opts.starts_at and time(opts.starts_at, "starts_at") or core.now()
  local ends
  if opts.ends_at ~= nil then
    ends = time(opts.ends_at, "ends_at")
  else
    local d = opts.duration or "1h"
    ends = starts + (type(d) == "number" and d or core.duration(d))
  end
  local doc, err = self:call("POST", "/api/v2/silences", nil, {
    id = opts.id,
    matchers = matchers(opts.matchers),
    startsAt = rfc3339(starts),
    endsAt = rfc3339(ends),
    createdBy = opts.created_by or "vigil",
    comment = opts.comment or "silenced by vigil",
  })
  if not doc then return nil, err end
  if type(doc) ~= "table" or type(doc.silenceID) ~= "string" then
    return nil, "EHTTP: 200 from /api/v2/silences: no silenceID in the answer"
  end
  return doc.silenceID
end

--- expire(id) -> true
function Client:expire(id)
  if type(id) ~= "string" or id == "" then
    error("vigil.alertmanager: expire takes a silence id", 2)
  end
  local ok, err = self:call("DELETE", "/api/v2/silence/" .. urlencode(id))
  if not ok then return nil, err end
  return true
end

--- status() -> { version, cluster, peers, started, config }
function Client:status()
  local doc, err = self:call("GET", "/api/v2/status")
  if not doc then return nil, err end
  if type(doc) ~= "table" then return nil, "EHTTP: 200 from /api/v2/status: not an object" end
  local cluster = type(doc.cluster) == "table" and doc.cluster or {}
  local version = type(doc.versionInfo) == "table" and doc.versionInfo or {}
  return {
    version = version.version,
    cluster = cluster.status,
    peers = #list(cluster.peers),
    started = unix(doc.uptime),
    config = type(doc.config) == "table" and doc.config.original or nil,
  }
end


--- vigil.alertmanager{ url = "http://alertmanager:9093", timeout = "10s", headers = {...},
-- name = ..., retries = 2, ... }: requests go through the source `name` ("alertmanager <url>"
-- by default) and its policy in C, like vigil.prom's; creating a silence is never retried.
function M.new(opts)
  if type(opts) ~= "table" or type(opts.url) ~= "string" then
    error("vigil.alertmanager: takes { url = \"http://...\" }", 2)
  end
  local url = opts.url:gsub("/+$", "")
  return setmetatable({
    url = url,
    timeout = opts.timeout or "10s",
    headers = opts.headers,
    max_bytes = opts.max_bytes,
    source = opts.name or ("alertmanager " .. url),
    policy = policy_of(opts),
  }, Client)
end

return M
