-- vigil.actions: what a policy calls to change the world. Each function builds the exact
-- command or request (vigil.kube, vigil.notify, vigil.silence build them, purely) and hands it
-- to the engine (vigil.actions.core, in C), which decides what happens to it:
--
--   mode        the least of the executor's, the policy's and the action's own mode:
--               "observe" records the decision, "dry-run" records and returns the exact
--               command (and whether the guard rails would allow it), "enforce" runs it.
--   guard rails kill switch, rate limits, cooldowns, concurrency, blast radius and circuit
--               breakers, enforced in C; a refusal comes back as state "refused" with
--               error "ERATELIMIT: ..." (or ECOOLDOWN, EBUSY, EBLASTRADIUS, EBREAKER,
--               EKILLSWITCH).
--   at most     the action's idempotency key (policy, subject, type, target) is claimed and
--   once        committed before it runs; asking again answers with state "duplicate".
--
-- Every function returns the engine's result table
--   { state, id, key, mode, error?, would?, attempts, duration,
--     code?, signal?, stdout?, stderr?, timed_out?   (a process)
--     status?, headers?, body?                       (an HTTP request) }
-- where state is observed | dry-run | refused | done | failed | duplicate | denied | expired
-- | skipped (a condition said no), or nil, "EINVAL: ..." when the request itself is wrong
-- (a hostile label value, a missing field). Documented in docs/actions.md.
local core = require("vigil.actions.core")
local vigil_core = require("vigil.core")
local json = require("vigil.json")
local kube = require("vigil.kube")

local M = {}

-- Fields every action takes besides its own (copied to the engine as they are).
local COMMON = { "why", "mode", "approve", "approval_timeout", "retries", "timeout",
  "scope", "key" }

-- The identity of what an action is about, for its idempotency key: the incident when there is
-- one (a new incident may act again), else the alert's fingerprint and start.
local function subject_of(opts)
  if opts.subject then return tostring(opts.subject) end
  local a = opts.alert
  if type(a) ~= "table" then return nil end
  if a.incident then return "incident-" .. tostring(a.incident) end
  if a.fingerprint then return tostring(a.fingerprint) .. "@" .. tostring(a.starts_at or "") end
  return nil
end

local function incident_of(opts)
  local a = opts.alert
  local id = opts.incident or (type(a) == "table" and a.incident) or nil
  return math.tointeger(id)
end

-- Runs the action's conditions (predicates checked right before it is handed over); the
-- first that says no (false, or nil + reason) stops it.
local function conditions_hold(opts)
  for i, cond in ipairs(opts.conditions or {}) do
    local ok, why = cond(opts)
    if not ok then
      return false, why or ("condition " .. i .. " does not hold")
    end
  end
  return true
end

local function submit(opts, spec)
  local ok, why = conditions_hold(opts)
  if not ok then
    return { state = "skipped", error = "ECONDITION: " .. tostring(why), attempts = 0 }
  end
  for _, k in ipairs(COMMON) do
    if spec[k] == nil then spec[k] = opts[k] end
  end
  spec.subject = spec.subject or subject_of(opts)
  spec.incident = spec.incident or incident_of(opts)
  return core.execute(spec)
end

local function command_json(argv)
  return json.encode(argv)
end

-- ---- processes ----

--- run{ argv = { "/usr/bin/systemctl", "restart", "nginx" }, target = "nginx", ... }
-- Any allowlisted tool with an argv (never a shell). `type` defaults to "run"; `env`, `stdin`,
-- `timeout`, `max_output` go to the sandboxed runner.
function M.run(opts)
  if type(opts) ~= "table" or type(opts.argv) ~= "table" or #opts.argv == 0 then
    return nil, "EINVAL: argv: a non-empty list of strings is required"
  end
  local target = opts.target or opts.argv[1]
  return submit(opts, {
    type = opts.type or "run", target = target, argv = opts.argv, env = opts.env,
    stdin = opts.stdin, max_output = opts.max_output, command = command_json(opts.argv),
  })
end

-- kubectl with a built argv (which starts at the subcommand).
local function kubectl(opts, type_, target, argv, extra)
  local full = kube.command(argv, opts.kubectl)
  local spec = { type = type_, target = target, argv = full, command = command_json(full),
    scope = opts.scope or opts.namespace }
  for k, v in pairs(extra or {}) do spec[k] = v end
  return submit(opts, spec)
