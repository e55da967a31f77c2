-- vigil.notify: pure builders of notification requests: a Slack incoming webhook, a
-- PagerDuty Events API v2 event, a signed generic webhook (notes/apis.md §5, §6). Nothing here
-- sends anything: each builder returns the exact request for the engine to send,
--   { method = "POST", url = ..., headers = { "Content-Type: application/json", ... },
--     body = <JSON text>, redacted_url = <url safe to log> }
-- or nil, "EINVAL: <field>: <why>" for input it refuses. Only a call without an options table
-- raises.
--
-- Alert content is hostile by assumption: every string put in a body is made valid UTF-8
-- (invalid bytes become U+FFFD), cut to the receiver's limits on a character boundary, and
-- JSON-escaped by the encoder; Slack's control characters & < > are escaped in message text.
-- Secrets (the Slack webhook URL, the PagerDuty routing key, the webhook signing secret) never
-- appear in an error message or in redacted_url.
local json = require("vigil.json")
local core = require("vigil.core")
local crypto = require("vigil.crypto")
local http = require("vigil.http")

local M = {}

M.PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"

local JSON_HEADER = "Content-Type: application/json"

local function einval(field, why)
  return nil, ("EINVAL: %s: %s"):format(field, why)
end

local function need_table(opts, fn, shape)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'vigil.notify.%s' (table %s expected, got %s)")
      :format(fn, shape, type(opts)), 3)
  end
end

--- s as valid UTF-8: each byte that does not start a valid sequence becomes U+FFFD. Linear:
-- utf8.len stops at the first bad byte and the next call starts after it.
local function utf8_clean(s)
  if utf8.len(s) then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local ok, bad = utf8.len(s, i)
    if ok then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

--- Any value as clean text of at most `max` characters (an ellipsis marks a cut).
local function text(v, max)
  local s = utf8_clean(tostring(v))
  if max and utf8.len(s) > max then
    s = s:sub(1, utf8.offset(s, max) - 1) .. "…"
  end
  return s
end
M.text = text

--- Any value as Slack mrkdwn text of at most `max` characters once escaped: & < > become
-- entities (so alert text cannot make links or mentions), and a cut never splits one.
local function slack_text(v, max)
  local s = utf8_clean(tostring(v)):gsub("[&<>]", { ["&"] = "&amp;", ["<"] = "&lt;",
    [">"] = "&gt;" })
  if utf8.len(s) > max then
    s = s:sub(1, utf8.offset(s, max) - 1):gsub("&%a*$", "") .. "…"
  end
  return s
end

-- An http(s) URL without blanks, controls or characters that break out of a header line.
local function check_url(field, url, secret)
  local why
  if type(url) ~= "string" then
    why = "must be a string"
  elseif #url > 4096 then
    why = "must be at most 4096 bytes"
  elseif not url:find("^[hH][tT][tT][pP][sS]?://[^/?#%s]+") then
    why = "must be an http:// or https:// URL"
  elseif url:find("[%s%c\127-\255\"<>\\^`{|}]") then
    why = "must not contain blanks, control characters, quotes or <>\\^`{|}"
  end
  if why then
    return einval(field, why .. (secret and " (value not shown: it is a secret)" or ""))
  end
  return url
end

-- scheme://host/ and nothing after: the path of a Slack webhook is its credential
local function redact(url)
  return (url:match("^([^:]+://[^/?#]+)") or "?") .. "/…"
end

