-- vigil.silence: the suppress action's pure parts. request{} builds the Alertmanager API v2
-- call that creates a silence (POST /api/v2/silences, notes/apis.md §7.2) from an alert's
-- labels or explicit matchers; expire_request{} the call that ends one; matches() applies a
-- silence locally (vigil's own suppression list) to a label set. Nothing here does I/O.
--
-- Requests have the shape { method, url, headers = { "Content-Type: application/json" },
-- body = <JSON text> } plus what the caller keeps (matchers, starts_at, ends_at in unix
-- seconds). Bad input is refused with nil, "EINVAL: <field>: <why>", never echoing a label
-- value. A silence must narrow: at least one matcher is an equality with a non-empty value,
-- so no input, however hostile or empty, can silence every alert.
local json = require("vigil.json")
local core = require("vigil.core")
local http = require("vigil.http")

local M = {}

local MAX_VALUE = 4096        -- bytes of a matcher value
local MAX_NAME = 256          -- bytes of a label name
local MAX_DURATION = 30 * 86400
local JSON_HEADER = "Content-Type: application/json"

local function einval(field, why)
  return nil, ("EINVAL: %s: %s"):format(field, why)
end

local function need_table(opts, fn, shape)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'vigil.silence.%s' (table %s expected, got %s)")
      :format(fn, shape, type(opts)), 3)
  end
end

local function is_name(s)
  return type(s) == "string" and #s <= MAX_NAME and s:find("^[A-Za-z_][A-Za-z0-9_]*$") ~= nil
end

local NAME_WHY = "label names are letters, digits and '_', not starting with a digit"

--- One matcher in any accepted form -> { name, value, isRegex, isEqual }, or nil, why.
local function matcher(m, name, value)
  local regex, equal = false, true
  if type(m) == "table" then
    name, value = m.name, m.value
    regex = m.isRegex
    if regex == nil then regex = m.regex end
    equal = m.isEqual
    if equal == nil then equal = m.equal end
    regex, equal = regex == true, equal ~= false
  end
  if not is_name(name) then return nil, NAME_WHY end
  if type(value) ~= "string" then return nil, "values must be strings" end
  if #value > MAX_VALUE then return nil, ("values must be at most %d bytes"):format(MAX_VALUE) end
  if not utf8.len(value) then return nil, "values must be valid UTF-8" end
  return { name = name, value = value, isRegex = regex, isEqual = equal }
end