end

local function kube_target(kind, name, namespace)
  return ("%s/%s/%s"):format(namespace or "-", kind, name)
end

-- Specs stand in for the cluster's answers (vigil.test's T.cluster); only a spec VM, where
-- vigil.testing exists, may set this.
local read_fake

--- fake_reads(fn | nil): kube_get(opts) answers fn(opts) instead of running kubectl. Specs only.
function M.fake_reads(fn)
  if not pcall(require, "vigil.testing") then
    error("vigil.actions.fake_reads is for specs (vigil test)", 2)
  end
  read_fake = fn
end

--- Reads an object with `kubectl get -o json` (read-only: no claim, no guard rails, runs in
-- every mode). Returns the JSON text or nil, err.
function M.kube_get(opts)
  if read_fake then return read_fake(opts) end
  local argv, err = kube.get_argv(opts)
  if not argv then return nil, err end
  local full = kube.command(argv, opts.kubectl)
  local r
  r, err = core.execute({ type = "read", target = kube_target(opts.kind, opts.name, opts.namespace),
    argv = full, command = command_json(full), read_only = true, timeout = opts.timeout })
  if not r then return nil, err end
  if r.state ~= "done" then
    return nil, r.error or ("EEXIT: kubectl get: " .. tostring(r.stderr or ""))
  end
  return r.stdout
end

--- scale{ kind = "deployment", name, namespace, replicas = 5 | "+20%" | "-1", min, max }
-- A relative change reads spec.replicas first; bounds always apply.
function M.scale(opts)
  local current = opts.current
  if type(opts.replicas) == "string" and opts.replicas:find("^[+-]") and current == nil then
    local text, err = M.kube_get(opts)
    if not text then return nil, err end
    current, err = kube.parse_replicas(text)
    if not current then return nil, err end
  end
  local plan, err = kube.scale({ kind = opts.kind, name = opts.name, namespace = opts.namespace,
    replicas = opts.replicas, min = opts.min, max = opts.max, current = current,
    allow_system = opts.allow_system })
  if not plan then return nil, err end
  if not plan.changed then
    return { state = "skipped", error = "ENOCHANGE: already at " .. plan.replicas .. " replicas",
      attempts = 0, replicas = plan.replicas }
  end
  local r
  r, err = kubectl(opts, "scale", kube_target(plan.kind, plan.name, plan.namespace), plan.argv)
  if r then r.replicas, r.previous = plan.replicas, plan.current end
  return r, err
end

--- restart{ kind = "deployment", name, namespace }: kubectl rollout restart.
function M.restart(opts)
  local argv, err = kube.restart_argv(opts)
  if not argv then return nil, err end
  return kubectl(opts, "restart", kube_target(opts.kind, opts.name, opts.namespace), argv)
end

--- rollout_status{ kind, name, namespace, timeout }: waits for a rollout (read-only).
function M.rollout_status(opts)
  local argv, err = kube.rollout_status_argv(opts)
  if not argv then return nil, err end
  local full = kube.command(argv, opts.kubectl)
  return core.execute({ type = "read", target = kube_target(opts.kind, opts.name, opts.namespace),
    argv = full, command = command_json(full), read_only = true, timeout = opts.wait })
end

--- patch{ kind, name, namespace, patch = {...} | "json", type = "strategic"|"merge"|"json" }
function M.patch(opts)
  local argv, err = kube.patch_argv(opts)
  if not argv then return nil, err end
  return kubectl(opts, "patch", kube_target(opts.kind, opts.name, opts.namespace), argv)
end

--- isolate{ service, namespace, selector = { maintenance = "true" } }: points the Service at
-- the maintenance selector and keeps the old one in an annotation of the Service itself.
function M.isolate(opts)
  local current = opts.current_selector
  if current == nil then
    local text, err = M.kube_get({ kind = "service", name = opts.service,
      namespace = opts.namespace, kubectl = opts.kubectl })
    if not text then return nil, err end
    current, err = kube.selector(text)
    if not current then return nil, err end
  end
  local argv, err = kube.isolate_argv({ service = opts.service, namespace = opts.namespace,
    selector = opts.selector, current_selector = current, allow_system = opts.allow_system })
  if not argv then return nil, err end
  return kubectl(opts, "isolate", kube_target("service", opts.service, opts.namespace), argv)