-- A table of extra values (custom details, webhook payloads) copied with every string made
-- valid UTF-8 and every key a string; nil, why for cycles, functions and deep nesting.
local function clean_tree(v, depth)
  local t = type(v)
  if t == "string" then return utf8_clean(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return nil, "a number is not finite" end
    return v
  end
  if t == "boolean" or v == json.null then return v end
  if t ~= "table" then return nil, "cannot encode a " .. t end
  if depth > 32 then return nil, "nested deeper than 32" end
  local out = {}
  for k, x in pairs(v) do
    if type(k) ~= "string" and math.type(k) ~= "integer" then
      return nil, "a key is neither a string nor an integer"
    end
    local c, err = clean_tree(x, depth + 1)
    if c == nil then return nil, err end
    out[type(k) == "string" and utf8_clean(k) or k] = c
  end
  return out
end

local function encode(doc)
  local body, err = json.encode(doc)
  if not body then return einval("body", err) end
  return body
end

-- ---- Slack ----

local SEVERITY_STYLE = {
  critical = { color = "#d0021b", icon = ":red_circle:" },
  high = { color = "#f5a623", icon = ":large_orange_circle:" },
  medium = { color = "#f8e71c", icon = ":large_yellow_circle:" },
  low = { color = "#4a90e2", icon = ":large_blue_circle:" },
  info = { color = "#9b9b9b", icon = ":white_circle:" },
  resolved = { color = "#2eb886", icon = ":large_green_circle:" },
}

local function slack_fields(fields)
  if fields == nil then return {} end
  if type(fields) ~= "table" then return einval("fields", "must be a table") end
  local list = {}
  if #fields > 0 then
    for i, f in ipairs(fields) do
      if type(f) ~= "table" or (f.title == nil and f.name == nil) or f.value == nil then
        return einval("fields", ("element %d must be { title = ..., value = ... }"):format(i))
      end
      list[i] = { title = f.title or f.name, value = f.value, short = f.short }
    end
  else
    local names = {}
    for k in pairs(fields) do
      if type(k) ~= "string" then return einval("fields", "keys must be strings") end
      names[#names + 1] = k
    end
    table.sort(names)
    for i, k in ipairs(names) do list[i] = { title = k, value = fields[k] } end
  end
  if #list > 20 then return einval("fields", "at most 20 fields") end
  local out = {}
  for i, f in ipairs(list) do
    local value = slack_text(f.value, 1000)
    out[i] = {
      title = slack_text(f.title, 100),
      value = value,
      short = f.short == nil and utf8.len(value) <= 40 or f.short == true,
    }
  end
  return out
end

--- slack{ webhook, text, title, fields = { name = value } | { { title, value, short }, ... },
-- severity, incident_url } -> request
-- The body has `text` (always: the notification and fallback text, with the severity and
-- title), `blocks` (a header with the title, a section with the text, a button to the
-- incident) and one attachment coloured by severity that carries the fields. All text is
-- escaped for Slack (& < >): links are made only from incident_url.
function M.slack(opts)
  need_table(opts, "slack", "{ webhook, text, ... }")
  local url, err = check_url("webhook", opts.webhook, true)
  if not url then return nil, err end
  if (type(opts.text) ~= "string" and type(opts.text) ~= "number") or opts.text == "" then
    return einval("text", "is required (a string)")
  end
  local severity = opts.severity ~= nil and text(opts.severity, 20):lower() or nil
  local style = SEVERITY_STYLE[severity] or { color = "#9b9b9b", icon = ":bell:" }
  local body_text = slack_text(opts.text, 2900)
  local title = opts.title ~= nil and text(opts.title, 150) or nil
  local head = (severity and ("[" .. severity:upper() .. "] ") or "")
    .. (title and (title .. ": ") or "")
  local fallback = style.icon .. " " .. slack_text(head, 200) .. body_text
  local blocks = {}
  if title then
    blocks[#blocks + 1] = { type = "header",
      text = { type = "plain_text", text = title, emoji = true } }
  end
  blocks[#blocks + 1] = { type = "section", text = { type = "mrkdwn", text = body_text } }
  if opts.incident_url ~= nil then
    local link
    link, err = check_url("incident_url", opts.incident_url)
    if not link then return nil, err end
    if #link > 3000 then return einval("incident_url", "must be at most 3000 bytes") end
    blocks[#blocks + 1] = { type = "actions", elements = { { type = "button",
      text = { type = "plain_text", text = "Open incident" }, url = link } } }
  end
  local fields
  fields, err = slack_fields(opts.fields)
  if not fields then return nil, err end
  local attachment = { color = style.color, fallback = fallback }
  if #fields > 0 then attachment.fields = fields end
  local body
  body, err = encode({ text = fallback, blocks = blocks, attachments = { attachment } })
  if not body then return nil, err end
  return { method = "POST", url = url, headers = { JSON_HEADER }, body = body,
           redacted_url = redact(url) }
end

-- ---- PagerDuty ----

-- vigil's severities (and PagerDuty's own) -> PagerDuty's four
local PD_SEVERITY = {
  critical = "critical", high = "error", error = "error", medium = "warning",
  warning = "warning", low = "info", info = "info",
}
M.PAGERDUTY_SEVERITY = PD_SEVERITY

local PD_ACTIONS = { trigger = true, acknowledge = true, resolve = true }

local function check_links(links)
  if links == nil then return nil end
  if type(links) ~= "table" then return einval("links", "must be a list of { href, text }") end
  local out = {}
  for i, l in ipairs(links) do
    if type(l) == "string" then l = { href = l } end
    if type(l) ~= "table" then return einval("links", "must be a list of { href, text }") end
    local href, err = check_url("links", l.href)
    if not href then return nil, err end
    out[i] = { href = href, text = l.text ~= nil and text(l.text, 256) or nil }
  end
  if #out > 20 then return einval("links", "at most 20 links") end
  return out
end

local rfc3339 = http.format_rfc3339

