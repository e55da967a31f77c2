-- vigil.kube: pure builders of kubectl command lines for the actions scale, restart, rollout
-- status, patch, isolate and failback, plus readers of kubectl's JSON output. Nothing here runs
-- a process: the executor (the engine) runs what these functions return.
--
-- Every builder returns an argv *without the executable*: it starts at the subcommand
-- ({ "get", "deployment", "web", "-n", "prod", "-o", "json" }). The engine puts the kubectl
-- path first (its `kubectl` option, "kubectl" by default; kube.command does that) and runs the
-- argv with execve, never through a shell.
--
-- Names and namespaces usually come from alert labels, so every value is validated before it
-- gets near an argv: a bad one is refused with nil, "EINVAL: <field>: <why>" (the value itself
-- is never echoed: it may be hostile or huge). Only a call without an options table raises.
-- Rules (Kubernetes' own, see notes/apis.md §8.7): namespaces are DNS-1123 labels (<= 63),
-- object names DNS-1123 subdomains (<= 253), Service names DNS-1035 labels (<= 63); kinds come
-- from a fixed list; selector keys and values follow the label rules. Namespaces kube-* are
-- refused unless the call says allow_system = true. A validated value never starts with '-'
-- (so kubectl cannot read it as a flag) and holds no NUL, CR or LF.
local json = require("vigil.json")
local core = require("vigil.core")

local M = {}

--- The annotation in which isolate keeps the Service's selector for failback.
M.SAVED_SELECTOR = "vigil.dev/saved-selector"

-- kind -> { scope, name rule, verbs that make sense for it }
local KINDS = {
  deployment = { namespaced = true, scale = true, rollout = true },
  statefulset = { namespaced = true, scale = true, rollout = true },
  daemonset = { namespaced = true, rollout = true },
  replicaset = { namespaced = true, scale = true },
  service = { namespaced = true, dns1035 = true },
  pod = { namespaced = true },
  job = { namespaced = true },
  cronjob = { namespaced = true },
  configmap = { namespaced = true },
  horizontalpodautoscaler = { namespaced = true },
  poddisruptionbudget = { namespaced = true },
  node = { namespaced = false },
}
M.KINDS = {}
for k in pairs(KINDS) do M.KINDS[#M.KINDS + 1] = k end
table.sort(M.KINDS)

local PATCH_TYPES = { strategic = true, merge = true, json = true }
local MAX_REPLICAS = 2147483647 -- int32, the type of spec.replicas
local MAX_DEPTH = 32            -- nesting of a patch table

-- v as an integer when it is a number with an integral value (math.tointeger alone would
-- also convert the string "5")
local function int(v)
  return type(v) == "number" and math.tointeger(v) or nil
end

local function einval(field, why)
  return nil, ("EINVAL: %s: %s"):format(field, why)
end

local function need_table(opts, fn, shape)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'vigil.kube.%s' (table %s expected, got %s)")
      :format(fn, shape, type(opts)), 3)
  end
end

--- A string fit to be (part of) one argv element: non-empty, at most `max` bytes, no leading
-- '-', no NUL, CR or LF. Returns true, or nil and the reason.
local function plain(v, max)
  if type(v) ~= "string" then return nil, "must be a string, got " .. type(v) end
  if v == "" then return nil, "must not be empty" end
  if #v > max then return nil, ("must be at most %d bytes"):format(max) end
  if v:byte(1) == 45 then return nil, "must not start with '-'" end
  if v:find("[\0\r\n]") then return nil, "must not contain NUL, CR or LF" end
  return true
end

-- [a-z0-9]([-a-z0-9]*[a-z0-9])?
local function is_dns_label(s)
  return s:find("^[a-z0-9][-a-z0-9]*$") ~= nil and s:find("[a-z0-9]$") ~= nil
end

local function is_dns_subdomain(s)
  if #s > 253 then return false end
  for part in (s .. "."):gmatch("([^.]*)%.") do
    if not is_dns_label(part) then return false end
  end
  return true
end

local LABEL_WHY = "must be a DNS-1123 label (at most 63 lowercase alphanumerics or '-', "
  .. "starting and ending alphanumeric)"
local SUBDOMAIN_WHY = "must be a DNS-1123 subdomain (at most 253 bytes of lowercase "
  .. "alphanumerics, '-' and '.', each dot-separated part starting and ending alphanumeric)"
local DNS1035_WHY = "must be a DNS-1035 label (at most 63 lowercase alphanumerics or '-', "
  .. "starting with a letter and ending alphanumeric)"

local function check_namespace(v, allow_system)
  local ok, why = plain(v, 63)
  if not ok then return einval("namespace", why) end
  if not is_dns_label(v) then return einval("namespace", LABEL_WHY) end
  if v:sub(1, 5) == "kube-" and not allow_system then
    return einval("namespace", "kube-* namespaces are refused unless allow_system = true")
  end
  return v
end

local function check_name(field, v, kind)
  local max = KINDS[kind].dns1035 and 63 or 253
  local ok, why = plain(v, max)
  if not ok then return einval(field, why) end
  if KINDS[kind].dns1035 then
    if not (is_dns_label(v) and v:find("^[a-z]")) then return einval(field, DNS1035_WHY) end
  elseif not is_dns_subdomain(v) then
    return einval(field, SUBDOMAIN_WHY)
  end
  return v
end

local function check_kind(v, verb)
  if type(v) ~= "string" or not KINDS[v] then
    return einval("kind", "must be one of " .. table.concat(M.KINDS, ", "))
  end
  if verb and not KINDS[v][verb] then
    local ok = {}
    for _, k in ipairs(M.KINDS) do
      if KINDS[k][verb] then ok[#ok + 1] = k end
    end
    return einval("kind", ("%s cannot be used with %s (one of %s)")
      :format(v, verb, table.concat(ok, ", ")))
  end
  return v
end

--- Validates kind, name and namespace; returns a target { kind, name, namespace } or nil, err.
-- `verb` (scale, rollout) limits the kinds.
local function target(opts, verb, name_field)
  name_field = name_field or "name"
  local kind, err = check_kind(opts.kind, verb)
  if not kind then return nil, err end
  local name
  name, err = check_name(name_field, opts[name_field], kind)
  if not name then return nil, err end
  local ns
  if KINDS[kind].namespaced then
    ns, err = check_namespace(opts.namespace, opts.allow_system)
    if not ns then return nil, err end
  elseif opts.namespace ~= nil then
    return einval("namespace", kind .. " is not namespaced: give no namespace")
  end
  return { kind = kind, name = name, namespace = ns }
end

local function ns_args(argv, t)
  if t.namespace then
    argv[#argv + 1] = "-n"
    argv[#argv + 1] = t.namespace
  end
  return argv
end

-- ---- label selectors ----

-- ([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9], at most 63 bytes (explicit ASCII sets: %w
-- would follow the C locale)
local function is_label_name(s)
  return #s <= 63 and s:find("^[A-Za-z0-9][-A-Za-z0-9_.]*$") ~= nil
    and s:find("[A-Za-z0-9]$") ~= nil
end

-- [prefix/]name, prefix a DNS-1123 subdomain
local function is_label_key(s)
  if #s > 253 + 1 + 63 then return false end
  local prefix, name = s:match("^([^/]*)/([^/]*)$")
  if prefix then return is_dns_subdomain(prefix) and is_label_name(name) end
  return not s:find("/", 1, true) and is_label_name(s)
end

-- empty, or a label name
local function is_label_value(s)
  return s == "" or is_label_name(s)
end

--- Validates a selector { key = "value" } (non-empty, keys and values per Kubernetes' label
-- rules, values only strings). Returns a copy, or nil, err.
local function check_selector(field, sel)
  if type(sel) ~= "table" then return einval(field, "must be a table { key = \"value\" }") end
  local out, n = {}, 0
  for k, v in pairs(sel) do
    if type(k) ~= "string" or k == "" or not is_label_key(k) then
      return einval(field, "a key is not a valid label key ([prefix/]name: name at most 63 "
        .. "alphanumerics, '-', '_', '.', starting and ending alphanumeric)")
    end
    if type(v) ~= "string" or not is_label_value(v) then
      return einval(field, "a value is not a valid label value (a string of at most 63 "
        .. "alphanumerics, '-', '_', '.', starting and ending alphanumeric, or empty)")
    end
    out[k] = v
    n = n + 1
  end
  if n == 0 then return einval(field, "must not be empty") end
  return out
end

-- ---- canonical JSON (sorted keys), for patches ----

local arrays = setmetatable({}, { __mode = "k" })

--- Marks a table as a JSON array, so that an empty one encodes as [] instead of {}. Returns it.
function M.array(t)
  if type(t) ~= "table" then error("bad argument #1 to 'vigil.kube.array' (table expected)", 2) end
  arrays[t] = true
  return t
end

local function encode(v, depth, out)
  local t = type(v)
  if t == "string" then
    if not utf8.len(v) then return nil, "a string is not valid UTF-8" end
    out[#out + 1] = json.encode(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return nil, "a number is not finite"
    end
    local i = int(v)
    out[#out + 1] = i and ("%d"):format(i) or ("%.17g"):format(v)
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif v == json.null then
    out[#out + 1] = "null"
  elseif t == "table" then
    if depth > MAX_DEPTH then return nil, "nested deeper than " .. MAX_DEPTH end
    local n, keys, strings = #v, {}, true
    for k in pairs(v) do
      keys[#keys + 1] = k
      if type(k) ~= "string" then strings = false end
    end
    local ok, err
    if arrays[v] or (n > 0 and #keys == n) then
      if #keys ~= n then return nil, "an array has keys other than 1..n" end
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        ok, err = encode(v[i], depth + 1, out)
        if not ok then return nil, err end
      end
      out[#out + 1] = "]"
    else
      if not strings then return nil, "an object has keys that are not strings" end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        ok, err = encode(k, depth + 1, out)
        if not ok then return nil, err end
        out[#out + 1] = ":"
        ok, err = encode(v[k], depth + 1, out)
        if not ok then return nil, err end
      end
      out[#out + 1] = "}"
    end
  else
    return nil, "cannot encode a " .. t
  end
  return true
end

--- Encodes a value as JSON with object keys sorted, integers exact and floats round-tripping,
-- so the same patch always gives the same argv (idempotency keys, audit). Empty tables are
-- objects unless marked with kube.array. Returns the text, or nil, "EINVAL: json: ...".
function M.encode(value)
  local out = {}
  local ok, err = encode(value, 1, out)
  if not ok then return einval("json", err) end
  return table.concat(out)
end

-- ---- builders ----

--- get_argv{ kind, name, namespace } -> { "get", kind, name, "-n", ns, "-o", "json" }
function M.get_argv(opts)
  need_table(opts, "get_argv", "{ kind, name, namespace }")
  local t, err = target(opts)
  if not t then return nil, err end
  local argv = ns_args({ "get", t.kind, t.name }, t)
  argv[#argv + 1] = "-o"
  argv[#argv + 1] = "json"
  return argv
end

local function check_replicas(field, v)
  local n = int(v)
  if not n or n < 0 or n > MAX_REPLICAS then
    return einval(field, "must be an integer from 0 to " .. MAX_REPLICAS)
  end
  return n
end

--- scale_argv{ kind, name, namespace, replicas [, current] } ->
-- { "scale", "kind/name", "--replicas=N", "-n", ns [, "--current-replicas=C"] }
-- `current` adds kubectl's precondition: the scale fails if someone changed the count since it
-- was read.
function M.scale_argv(opts)
  need_table(opts, "scale_argv", "{ kind, name, namespace, replicas }")
  local t, err = target(opts, "scale")
  if not t then return nil, err end
  local n
  n, err = check_replicas("replicas", opts.replicas)
  if not n then return nil, err end
  local argv = ns_args({ "scale", t.kind .. "/" .. t.name, "--replicas=" .. n }, t)
  if opts.current ~= nil then
    local c
    c, err = check_replicas("current", opts.current)
    if not c then return nil, err end
    argv[#argv + 1] = "--current-replicas=" .. c
  end
  return argv
end

-- a percentage "12.5" -> thousandths of a percent (12500), exactly
local function milli_percent(s)
  local whole, frac = s:match("^(%d+)$"), ""
  if not whole then whole, frac = s:match("^(%d+)%.(%d+)$") end
  if not whole or #whole > 6 or #frac > 3 then return nil end
  return tonumber(whole) * 1000 + (frac == "" and 0 or tonumber((frac .. "00"):sub(1, 3)))
end

--- compute_replicas(current, spec [, min [, max]]) -> the new replica count, or nil, err.
-- spec is absolute (5, "5") or relative: "+2", "-1", "+20%", "-50%" (decimals allowed in
-- percentages, up to 3 places). Percentage increases round up (3 +20% -> 4) and decreases round
-- down (3 -50% -> 1), so a change of a few percent still moves a small deployment. The result
-- is bounded by min (0 by default) and max (none by default) and is never negative.
function M.compute_replicas(current, spec, min, max)
  local err
  current, err = check_replicas("current", current)
  if not current then return nil, err end
  local lo, hi = 0, MAX_REPLICAS
  if min ~= nil then
    lo, err = check_replicas("min", min)
    if not lo then return nil, err end
  end
  if max ~= nil then
    hi, err = check_replicas("max", max)
    if not hi then return nil, err end
  end
  if lo > hi then return einval("min", "is greater than max") end
  local want
  if int(spec) then
    want, err = check_replicas("replicas", spec)
    if not want then return nil, err end
  elseif type(spec) == "string" and #spec <= 16 then
    local sign, num, pct = spec:match("^([+-]?)([%d.]+)(%%?)$")
    if not sign then
      return einval("replicas", "must be a count (5), a change (+2, -1) or a percentage change "
        .. "(+20%, -10%)")
    end
    if pct == "%" then
      local m = sign ~= "" and milli_percent(num)
      if not m then
        return einval("replicas", "a percentage needs a sign and at most 6 digits and 3 "
          .. "decimals (+20%, -12.5%)")
      end
      local delta = current * m
      if sign == "+" then
        want = current + (delta + 99999) // 100000 -- ceil
      else
        want = (current * 100000 - delta) // 100000 -- floor of what is left
      end
    else
      local n = num:find("^%d+$") and #num <= 10 and tonumber(num)
      if not n then return einval("replicas", "must be a whole number") end
      if sign == "+" then want = current + n
      elseif sign == "-" then want = current - n
      else want = n end
    end
  else
    return einval("replicas", "must be an integer or a string such as \"+20%\"")
  end
  if want < lo then want = lo end
  if want > hi then want = hi end
  if want < 0 then want = 0 end
  return math.tointeger(want)
end

--- scale{ kind, name, namespace, replicas, min, max [, current] } -> plan, or nil, err.
-- plan = { kind, name, namespace, replicas = N, current = C|nil, argv = scale argv,
--          get_argv = argv that reads the object }.
-- A relative `replicas` ("+20%") needs `current`, read first by running kube.get_argv and
-- kube.parse_replicas on the output. With `current` the scale argv carries
-- --current-replicas=C, so kubectl refuses to act on a count that changed meanwhile.
-- plan.changed is false when N == C (nothing to do).
function M.scale(opts)
  need_table(opts, "scale", "{ kind, name, namespace, replicas, min, max }")
  local t, err = target(opts, "scale")
  if not t then return nil, err end
  local relative = type(opts.replicas) == "string" and opts.replicas:find("^[+-]") ~= nil
  local n
  if opts.current == nil then
    if relative then
      return einval("current", "a relative replicas change needs the current count (read it "
        .. "with kube.get_argv and kube.parse_replicas)")
    end
    -- bounds still apply to an absolute count; 0 stands in for the unknown current
    n, err = M.compute_replicas(0, opts.replicas, opts.min, opts.max)
  else
    n, err = M.compute_replicas(opts.current, opts.replicas, opts.min, opts.max)
  end
  if not n then return nil, err end
  local argv
  argv, err = M.scale_argv({ kind = t.kind, name = t.name, namespace = t.namespace,
    replicas = n, current = opts.current, allow_system = opts.allow_system })
  if not argv then return nil, err end
  local current = int(opts.current)
  return {
    kind = t.kind, name = t.name, namespace = t.namespace,
    replicas = n, current = current, changed = current == nil or current ~= n,
    argv = argv,
    get_argv = M.get_argv({ kind = t.kind, name = t.name, namespace = t.namespace,
      allow_system = opts.allow_system }),
  }
end

--- restart_argv{ kind, name, namespace } -> { "rollout", "restart", "kind/name", "-n", ns }
-- (deployment, statefulset, daemonset)
function M.restart_argv(opts)
  need_table(opts, "restart_argv", "{ kind, name, namespace }")
  local t, err = target(opts, "rollout")
  if not t then return nil, err end
  return ns_args({ "rollout", "restart", t.kind .. "/" .. t.name }, t)
end

local function seconds(field, v, default)
  if v == nil then return default end
  local s = v
  if type(v) == "string" then
    local ok, d = pcall(core.duration, v)
    if not ok then return einval(field, "must be seconds or a duration such as \"5m\"") end
    s = d
  end
  if type(s) ~= "number" or s ~= s or s <= 0 or s > 86400 then
    return einval(field, "must be more than 0 and at most a day")
  end
  return math.ceil(s)
end

--- rollout_status_argv{ kind, name, namespace, timeout = "5m" | seconds (300 by default),
-- revision } -> { "rollout", "status", "kind/name", "-n", ns, "--timeout=300s"
-- [, "--revision=N"] }. The timeout is never 0 (which would make kubectl wait forever).
function M.rollout_status_argv(opts)
  need_table(opts, "rollout_status_argv", "{ kind, name, namespace, timeout }")
  local t, err = target(opts, "rollout")
  if not t then return nil, err end
  local timeout
  timeout, err = seconds("timeout", opts.timeout, 300)
  if not timeout then return nil, err end
  local argv = ns_args({ "rollout", "status", t.kind .. "/" .. t.name }, t)
  argv[#argv + 1] = ("--timeout=%ds"):format(timeout)
  if opts.revision ~= nil then
    local r = int(opts.revision)
    if not r or r < 1 then return einval("revision", "must be a positive integer") end
    argv[#argv + 1] = "--revision=" .. r
  end
  return argv
end

local function patch_text(patch)
  if type(patch) == "table" then
    local text, err = M.encode(patch)
    if not text then return einval("patch", err:gsub("^EINVAL: json: ", "")) end
    return text
  elseif type(patch) == "string" then
    if #patch > 1024 * 1024 then return einval("patch", "must be at most 1 MiB") end
    if not utf8.len(patch) then return einval("patch", "is not valid UTF-8") end
    if patch:find("[%c]") then
      return einval("patch", "must be JSON on one line without control characters (or a table)")
    end
    local doc = json.decode(patch)
    if type(doc) ~= "table" then return einval("patch", "is not a JSON object or array") end
  else
    return einval("patch", "must be a table or a JSON string")
  end
  return patch
end

--- patch_argv{ kind, name, namespace, patch = table | JSON string, type = "strategic" |
-- "merge" | "json" } -> { "patch", "kind/name", "-n", ns, "--type=T", "-p", <json> }
-- A table is encoded by kube.encode (sorted keys); json.null deletes a key in a merge patch.
-- A string is checked (valid UTF-8 JSON on one line) and passed as it is. Type "json" needs an
-- array of operations; the others an object.
function M.patch_argv(opts)
  need_table(opts, "patch_argv", "{ kind, name, namespace, patch, type }")
  local t, err = target(opts)
  if not t then return nil, err end
  local ptype = opts.type or "strategic"
  if not PATCH_TYPES[ptype] then return einval("type", "must be strategic, merge or json") end
  local text
  text, err = patch_text(opts.patch)
  if not text then return nil, err end
  local first = text:match("^%s*(.)")
  if ptype == "json" and first ~= "[" then
    return einval("patch", "a json patch is an array of operations")
  elseif ptype ~= "json" and first ~= "{" then
    return einval("patch", "a " .. ptype .. " patch is an object")
  end
  if text == "{}" or text == "[]" then return einval("patch", "is empty") end
  local argv = ns_args({ "patch", t.kind .. "/" .. t.name }, t)
  argv[#argv + 1] = "--type=" .. ptype
  argv[#argv + 1] = "-p"
  argv[#argv + 1] = text
  return argv
end

local function same(a, b)
  for k, v in pairs(a) do if b[k] ~= v then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

--- isolate_argv{ service, namespace, selector = { maintenance selector },
-- current_selector = { the Service's selector now } } -> patch argv
-- One merge patch points the Service at `selector` (keys of the current selector that the new
-- one lacks are set to null: a merge patch would otherwise keep them) and stores the current
-- selector, as canonical JSON, in the annotation vigil.dev/saved-selector, so failback needs
-- nothing but the Service itself. Refused when the Service already uses `selector`.
function M.isolate_argv(opts)
  need_table(opts, "isolate_argv", "{ service, namespace, selector, current_selector }")
  local t, err = target({ kind = "service", service = opts.service, namespace = opts.namespace,
    allow_system = opts.allow_system }, nil, "service")
  if not t then return nil, err end
  local sel, cur
  sel, err = check_selector("selector", opts.selector)
  if not sel then return nil, err end
  cur, err = check_selector("current_selector", opts.current_selector)
  if not cur then return nil, err end
  if same(sel, cur) then
    return einval("selector", "the service already uses this selector (already isolated?)")
  end
  local patch_sel = {}
  for k in pairs(cur) do patch_sel[k] = json.null end
  for k, v in pairs(sel) do patch_sel[k] = v end
  local saved = assert(M.encode(cur))
  return M.patch_argv({ kind = "service", name = t.name, namespace = t.namespace,
    allow_system = opts.allow_system, type = "merge", patch = {
      metadata = { annotations = { [M.SAVED_SELECTOR] = saved } },
      spec = { selector = patch_sel },
    } })
end

--- failback_argv{ service, namespace, saved_selector } -> patch argv
-- A JSON patch that replaces the whole selector with `saved_selector` and removes the
-- vigil.dev/saved-selector annotation; kubectl fails (and nothing changes) when the annotation
-- is gone, so a failback cannot run twice or on a Service that was never isolated.
function M.failback_argv(opts)
  need_table(opts, "failback_argv", "{ service, namespace, saved_selector }")
  local t, err = target({ kind = "service", service = opts.service, namespace = opts.namespace,
    allow_system = opts.allow_system }, nil, "service")
  if not t then return nil, err end
  local saved
  saved, err = check_selector("saved_selector", opts.saved_selector)
  if not saved then return nil, err end
  local path = "/metadata/annotations/" .. M.SAVED_SELECTOR:gsub("~", "~0"):gsub("/", "~1")
  return M.patch_argv({ kind = "service", name = t.name, namespace = t.namespace,
    allow_system = opts.allow_system, type = "json", patch = {
      { op = "replace", path = "/spec/selector", value = saved },
      { op = "remove", path = path },
    } })
end

-- ---- readers of kubectl's JSON output ----

local function decode_object(text, what)
  if type(text) ~= "string" then
    error(("bad argument #1 to 'vigil.kube.%s' (string expected, got %s)")
      :format(what, type(text)), 3)
  end
  local doc, err = json.decode(text)
  if not doc then return nil, err end
  if type(doc) ~= "table" then return nil, "EPROTO: kubectl output is not a JSON object" end
  return doc
end

--- parse_replicas(json_text) -> spec.replicas (an integer) of `kubectl get <kind> NAME -o json`
-- output, or nil, "EJSON: ..." / "EPROTO: ..." when it is missing or not a count.
function M.parse_replicas(text)
  local doc, err = decode_object(text, "parse_replicas")
  if not doc then return nil, err end
  local spec = doc.spec
  local n = type(spec) == "table" and int(spec.replicas)
  if not n or n < 0 or n > MAX_REPLICAS then
    return nil, "EPROTO: no integer spec.replicas in the kubectl output"
  end
  return n
end

--- selector(service_json) -> spec.selector of `kubectl get service NAME -o json` output (the
-- table to give isolate_argv as current_selector), or nil, err.
function M.selector(text)
  local doc, err = decode_object(text, "selector")
  if not doc then return nil, err end
  local spec = doc.spec
  local sel = type(spec) == "table" and spec.selector
  if type(sel) ~= "table" then return nil, "EPROTO: the service has no spec.selector" end
  local out
  out, err = check_selector("selector", sel)
  if not out then return nil, "EPROTO: the service's " .. err:gsub("^EINVAL: ", "") end
  return out
end

--- saved_selector(service_json) -> the selector isolate_argv saved in the annotation
-- vigil.dev/saved-selector, or nil, "ENOENT: ..." when the Service is not isolated, or
-- nil, "EPROTO: ..." when the annotation is not a valid selector.
function M.saved_selector(text)
  local doc, err = decode_object(text, "saved_selector")
  if not doc then return nil, err end
  local meta = type(doc.metadata) == "table" and doc.metadata or {}
  local ann = type(meta.annotations) == "table" and meta.annotations or {}
  local raw = ann[M.SAVED_SELECTOR]
  if raw == nil then
    return nil, "ENOENT: the service has no " .. M.SAVED_SELECTOR .. " annotation (not isolated)"
  end
  local sel = type(raw) == "string" and json.decode(raw)
  local out
  if type(sel) == "table" then out = check_selector("saved", sel) end
  if not out then
    return nil, "EPROTO: the " .. M.SAVED_SELECTOR .. " annotation is not a valid selector"
  end
  return out
end

--- command(argv [, kubectl]) -> { kubectl or "kubectl", argv... }: the full command line the
-- engine runs.
function M.command(argv, kubectl)
  if type(argv) ~= "table" then
    error("bad argument #1 to 'vigil.kube.command' (argv table expected)", 2)
  end
  if kubectl ~= nil and (type(kubectl) ~= "string" or kubectl == "") then
    error("bad argument #2 to 'vigil.kube.command' (path string expected)", 2)
  end
  local out = { kubectl or "kubectl" }
  for i = 1, #argv do out[i + 1] = argv[i] end
  return out
end

return M