end

--- failback{ service, namespace }: restores the selector isolate saved.
function M.failback(opts)
  local saved = opts.saved_selector
  if saved == nil then
    local text, err = M.kube_get({ kind = "service", name = opts.service,
      namespace = opts.namespace, kubectl = opts.kubectl })
    if not text then return nil, err end
    saved, err = kube.saved_selector(text)
    if not saved then return nil, err end
  end
  local argv, err = kube.failback_argv({ service = opts.service, namespace = opts.namespace,
    saved_selector = saved, allow_system = opts.allow_system })
  if not argv then return nil, err end
  return kubectl(opts, "failback", kube_target("service", opts.service, opts.namespace), argv)
end

-- ---- HTTP: notifications and silences ----

local function http_action(opts, type_, target, req, notify)
  local shown = { method = req.method, url = req.redacted_url or "(redacted)" }
  return submit(opts, { type = type_, target = target, notify = notify,
    method = req.method, url = req.url, headers = req.headers, body = req.body,
    command = json.encode(shown) })
end

local function notifier(build, channel)
  return function(opts)
    local notify = require("vigil.notify")
    local req, err = notify[build](opts)
    if not req then return nil, err end
    return http_action(opts, "notify", opts.target or channel, req, true)
  end
end

M.slack = notifier("slack", "slack")
M.pagerduty = notifier("pagerduty", "pagerduty")
M.webhook = notifier("webhook", "webhook")

-- ---- notifiers: targets the config names ----

-- What a named notifier owns and a caller may not set: its credentials, and where it sends
-- (the PagerDuty routing key travels in the body, so another url would receive it).
local NOTIFIER_OWN = { "routing_key", "webhook", "secret", "url" }

-- A name from policy code, safe to put in a message.
local function shown(name)
  return (name:sub(1, 64):gsub("[%c\127-\255']", "?"))
end

-- The Slack body with the notifier's channel and username (an incoming webhook created by a
-- Slack app ignores them; a legacy one honours them). The body is the builder's JSON object:
-- the fields go in front, encoded, so nothing else in it changes.
local function slack_identity(body, channel, username)
  local notify = require("vigil.notify")
  local extra = {}
  for k, v in pairs({ channel = channel, username = username }) do
    if type(v) ~= "string" or v == "" then
      return nil, ("EINVAL: %s: must be a non-empty string"):format(k)
    end
    extra[#extra + 1] = json.encode(k) .. ":" .. json.encode(notify.text(v, 80))
  end
  if #extra == 0 then return body end
  table.sort(extra)
  return "{" .. table.concat(extra, ",") .. "," .. body:sub(2)
end

--- notify{ to = "oncall", summary | text, severity, title, dedup_key, alert, incident, ... }
-- Sends to the notifier `to` of the config's `notifiers`: its kind picks the builder (slack,
-- pagerduty or webhook) and its fields (credentials, url, channel, username, headers) are
-- merged under the caller's options, which are the builder's as usual. The caller may not set
-- routing_key, webhook, secret or url: they are the notifier's (EINVAL). So that one call
-- suits any kind: text and summary stand in for each other, a PagerDuty source defaults to
-- "vigil" and its dedup_key to the incident's (vigil.notify.dedup_key), and a webhook
-- without a payload gets { notifier, text, title, severity, incident, labels }. The action's
-- target is the notifier's name unless `target` is given. An unknown notifier is
-- nil, "ENONOTIFIER: ...".
function M.notify(opts)
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'notify' (table { to = ..., ... } expected, got %s)")
      :format(type(opts)), 2)
  end
  local name = opts.to
  if type(name) ~= "string" or name == "" then
    return nil, "EINVAL: to: is required (the name of a notifier in the config)"
  end
  for _, k in ipairs(NOTIFIER_OWN) do
    if opts[k] ~= nil then
      return nil, ("EINVAL: %s: is the notifier's (notifiers.%s in the config); a caller "
        .. "cannot set it"):format(k, shown(name))
    end
  end
  local n = vigil_core.notifier(name)
  if not n then
    return nil, ("ENONOTIFIER: no notifier '%s' in the config"):format(shown(name))
  end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.to = nil
  for _, k in ipairs({ "url", "routing_key", "webhook", "secret", "channel", "username" }) do
    if o[k] == nil then o[k] = n[k] end
  end
  if n.headers then
    if o.headers ~= nil and type(o.headers) ~= "table" then
      return nil, "EINVAL: headers: must be a table"
    end
    local merged, mine = {}, {}
    for k, v in pairs(o.headers or {}) do
      merged[k] = v
      if type(k) == "string" then mine[k:lower()] = true end
    end
    for k, v in pairs(n.headers) do
      if not mine[k:lower()] then merged[k] = v end
    end
    o.headers = merged
  end
  if o.text == nil then o.text = o.summary end
  if o.summary == nil then o.summary = o.text end
  local incident = incident_of(opts)
  local notify = require("vigil.notify")
  if n.kind == "pagerduty" then
    if o.source == nil then o.source = "vigil" end
    if o.dedup_key == nil and incident then o.dedup_key = notify.dedup_key({ id = incident }) end
  elseif n.kind == "webhook" and o.payload == nil then
    local a = type(opts.alert) == "table" and opts.alert or {}
    o.payload = { notifier = name, text = o.text, title = o.title, severity = o.severity,
      incident = incident, labels = a.labels }
  end
  local req, err = notify[n.kind](o)
  if not req then return nil, err end
  if n.kind == "slack" then
    req.body, err = slack_identity(req.body, o.channel, o.username)
    if not req.body then return nil, err end
  end
  return http_action(o, "notify", opts.target or name, req, true)