--- pagerduty{ routing_key, action = "trigger" | "acknowledge" | "resolve", dedup_key,
-- summary, source, severity, timestamp, component, group, class, custom_details, links,
-- client, client_url, url } -> request to url (PagerDuty's Events API v2 by default)
-- A trigger needs summary (cut to 1024 characters) and source (cut to 255); severity maps
-- vigil's critical/high/medium/low/info to critical/error/warning/info (PagerDuty's own four
-- pass through; anything else, or none, is "error": a notification is never dropped for
-- that). acknowledge and resolve need the trigger's dedup_key (at most 255 bytes). Over
-- PagerDuty's 512 KB event limit, custom_details is replaced by a note, as Alertmanager does.
function M.pagerduty(opts)
  need_table(opts, "pagerduty", "{ routing_key, summary, source, ... }")
  local key = opts.routing_key
  if type(key) ~= "string" or #key ~= 32 or key:find("[^%w]") then
    return einval("routing_key", "must be the 32-character integration key (value not shown)")
  end
  local action = opts.action or "trigger"
  if not PD_ACTIONS[action] then
    return einval("action", "must be trigger, acknowledge or resolve")
  end
  local url, err = check_url("url", opts.url or M.PAGERDUTY_URL)
  if not url then return nil, err end
  local dedup = opts.dedup_key
  if dedup ~= nil then
    if type(dedup) ~= "string" or dedup == "" or #dedup > 255 or not utf8.len(dedup)
      or dedup:find("%c") then
      return einval("dedup_key", "must be 1 to 255 bytes of UTF-8 text without control characters")
    end
  elseif action ~= "trigger" then
    return einval("dedup_key", "is required to " .. action)
  end
  local event = { routing_key = key, event_action = action, dedup_key = dedup }
  if action == "trigger" then
    for _, f in ipairs({ "summary", "source" }) do
      local v = opts[f]
      if (type(v) ~= "string" and type(v) ~= "number") or v == "" then
        return einval(f, "is required (a string)")
      end
    end
    local sev = opts.severity ~= nil and PD_SEVERITY[tostring(opts.severity):lower()] or "error"
    local payload = {
      summary = text(opts.summary, 1024),
      source = text(opts.source, 255),
      severity = sev,
      component = opts.component ~= nil and text(opts.component, 255) or nil,
      group = opts.group ~= nil and text(opts.group, 255) or nil,
      class = opts.class ~= nil and text(opts.class, 255) or nil,
    }
    if opts.timestamp ~= nil then
      local ts = opts.timestamp
      if type(ts) ~= "number" or ts ~= ts or ts < 0 or ts > 253402300799 then
        return einval("timestamp", "must be unix seconds")
      end
      payload.timestamp = rfc3339(ts)
    end
    if opts.custom_details ~= nil then
      local details
      details, err = clean_tree(opts.custom_details, 1)
      if details == nil then return einval("custom_details", err) end
      payload.custom_details = details
    end
    event.payload = payload
    event.links, err = check_links(opts.links)
    if err then return nil, err end
    event.client = text(opts.client or "vigil", 255)
    if opts.client_url ~= nil then
      event.client_url, err = check_url("client_url", opts.client_url)
      if err then return nil, err end
    end
  end
  local body
  body, err = encode(event)
  if not body then return nil, err end
  if #body > 512000 and event.payload and event.payload.custom_details then
    event.payload.custom_details = { note = "custom_details dropped: the event was over 512 KB" }
    body, err = encode(event)
    if not body then return nil, err end
  end
  if #body > 512000 then return einval("body", "the event is over 512 KB") end
  return { method = "POST", url = url, headers = { JSON_HEADER }, body = body,
           redacted_url = url:match("^[^?#]*") } -- the routing key is in the body, not the URL
end

--- dedup_key(incident) -> a stable PagerDuty dedup key for an incident, or nil, err:
-- "vigil-incident-<id>" when it has an id (letters, digits and - _ . : only), else
-- "vigil-group-<hash>" from its group key, else "vigil-alert-<fingerprint>". The same incident
-- always gives the same key, so trigger, acknowledge and resolve address one PagerDuty alert.
function M.dedup_key(incident)
  if type(incident) ~= "table" then
    error("bad argument #1 to 'vigil.notify.dedup_key' (incident table expected)", 2)
  end
  local id = incident.id
  if math.type(id) == "integer" then id = tostring(id) end
  if type(id) == "string" and id ~= "" then
    if #id <= 200 and not id:find("[^%w%-_.:]") then return "vigil-incident-" .. id end
    return "vigil-incident-" .. crypto.sha256(id):sub(1, 32)
  end
  local group = incident.group_key
  if type(group) == "string" and group ~= "" then
    return "vigil-group-" .. crypto.sha256(group):sub(1, 32)
  end
  local fp = incident.fingerprint
  if type(fp) == "string" and fp:find("^%x+$") and #fp <= 64 then
    return "vigil-alert-" .. fp:lower()
  end
  return einval("incident", "has no id, group_key or fingerprint to derive a dedup key from")