--- A list of matcher tables or a { name = "value" } map -> sorted, validated matchers.
local function matchers_of(field, ms)
  if type(ms) ~= "table" then return einval(field, "must be a table") end
  local out = {}
  if #ms > 0 then
    for i, m in ipairs(ms) do
      if type(m) ~= "table" then
        return einval(field, ("element %d must be { name, value, isRegex, isEqual }"):format(i))
      end
      local mm, why = matcher(m)
      if not mm then return einval(field, why) end
      out[i] = mm
    end
  else
    for k, v in pairs(ms) do
      local mm, why = matcher(nil, k, v)
      if not mm then return einval(field, why) end
      out[#out + 1] = mm
    end
    table.sort(out, function(a, b) return a.name < b.name end)
  end
  return out
end

--- Refuses a set that could match every alert: one equality on a non-empty value is needed.
local function narrowing(field, ms)
  for _, m in ipairs(ms) do
    if not m.isRegex and m.isEqual and m.value ~= "" then return ms end
  end
  if #ms == 0 then return einval(field, "no matchers: a silence must never match every alert") end
  return einval(field, "needs at least one name=\"value\" matcher with a non-empty value, so the "
    .. "silence cannot match every alert")
end

-- The labels of an alert table, or a plain label map given as the alert.
local function labels_of(opts)
  if opts.labels ~= nil then return opts.labels, "labels" end
  local a = opts.alert
  if type(a) == "table" and type(a.labels) == "table" then return a.labels, "alert" end
  return a, "alert"
end

local function time_of(field, t)
  if type(t) == "number" and t == t and t >= 0 and t < 253402300800 then return t end
  if type(t) == "string" then
    local u = http.rfc3339(t)
    if u then return u end
  end
  return einval(field, "must be unix seconds or an RFC 3339 time")
end

local rfc3339 = http.format_rfc3339

local function clean_text(field, v, default, max)
  if v == nil then v = default end
  if type(v) ~= "string" or v == "" then return einval(field, "must be a non-empty string") end
  if not utf8.len(v) then return einval(field, "must be valid UTF-8") end
  if utf8.len(v) > max then v = v:sub(1, utf8.offset(v, max) - 1) .. "…" end
  return v
end

local function base_url(url)
  if type(url) ~= "string" or not url:find("^[hH][tT][tT][pP][sS]?://[^/?#%s]+")
    or url:find("[%s%c\127-\255\"<>\\^`{|}?#]") or #url > 2048 then
    return einval("url", "must be the Alertmanager base URL (http:// or https://, no query)")
  end
  return (url:gsub("/+$", ""))
end

--- request{ url, alert = alert or label map | labels = map | matchers = list or map,
-- by = { "alertname", ... }, duration = "1h" | seconds (1h by default, at most 30 days) |
-- ends_at, starts_at = now, comment = "silenced by vigil", created_by = "vigil" }
-- -> { method = "POST", url = <base>/api/v2/silences, headers, body, matchers, starts_at,
--      ends_at } or nil, err
-- From an alert, the matchers are all its labels (sorted by name), or only those named in
-- `by`, each an exact name="value" match. Explicit matchers are { name, value, isRegex,
-- isEqual } tables or a { name = "value" } map.
function M.request(opts)
  need_table(opts, "request", "{ url, alert, duration, comment }")
  local url, err = base_url(opts.url)
  if not url then return nil, err end
  local ms
  local field = "matchers"
  if opts.matchers ~= nil then
    if opts.alert ~= nil or opts.labels ~= nil or opts.by ~= nil then
      return einval("matchers", "give matchers, or an alert (with by), not both")
    end
    ms, err = matchers_of("matchers", opts.matchers)
    if not ms then return nil, err end
  else
    local labels
    labels, field = labels_of(opts)
    if type(labels) ~= "table" then return einval(field, "must be an alert or a label table") end
    if opts.by ~= nil then
      if type(opts.by) ~= "table" or #opts.by == 0 then
        return einval("by", "must be a non-empty list of label names")
      end
      local subset = {}
      for _, name in ipairs(opts.by) do
        if not is_name(name) then return einval("by", NAME_WHY) end
        if labels[name] == nil then
          return einval("by", ("the alert has no label %s"):format(name))
        end
        subset[name] = labels[name]
      end
      labels = subset
    end
    ms, err = matchers_of(field, labels)
    if not ms then return nil, err end
  end
  ms, err = narrowing(field, ms)
  if not ms then return nil, err end

  local starts
  if opts.starts_at ~= nil then
    starts, err = time_of("starts_at", opts.starts_at)
    if not starts then return nil, err end
  else
    starts = core.now()
  end
  local ends
  if opts.ends_at ~= nil then
    if opts.duration ~= nil then return einval("duration", "give duration or ends_at, not both") end
    ends, err = time_of("ends_at", opts.ends_at)
    if not ends then return nil, err end
  else
    local d = opts.duration or 3600
    if type(d) == "string" then
      local ok, secs = pcall(core.duration, d)
      d = ok and secs or nil
    end
    if type(d) ~= "number" or d ~= d then
      return einval("duration", "must be seconds or a duration such as \"1h\"")
    end
    ends = starts + d
  end
  if ends <= starts then return einval("duration", "the silence must end after it starts") end
  if ends - starts > MAX_DURATION then return einval("duration", "must be at most 30 days") end

  local comment, created_by
  comment, err = clean_text("comment", opts.comment, "silenced by vigil", 1000)
  if not comment then return nil, err end
  created_by, err = clean_text("created_by", opts.created_by, "vigil", 256)
  if not created_by then return nil, err end

  local body
  body, err = json.encode({
    matchers = ms,
    startsAt = rfc3339(starts),
    endsAt = rfc3339(ends),
    createdBy = created_by,
    comment = comment,
  })
  if not body then return einval("body", err) end
  return { method = "POST", url = url .. "/api/v2/silences", headers = { JSON_HEADER },
           body = body, matchers = ms, starts_at = starts, ends_at = ends }
end

--- expire_request{ url, id } -> { method = "DELETE", url = <base>/api/v2/silence/<id>,
-- headers = {} } (note the singular "silence" in Alertmanager's path), or nil, err.
function M.expire_request(opts)
  need_table(opts, "expire_request", "{ url, id }")
  local url, err = base_url(opts.url)
  if not url then return nil, err end
  local id = opts.id
  if type(id) ~= "string" or #id > 64 or not id:find("^%x[%x%-]*$") then
    return einval("id", "must be a silence id (a UUID)")
  end
  return { method = "DELETE", url = url .. "/api/v2/silence/" .. id, headers = {} }
end

--- matches(suppression, labels [, now]) -> true | false, or nil, err
-- Applies a silence locally, with Alertmanager's semantics: every matcher must hold; a
-- missing label counts as ""; isEqual = false negates. `suppression` is what request()
-- returned (or any { matchers, starts_at, ends_at }); outside [starts_at, ends_at) it matches
-- nothing. Regex matchers are refused (EINVAL): Lua patterns are not Alertmanager's regexes,
-- and guessing would suppress the wrong alerts.
function M.matches(sup, labels, now)
  if type(sup) ~= "table" then
    error("bad argument #1 to 'vigil.silence.matches' (suppression table expected)", 2)
  end
  if type(labels) ~= "table" then
    error("bad argument #2 to 'vigil.silence.matches' (label table expected)", 2)
  end
  local ms, err = matchers_of("matchers", sup.matchers)
  if not ms then return nil, err end
  ms, err = narrowing("matchers", ms)
  if not ms then return nil, err end
  for _, m in ipairs(ms) do
    if m.isRegex then return einval("matchers", "regex matchers are not evaluated locally") end
  end
  now = now or core.now()
  if type(sup.starts_at) == "number" and now < sup.starts_at then return false end
  if type(sup.ends_at) == "number" and now >= sup.ends_at then return false end
  for _, m in ipairs(ms) do
    local v = labels[m.name]
    if v == nil then v = "" end
    if (v == m.value) ~= m.isEqual then return false end
  end
  return true
end

return M