end

-- Alertmanager-style matchers ({name, value, isEqual, isRegex}) as label-matcher text.
local function matcher_text(ms)
  local parts = {}
  for _, m in ipairs(ms) do
    if m.isRegex then return nil, "EINVAL: matchers: regex matchers are not used locally" end
    local v = m.value:gsub("\\", "\\\\"):gsub('"', '\\"'):gsub("\n", "\\n")
    parts[#parts + 1] = ('%s%s"%s"'):format(m.name, m.isEqual == false and "!=" or "=", v)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- suppress{ alert = alert, by = { "alertname", "host" } | matchers = {...}, duration = "1h",
-- reason }: vigil stops acting on matching alerts (they are still stored) until it expires.
-- Stored, so a restart keeps it. Returns { state = "done", id } or nil, err.
function M.suppress(opts)
  local silence = require("vigil.silence")
  local req, err = silence.request({ url = "http://local", alert = opts.alert, by = opts.by,
    matchers = opts.matchers, labels = opts.labels, duration = opts.duration or "1h",
    comment = opts.reason or "suppressed by vigil", created_by = "vigil" })
  if not req then return nil, err end
  local text
  text, err = matcher_text(req.matchers)
  if not text then return nil, err end
  local id
  id, err = core.suppress(text, req.ends_at, opts.reason)
  if not id then return nil, err end
  return { state = "done", id = id, matchers = text, ends_at = req.ends_at }
end

--- silence{ url = <alertmanager>, alert = alert | matchers = {...}, duration = "1h",
-- comment, created_by, ["local"] = true }: an Alertmanager silence through its API, and (unless
-- local = false) a local suppression over the same matchers, so vigil stops acting on them too.
function M.silence(opts)
  local silence = require("vigil.silence")
  local req, err = silence.request(opts)
  if not req then return nil, err end
  local r
  r, err = http_action(opts, "silence", opts.target or (opts.url or "alertmanager"), req, false)
  if r and r.state == "done" and opts["local"] ~= false then
    local text = matcher_text(req.matchers)
    if text then
      r.suppression = core.suppress(text, req.ends_at, opts.comment)
    end
  end
  return r, err
end

-- ---- operators (REPL, tests) ----

M.decide = core.decide
M.kill_switch = core.kill_switch
M.reset_breaker = core.reset_breaker
M.stats = core.stats
M.execute = core.execute

--- heal{ name, steps, verify, alert }: see vigil.heal.
function M.heal(opts)
  return require("vigil.heal").run(opts)
end

return M