end

-- ---- generic webhook ----

local function check_header_name(field, name)
  if type(name) ~= "string" or #name > 64 or not name:find("^[A-Za-z][A-Za-z0-9%-]*$") then
    return einval(field, "must be a header name (letters, digits and '-', starting with a letter)")
  end
  return name
end

--- webhook{ url, payload = table | JSON string, secret, header = "X-Vigil-Signature",
-- timestamp_header = "X-Vigil-Timestamp", timestamp = now, headers = { name = value } }
-- -> request
-- With a secret the request is signed: T is the timestamp (integer unix seconds, vigil.now()
-- unless given), S = hex(HMAC-SHA256(secret, T .. "." .. body)) over the exact body bytes
-- sent, and the headers carry "X-Vigil-Timestamp: T" and "X-Vigil-Signature: sha256=S". A
-- receiver recomputes S from the raw body and the timestamp header, compares in constant
-- time, and refuses timestamps too far from its clock (replays). Extra headers may not hold
-- CR, LF or NUL, nor override Content-Type or the signature headers.
function M.webhook(opts)
  need_table(opts, "webhook", "{ url, payload, ... }")
  local url, err = check_url("url", opts.url)
  if not url then return nil, err end
  local body
  if type(opts.payload) == "string" then
    local doc, bad = json.decode(opts.payload)
    if doc == nil and bad then return einval("payload", "is not valid JSON") end
    body = utf8_clean(opts.payload)
  elseif type(opts.payload) == "table" then
    local doc
    doc, err = clean_tree(opts.payload, 1)
    if doc == nil then return einval("payload", err) end
    body, err = encode(doc)
    if not body then return nil, err end
  else
    return einval("payload", "must be a table or a JSON string")
  end
  local headers = { JSON_HEADER }
  local reserved = { ["content-type"] = true }
  if opts.secret ~= nil then
    if type(opts.secret) ~= "string" or opts.secret == "" then
      return einval("secret", "must be a non-empty string (value not shown)")
    end
    local sig_name, ts_name
    sig_name, err = check_header_name("header", opts.header or "X-Vigil-Signature")
    if not sig_name then return nil, err end
    ts_name, err = check_header_name("timestamp_header",
      opts.timestamp_header or "X-Vigil-Timestamp")
    if not ts_name then return nil, err end
    if sig_name:lower() == ts_name:lower() or reserved[sig_name:lower()]
      or reserved[ts_name:lower()] then
      return einval("header", "the signature and timestamp headers must differ from each "
        .. "other and from Content-Type")
    end
    local ts = opts.timestamp or core.now()
    if type(ts) ~= "number" or ts ~= ts or ts < 0 or ts > 253402300799 then
      return einval("timestamp", "must be unix seconds")
    end
    ts = ("%d"):format(math.floor(ts))
    local sig = crypto.hmac_sha256(opts.secret, ts .. "." .. body)
    headers[#headers + 1] = ts_name .. ": " .. ts
    headers[#headers + 1] = sig_name .. ": sha256=" .. sig
    reserved[sig_name:lower()], reserved[ts_name:lower()] = true, true
  end
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then return einval("headers", "must be a table") end
    local names = {}
    for k in pairs(opts.headers) do
      local name
      name, err = check_header_name("headers", k)
      if not name then return nil, err end
      if reserved[name:lower()] then
        return einval("headers", "must not set Content-Type or the signature headers")
      end
      names[#names + 1] = name
    end
    table.sort(names)
    for _, k in ipairs(names) do
      local v = opts.headers[k]
      if (type(v) ~= "string" and type(v) ~= "number") or tostring(v):find("[%z\r\n]")
        or #tostring(v) > 8192 then
        return einval("headers", "a value must be a string without CR, LF or NUL "
          .. "(value not shown)")
      end
      headers[#headers + 1] = k .. ": " .. tostring(v)
    end
  end
  return { method = "POST", url = url, headers = headers, body = body,
           redacted_url = redact(url) }
end

--- http_options(request) -> the request as options for vigil.http.request (headers as a
-- { name = value } map instead of "Name: value" lines).
function M.http_options(req)
  if type(req) ~= "table" or type(req.headers) ~= "table" then
    error("bad argument #1 to 'vigil.notify.http_options' (request table expected)", 2)
  end
  local h = {}
  for _, line in ipairs(req.headers) do
    local name, value = line:match("^([^:]+):%s*(.*)$")
    h[name] = value
  end
  return { method = req.method, url = req.url, headers = h, body = req.body }
end

return M
