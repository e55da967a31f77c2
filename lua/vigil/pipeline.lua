-- vigil.pipeline: policy contract v2. A policy that declares what to fetch, how to classify and
-- what to do (instead of an on_alert function) is run by this file, one task per alert:
--
--   escalate  schedule the policy's escalation timers (first: they must hold even if a later
--             step fails)
--   enrich    fetch the declared data in parallel; each failure is recorded, never fatal
--   analyse   known fixes from the knowledge base, the policy's classification, a severity
--             score, anomaly evidence from the enrichment, similar past incidents
--   plan      the class's actions; `auto` decides whether they may run without approval
--   act       hand each action to the executor (guard rails, approvals, at most once);
--             fail closed: the first action that does not go through stops the plan
--   learn     what happened goes to the knowledge base
--
-- A resolved alert closes the loop: the outcome of the actions taken is learnt (a plan that
-- was carried out and followed by resolution becomes a known fix) and on_resolve runs. Every
-- run leaves one "pipeline" entry on the incident's timeline with each step's timing, result
-- and error. Documented in docs/policies.md.
local vigil = require("vigil")
local memory = require("vigil.memory")

local M = {}

M.HOOKS = { "group_by", "enrich", "classify", "plan", "auto", "escalate", "heal", "guard",
  "on_resolve" }

-- The seed's rule: plans of these classes run without approval at these severities.
M.DEFAULT_AUTO = { classes = { "known_issue", "false_positive" },
  severities = { "info", "low", "warning", "medium" } }

-- A known fix is proposed as the class "known_issue" once it worked at least this often.
M.KNOWN_FIX_RATE = 0.5

local SEVERITY_WEIGHT = { critical = 1.0, page = 1.0, high = 0.8, error = 0.8, major = 0.8,
  warning = 0.5, medium = 0.5, minor = 0.3, low = 0.3, info = 0.2 }

-- Action results that count as carried out, and as only rehearsed (observe, dry-run).
local DONE = { done = true, duplicate = true }
local REHEARSED = { ["dry-run"] = true, observed = true }

local function set_of(list)
  local s = {}
  for _, v in ipairs(list or {}) do s[v] = true end
  return s
end

-- ---- validation, at load time: mistakes are reported as file:line by the loader ----

-- `field` locates the mistake in the file: the loader reports the line of its top-level key.
local function fail(field, msg, ...)
  error({ field = field:match("^[%w_]+"), msg = msg:format(...) }, 0)
end

local function check_duration(field, d)
  local ok = pcall(vigil.duration, d)
  if not ok then fail(field, "%s must be a duration like \"5m\", got %s", field, tostring(d)) end
end

local function check_steps(field, steps)
  if type(steps) == "string" then
    if steps ~= "kb" and steps ~= "heal" then
      fail(field, "%s must be a list of actions, a function, \"kb\" or \"heal\"", field)
    end
    return
  end
  if type(steps) == "function" then return end
  if type(steps) ~= "table" then
    fail(field, "%s must be a list of actions or a function", field)
  end
  for i, step in ipairs(steps) do
    if type(step) == "table" then
      local a = step.action
      if type(a) ~= "string" or type(vigil.actions[a]) ~= "function" or a == "execute"
        or a == "decide" or a == "kill_switch" or a == "stats" or a == "reset_breaker" then
        fail(field, "%s[%d].action must name an action of vigil.actions (scale, restart, "
          .. "notify, suppress, ...), got %s", field, i, tostring(a))
      end
    elseif type(step) ~= "function" then
      fail(field, "%s[%d] must be { action = ... } or a function", field, i)
    end
  end
end

--- Checks the v2 fields of a policy table; raises { field, msg } on the first mistake.
function M.validate(p)
  if p.on_alert ~= nil then
    fail("on_alert", "a policy either defines on_alert or the pipeline hooks (%s), not both",
      "enrich, classify, plan, escalate, ...")
  end
  if p.group_by ~= nil then
    if type(p.group_by) ~= "table" or #p.group_by == 0 then
      fail("group_by", "group_by must be a list of label names")
    end
    for i, l in ipairs(p.group_by) do
      if type(l) ~= "string" then fail("group_by", "group_by[%d] must be a label name", i) end
    end
  end
  if p.enrich ~= nil and type(p.enrich) ~= "function" then
    if type(p.enrich) ~= "table" then fail("enrich", "enrich must be a table or a function") end
    for name, spec in pairs(p.enrich) do
      if type(spec) == "table" then
        if type(spec.query) ~= "string" and type(spec.query) ~= "function" then
          fail("enrich", "enrich.%s.query must be a string or a function", tostring(name))
        end
        if spec.range ~= nil then check_duration("enrich." .. name .. ".range", spec.range) end
      elseif type(spec) ~= "function" then
        fail("enrich", "enrich.%s must be { source, query, ... } or a function", tostring(name))
      end
    end
  end
  if p.classify ~= nil and type(p.classify) ~= "function" then
    if type(p.classify) ~= "table" then
      fail("classify", "classify must be a function or a list of rules")
    end
    for i, rule in ipairs(p.classify) do
      if type(rule) ~= "table" or type(rule.class) ~= "string" then
        fail("classify", "classify[%d] must be { class = \"...\", when = ... }", i)
      end
      if type(rule.when) ~= "function" and type(rule.when) ~= "table" then
        fail("classify", "classify[%d].when must be a function or a table of conditions", i)
      end
    end
  end
  if p.plan ~= nil then
    if type(p.plan) == "table" then
      for class, steps in pairs(p.plan) do check_steps("plan." .. tostring(class), steps) end
    elseif type(p.plan) ~= "function" then
      fail("plan", "plan must be a table of class = actions, or a function")
    end
  end
  if p.auto ~= nil and type(p.auto) ~= "boolean" and type(p.auto) ~= "function"
    and type(p.auto) ~= "table" then
    fail("auto", "auto must be true, false, a function or { classes = {...}, severities = {...} }")
  end
  if p.escalate ~= nil then
    if type(p.escalate) ~= "table" or #p.escalate == 0 then
      fail("escalate", "escalate must be a list of levels { after = \"5m\", notify = ... }")
    end
    for i, level in ipairs(p.escalate) do
      if type(level) ~= "table" then fail("escalate", "escalate[%d] must be a table", i) end
      check_duration(("escalate[%d].after"):format(i), level.after)
      if type(level.notify) ~= "string" and type(level.notify) ~= "function" then
        fail("escalate", "escalate[%d].notify must name a notifier or be a function", i)
      end
    end
  end
  if p.heal ~= nil and type(p.heal) ~= "table" then
    fail("heal", "heal must be a table { steps = {...}, verify = ... }")
  end
  if p.guard ~= nil then
    if type(p.guard) ~= "table" then fail("guard", "guard must be a table") end
    if p.guard.cooldown ~= nil then check_duration("guard.cooldown", p.guard.cooldown) end
    if p.guard.max_actions ~= nil and math.type(p.guard.max_actions) ~= "integer" then
      fail("guard", "guard.max_actions must be an integer")
    end
    if p.guard.per ~= nil then check_duration("guard.per", p.guard.per) end
  end
  if p.on_resolve ~= nil and type(p.on_resolve) ~= "function" then
    fail("on_resolve", "on_resolve must be a function(alert, ctx)")
  end
  if p.classify == nil and p.plan == nil and p.escalate == nil and p.on_resolve == nil then
    fail("name", "the policy does nothing: define plan, escalate or on_resolve")
  end
end

-- ---- helpers ----

--- The variables an action's "{{name}}" fields may use: the alert's labels, plus `deployment`
-- (the label, or the pod's name without its ReplicaSet and pod suffixes) and `namespace`.
function M.vars(alert)
  local v = {}
  for k, val in pairs(alert.labels or {}) do v[k] = val end
  v.alertname = alert.name or v.alertname
  v.namespace = v.namespace or "default"
  if not v.deployment and v.pod then
    v.deployment = v.pod:match("^(.-)%-%x+%-%w+$") or v.pod:match("^(.-)%-%w+$") or v.pod
  end
  return v
end

-- "{{pod}}" in a string becomes the variable's value (through `as`, when given); a missing
-- variable is an error (the action must not run against a half-filled target).
local function expand(s, vars, as)
  local missing
  local out = s:gsub("{{%s*([%w_]+)%s*}}", function(k)
    if vars[k] == nil then missing = missing or k; return "" end
    return as and as(vars[k]) or tostring(vars[k])
  end)
  if missing then return nil, ("EINVAL: '{{%s}}': the alert has no such label"):format(missing) end
  return out
end

local function expand_tree(v, vars)
  if type(v) == "string" then return expand(v, vars) end
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    local e, err = expand_tree(x, vars)
    if err then return nil, err end
    out[k] = e
  end
  return out
end

-- PromQL and LogQL string literals: the label value inside double quotes, escaped.
local function quote_value(s)
  return (tostring(s):gsub('[\\"]', "\\%0"):gsub("\n", "\\n"))
end

local function query_text(q, alert, vars)
  if type(q) == "function" then return q(alert) end
  return expand(q, vars, quote_value)
end

--- The identity of the problem a run is about: the incident and the policy's group_by labels
-- when it has them (one plan per group while the incident lasts), else the incident, else the
-- alert.
function M.subject(policy, alert)
  if policy.group_by then
    local parts = { "group", policy.name }
    for _, l in ipairs(policy.group_by) do parts[#parts + 1] = tostring(alert.labels[l] or "") end
    local group = table.concat(parts, ":")
    return alert.incident and ("incident-%d:%s"):format(alert.incident, group) or group
  end
  if alert.incident then return "incident-" .. alert.incident end
  return tostring(alert.fingerprint or alert.name) .. "@" .. tostring(alert.starts_at or "")
end

-- One point of a series as a number: vigil.prom gives plain numbers, other clients [t, v]
-- pairs or { value = v }.
local function point_value(p)
  return tonumber(type(p) == "table" and (p.value or p[2]) or p)
end

-- The last value of a query result (a vector's first sample, a matrix's last point), or nil.
local function last_value(r)
  if type(r) ~= "table" then return tonumber(r) end
  local s = r[1]
  if type(s) ~= "table" then return nil end
  if s.value ~= nil then return tonumber(s.value) end
  if type(s.values) == "table" and #s.values > 0 then
    return point_value(s.values[#s.values])
  end
  return nil
end
M.last_value = last_value

-- Runs independent store calls at once: writes sent together share one commit of the store
-- (its group commit) instead of one synced commit each, one after the other; reads overlap.
-- One call runs directly. Returns results, errors as vigil.all does, except that a function
-- that raised raises again here, as it would have when called directly.
local function together(fns)
  if #fns == 1 then
    local v, err = fns[1]()
    return { v }, (v == nil and err ~= nil) and { err } or nil
  end
  local results, errors = vigil.all(fns)
  for i = 1, #fns do
    local e = errors and errors[i]
    if type(e) == "string" and e:sub(1, 6) == "ETASK:" then error(e, 0) end
  end
  return results, errors
end

-- ---- steps ----

local function source_of(ctx, name)
  if ctx.sources then
    local ok, src = pcall(function() return ctx.sources[name] end)
    if ok and src then return src end
  end
  return vigil.source(name)
end

local function enrich_one(name, spec, alert, ctx, vars)
  if type(spec) == "function" then return spec(alert, ctx) end
  local src, err = source_of(ctx, spec.source or "prom")
  if not src then return nil, err end
  local q
  q, err = query_text(spec.query, alert, vars)
  if not q then return nil, err end
  if spec.range and src.query_range then
    return src:query_range(q, { start = spec.range, step = spec.step or "30s",
      limit = spec.limit })
  end
  if src.query then return src:query(q, spec.limit and { limit = spec.limit } or nil) end
  return nil, ("EINVAL: source '%s' cannot run enrich.%s"):format(spec.source or "prom", name)
end

local function enrich(policy, alert, ctx)
  local e = policy.enrich
  if e == nil then return {} end
  if type(e) == "function" then
    local data, err = e(alert, ctx)
    if err then ctx.errors.enrich = err end
    return data or {}
  end
  local names, fns, vars = {}, {}, M.vars(alert)
  for name, spec in pairs(e) do
    names[#names + 1] = name
    fns[#fns + 1] = function()
      local v, err = enrich_one(name, spec, alert, ctx, vars)
      if v == nil then return nil, err or "ENODATA: nothing returned" end
      return v
    end
  end
  local results, errors = vigil.all(fns, { timeout = policy.enrich_timeout or "10s" })
  local data = {}
  for i, name in ipairs(names) do
    data[name] = results[i]
    if errors and errors[i] then ctx.errors[name] = errors[i] end
  end
  return data
end

-- A table of conditions: severity, labels (exact values), above/below (thresholds on
-- enrichment values), shorter_than (the alert fired for less than this).
local function conditions_hold(when, alert, ctx)
  if type(when) == "function" then return when(alert, ctx) end
  if when.severity and when.severity ~= alert.severity then return false end
  for k, v in pairs(when.labels or {}) do
    if alert.labels[k] ~= v then return false end
  end
  for k, limit in pairs(when.above or {}) do
    local v = last_value(ctx.data[k])
    if v == nil or v <= limit then return false end
  end
  for k, limit in pairs(when.below or {}) do
    local v = last_value(ctx.data[k])
    if v == nil or v >= limit then return false end
  end
  if when.shorter_than then
    local ends = alert.ends_at and alert.ends_at > 0 and alert.ends_at or vigil.now()
    if not alert.starts_at or ends - alert.starts_at >= vigil.duration(when.shorter_than) then
      return false
    end
  end
  return true
end

local function classify(policy, alert, ctx)
  local c = policy.classify
  if c == nil then return nil end
  if type(c) == "function" then
    local class, confidence, evidence = c(alert, ctx)
    if type(class) == "table" then
      return class.class, class.confidence, class.evidence
    end
    return class, confidence, evidence
  end
  for _, rule in ipairs(c) do
    if conditions_hold(rule.when, alert, ctx) then
      return rule.class, rule.confidence or 1.0, rule.evidence or { rule = rule.name or rule.class }
    end
  end
  return nil
end

-- Anomaly evidence: for each enrichment that is a series with some history, the robust
-- detector of vigil.detect (median/MAD of up to the last 64 points, in C) run over it. The
-- evidence is about the last point: its score in [0, 1] (0.5 is 3 robust sigma), z (signed:
-- above or below the median), the median it was compared with, and `anomalous` (the detector's
-- flag); `flagged` counts the abnormal points of the whole series. Gaps (NaN, non-numbers) are
-- skipped; 7 points of history are enough (warmup), so 5 minutes at a 15 s step give evidence.
M.ANOMALY_OPTS = { kind = "robust", window = 64, warmup = 7 }

local function anomalies(data)
  local out = {}
  for name, r in pairs(data) do
    local s = type(r) == "table" and r[1]
    local values = type(s) == "table" and s.values
    if type(values) == "table" then
      local xs, last_i, finite = {}, nil, 0
      for i, p in ipairs(values) do
        local x = point_value(p)
        if x ~= nil and x == x and math.abs(x) ~= math.huge then
          xs[i], last_i, finite = x, i, finite + 1
        else
          xs[i] = 0 / 0 -- a gap: the detector skips it
        end
      end
      if last_i ~= nil and finite > M.ANOMALY_OPTS.warmup then
        for i = #xs, last_i + 1, -1 do xs[i] = nil end -- trailing gaps say nothing
        local scores, flags = require("vigil.detect").scan(xs, M.ANOMALY_OPTS)
        -- the median the last point was compared with: of the detector's window before it
        local hist = {}
        for i = last_i - 1, 1, -1 do
          if xs[i] == xs[i] then hist[#hist + 1] = xs[i] end
          if #hist == M.ANOMALY_OPTS.window then break end
        end
        table.sort(hist)
        local n, last, score = #hist, xs[last_i], scores[last_i]
        local med = n % 2 == 1 and hist[(n + 1) // 2] or (hist[n // 2] + hist[n // 2 + 1]) / 2
        -- score = z^2 / (z^2 + 9), so z = 3 sqrt(score / (1 - score))
        local z = score < 1 and 3 * math.sqrt(score / (1 - score)) or math.huge
        local flagged = 0
        for _, f in ipairs(flags) do
          if f then flagged = flagged + 1 end
        end
        out[name] = { last = last, median = med, z = last < med and -z or z, score = score,
          anomalous = flags[last_i], flagged = flagged }
      end
    end
  end
  return out
end
M.anomalies = anomalies

-- The metrics around the incident, for the timeline and the report: per enrichment that is a
-- series, its first, last, lowest and highest values.
local function metrics_of(data)
  local out = {}
  for name, r in pairs(data) do
    local s = type(r) == "table" and r[1]
    local values = type(s) == "table" and (s.values or (s.value and { s.value }))
    if type(values) == "table" and #values > 0 then
      local lo, hi = math.huge, -math.huge
      for _, v in ipairs(values) do
        v = point_value(v)
        if v then lo, hi = math.min(lo, v), math.max(hi, v) end
      end
      if lo <= hi then
        out[name] = { first = tonumber(values[1]), last = last_value(r), min = lo, max = hi,
          points = #values }
      end
    end
  end
  return out
end

local function analyse(policy, alert, ctx)
  local a = { severity = alert.severity }
  if ctx.kb_ok then
    local r = together({
      function() return memory.kb.fixes(alert.name or "", 3) end,
      function()
        return memory.kb.similar({ alert = alert, exclude = alert.incident, limit = 3 })
      end,
    })
    local fixes = r[1]
    local best = fixes and fixes[1]
    if best and best.success_rate >= M.KNOWN_FIX_RATE and policy.known_issues ~= false then
      a.known_fix = best
    end
    a.similar = r[2] or {}
  end
  -- before classify, which may use it (ctx.anomalies)
  a.anomalies = anomalies(ctx.data)
  ctx.anomalies = a.anomalies
  local class, confidence, evidence = classify(policy, alert, ctx)
  if a.known_fix then
    -- the seed's order: a fix that worked before comes first; the policy's own class is kept
    a.policy_class = class
    class, confidence = "known_issue", a.known_fix.success_rate
    evidence = { fix = a.known_fix.name, uses = a.known_fix.uses,
      successes = a.known_fix.successes, policy_class = a.policy_class }
  end
  a.class = class or "unknown"
  a.confidence = tonumber(confidence) or (class and 1.0 or 0)
  a.evidence = evidence
  local weight = SEVERITY_WEIGHT[tostring(alert.severity)] or 0.5
  a.score = math.floor(weight * (0.5 + 0.5 * a.confidence) * 100 + 0.5) / 100
  return a
end

local function is_auto(policy, class, alert, ctx)
  local auto = policy.auto
  if auto == nil then auto = M.DEFAULT_AUTO end
  if type(auto) == "boolean" then return auto end
  if type(auto) == "function" then return auto(class, alert, ctx) and true or false end
  local classes, sevs = set_of(auto.classes), set_of(auto.severities)
  return (auto.classes == nil or classes[class] == true)
    and (auto.severities == nil or sevs[tostring(alert.severity)] == true)
end

-- The steps for a class: the policy's plan (table entry or function), the known fix's plan
-- for known_issue when the policy has none ("kb"), or the policy's healing ("heal").
local function plan_for(policy, a, alert, ctx)
  local p = policy.plan
  local steps
  if type(p) == "function" then
    steps = p(a.class, alert, ctx)
  elseif type(p) == "table" then
    steps = p[a.class]
  end
  if (steps == nil and a.class == "known_issue") or steps == "kb" then
    if not a.known_fix then return nil, "kb" end
    return a.known_fix.plan, "kb:" .. a.known_fix.name
  end
  if steps == "heal" then return "heal", "heal" end
  return steps, a.class
end

-- The policy's own guard: a cooldown per subject and a cap on actions per window, kept in the
-- store so a restart does not forget them. Tightens the engine's rails, never loosens them.
local function policy_guard(policy, ctx, nsteps)
  local g = policy.guard
  if not g or not ctx.state_ok then return true end
  local now = vigil.now()
  if g.cooldown then
    local last = ctx.state.get("acted:" .. ctx.subject)
    if last and now - last < vigil.duration(g.cooldown) then
      return false, ("ECOOLDOWN: the policy acted on %s %ds ago (guard.cooldown = %s)")
        :format(ctx.subject, math.floor(now - last), tostring(g.cooldown))
    end
  end
  if g.max_actions then
    local per = vigil.duration(g.per or "1h")
    local w = ctx.state.get("window") or { start = now, n = 0 }
    if now - w.start >= per then w = { start = now, n = 0 } end
    if w.n + nsteps > g.max_actions then
      return false, ("ERATELIMIT: the policy took %d actions in the last %s (guard.max_actions"
        .. " = %d)"):format(w.n, tostring(g.per or "1h"), g.max_actions)
    end
    w.n = w.n + nsteps
    ctx.state.set("window", w, per)
  end
  return true
end

local function run_steps(steps, plan_name, a, auto, alert, ctx)
  local records, vars = {}, M.vars(alert)
  for i, step in ipairs(steps) do
    local rec = { step = i }
    local r, err
    if type(step) == "function" then
      local ok, res, e = pcall(step, alert, ctx)
      if ok then r, err = res, e else r, err = nil, "ESTEP: " .. tostring(res) end
      rec.action = "function"
    else
      rec.action = step.action
      local opts
      opts, err = expand_tree(step, vars)
      if opts then
        opts.action, opts.optional = nil, nil
        opts.alert = alert
        opts.subject = opts.subject or ctx.subject
        opts.why = opts.why or ("%s (%s, confidence %.2f)"):format(plan_name, a.class,
          a.confidence)
        if not auto and opts.approve == nil then opts.approve = true end
        r, err = vigil.actions[step.action](opts)
      end
    end
    if type(r) == "table" then
      rec.state, rec.id, rec.error = r.state, r.id, r.error
    else
      rec.state, rec.error = r and "done" or "failed", err
    end
    rec.optional = type(step) == "table" and step.optional or nil
    records[#records + 1] = rec
    local through = DONE[rec.state] or REHEARSED[rec.state] or rec.state == "skipped"
      or rec.state == "awaiting_approval"
    if not through and not rec.optional then
      rec.stopped = true -- fail closed: a step that did not go through stops the plan
      break
    end
  end
  return records
end

local function act(policy, a, alert, ctx)
  local steps, plan_name = plan_for(policy, a, alert, ctx)
  if steps == nil then return { plan = plan_name or "none", actions = {} } end
  local auto = is_auto(policy, a.class, alert, ctx)
  local out = { plan = plan_name, auto = auto, actions = {} }
  if steps == "heal" then
    local spec = {}
    for k, v in pairs(policy.heal) do spec[k] = v end
    spec.name = spec.name or policy.name
    spec.alert, spec.subject = alert, ctx.subject
    local r = vigil.heal.run(spec)
    out.heal = r and { id = r.id, status = r.status, error = r.error }
    out.actions = r and r.steps or {}
    return out
  end
  local ok, why = policy_guard(policy, ctx, #steps)
  if not ok then
    out.refused = why
    return out
  end
  out.actions = run_steps(steps, plan_name, a, auto, alert, ctx)
  out.steps = steps
  out.acted_at = vigil.now() -- the cooldown's mark: written with the learn step's writes
  return out
end

local function schedule_escalations(policy, alert, ctx)
  if not policy.escalate or not alert.incident then return nil end
  local base = alert.starts_at and alert.starts_at > 0 and alert.starts_at or vigil.now()
  local timers = {}
  for i, level in ipairs(policy.escalate) do
    local applies = true
    if level.severity then
      local sevs = type(level.severity) == "table" and set_of(level.severity)
        or { [level.severity] = true }
      applies = sevs[tostring(alert.severity)] == true
    end
    if applies and type(level.when) == "function" then applies = level.when(alert, ctx) end
    if applies then
      timers[#timers + 1] = function()
        local id, created = memory.escalate({ incident = alert.incident, policy = policy.name,
          level = i, name = level.name or ("level " .. i),
          due_at = base + vigil.duration(level.after) })
        if not id then return nil, created end
        return { level = i, id = id, created = created }
      end
    end
  end
  if #timers == 0 then return {} end
  local scheduled, errors = together(timers)
  for i = 1, #timers do
    if errors and errors[i] then error(errors[i], 0) end
  end
  return scheduled
end

-- ---- the run ----

local function step(rec, name, fn, ...)
  local t0 = vigil.now()
  local ok, res, err = pcall(fn, ...)
  local s = { step = name, ms = math.floor((vigil.now() - t0) * 1000 + 0.5) }
  if not ok then
    s.error = tostring(res)
    res = nil
  elseif err then
    s.error = tostring(err)
  end
  rec[#rec + 1] = s
  return res, s
end

local function run_ctx(policy, alert, base)
  local ctx = setmetatable({ alert = alert, data = {}, errors = {},
    subject = M.subject(policy, alert), incident = alert.incident }, { __index = base })
  ctx.kb_ok = alert.incident ~= nil and memory.available()
  ctx.state_ok = ctx.kb_ok
  ctx.state = base.state or memory.state(policy.name)
  ctx.kb = memory.kb
  return ctx
end

local function record(policy, alert, ctx, event, steps, extra)
  local detail = extra or {}
  detail.steps = steps
  if alert.incident and ctx.kb_ok then
    memory.note(alert.incident, event, { who = "policy:" .. policy.name, detail = detail,
      comment = detail.summary })
  end
  return detail
end

local function on_firing(policy, alert, ctx)
  local steps = {}
  local escalations = step(steps, "escalate", schedule_escalations, policy, alert, ctx)
  ctx.data = step(steps, "enrich", enrich, policy, alert, ctx) or {}
  if next(ctx.errors) then steps[#steps].errors = ctx.errors end
  local a = step(steps, "analyse", analyse, policy, alert, ctx)
  if a == nil then
    -- the policy's classification failed: nothing is done (fail closed), escalation stands
    return record(policy, alert, ctx, "pipeline", steps, { summary = "classification failed: "
      .. "no action", escalations = escalations })
  end
  ctx.analysis = a
  local acted = step(steps, "act", act, policy, a, alert, ctx) or { actions = {} }
  local last = acted.actions[#acted.actions]
  if policy.escalate and alert.incident and (acted.refused or (last and last.stopped)) then
    -- on doubt, no action: the first escalation level is brought forward to now (G5)
    step(steps, "escalate_now", memory.escalate, { incident = alert.incident,
      policy = policy.name, level = 1, name = policy.escalate[1].name or "level 1",
      due_at = vigil.now() })
  end
  if ctx.kb_ok then
    -- the knowledge base keeps one verdict per incident: a policy that did not classify the
    -- alert (escalation only, or a flapping check that saw no flapping) leaves the verdict of
    -- the policy that did, which may have run first
    local own = a.class ~= "unknown"
    local writes = { function()
      return memory.kb.learn({ incident = alert.incident,
        policy = own and policy.name or nil, alertname = alert.name,
        class = own and a.class or nil, confidence = own and a.confidence or nil,
        labels = alert.labels, text = memory.kb.text_of(alert), fix = own and acted.plan or nil })
    end }
    if acted.acted_at then -- the policy's guard.cooldown reads it
      writes[#writes + 1] = function()
        return ctx.state.set("acted:" .. ctx.subject, acted.acted_at, "1d")
      end
    end
    if acted.steps and #acted.actions > 0 then
      -- remembered until the alert resolves: then the plan's outcome is learnt
      writes[#writes + 1] = function()
        return ctx.state.set("plan:" .. ctx.subject, { plan = acted.plan, class = a.class,
          steps = type(acted.steps) == "table" and acted.steps or nil,
          fix_id = a.known_fix and acted.plan:sub(1, 3) == "kb:" and a.known_fix.id or nil,
          actions = acted.actions }, "7d")
      end
    end
    step(steps, "learn", function()
      local r, errors = together(writes)
      local err
      for i = 1, #writes do err = err or (errors and errors[i]) end
      return r[1], err
    end)
  end
  local outcomes = {}
  for _, r in ipairs(acted.actions) do
    outcomes[#outcomes + 1] = ("%s %s%s"):format(r.action, r.state, r.optional and " (optional)"
      or "")
  end
  local summary = ("%s (%.2f): %s"):format(a.class, a.confidence, acted.refused
    or (#outcomes > 0 and (acted.plan .. ": " .. table.concat(outcomes, ", ")))
    or "no action")
  return record(policy, alert, ctx, "pipeline", steps, { summary = summary, class = a.class,
    confidence = a.confidence, score = a.score, evidence = a.evidence, anomalies = a.anomalies,
    metrics = metrics_of(ctx.data),
    similar = a.similar, known_fix = a.known_fix and a.known_fix.name, plan = acted.plan,
    auto = acted.auto, actions = acted.actions, refused = acted.refused,
    escalations = escalations })
end

-- Plans that only contain table steps can be learnt as a known fix (functions cannot be
-- stored); a plan from the knowledge base is already one.
local function learnable(steps)
  if type(steps) ~= "table" then return false end
  for _, s in ipairs(steps) do
    if type(s) ~= "table" then return false end
  end
  return #steps > 0
end

local function on_resolved(policy, alert, ctx)
  local steps, out = {}, {}
  if ctx.kb_ok then
    local pending = step(steps, "outcome", ctx.state.get, "plan:" .. ctx.subject)
    if type(pending) == "table" then
      local carried_out, rehearsed = true, false
      for _, r in ipairs(pending.actions or {}) do
        if not r.optional then
          carried_out = carried_out and DONE[r.state] == true
          rehearsed = rehearsed or REHEARSED[r.state] == true
        end
      end
      out.plan, out.carried_out = pending.plan, carried_out
      if carried_out and pending.class == "false_positive" then
        -- noise was suppressed, nothing was healed: the plan is no fix for the alert (known
        -- fixes are keyed by alert name, so every policy would apply it)
        out.summary = ("resolved after %s: noise, not learnt as a fix"):format(pending.plan)
      elseif carried_out then
        out.summary = ("healing verified: %s resolved after %s"):format(alert.name, pending.plan)
        if pending.fix_id then
          step(steps, "fix_outcome", memory.kb.fix_outcome, pending.fix_id, true)
        elseif learnable(pending.steps) then
          step(steps, "learn_fix", memory.kb.add_fix, { key = alert.name,
            name = pending.class, plan = pending.steps, who = "policy:" .. policy.name })
          local fixes = memory.kb.fixes(alert.name, 10) or {}
          for _, f in ipairs(fixes) do
            if f.name == pending.class then memory.kb.fix_outcome(f.id, true) end
          end
        end
      else
        out.summary = rehearsed and "resolved; the plan was only rehearsed (not learnt)"
          or "resolved, but the plan did not complete (not learnt)"
      end
      step(steps, "learn", memory.kb.learn, { incident = alert.incident, resolved = true,
        outcome = carried_out and "success" or nil, text = memory.kb.text_of(alert) })
      ctx.state.set("plan:" .. ctx.subject, nil)
    end
  end
  if policy.on_resolve then step(steps, "on_resolve", policy.on_resolve, alert, ctx) end
  out.summary = out.summary or "resolved"
  return record(policy, alert, ctx, "pipeline resolved", steps, out)
end

--- Runs the pipeline of `policy` for one alert. Returns the record written to the timeline.
function M.run(policy, alert, ctx)
  local c = run_ctx(policy, alert, ctx or {})
  if alert.status == "resolved" then return on_resolved(policy, alert, c) end
  return on_firing(policy, alert, c)
end

--- The on_alert function the loader installs for a v2 policy table.
function M.handler(policy)
  return function(alert, ctx) return M.run(policy, alert, ctx) end
end

-- ---- escalation: the engine calls this when a timer is due ----

local function incident_summary(rep)
  local inc = rep.incident or {}
  return ("[%s] %s"):format(tostring(inc.severity or "unknown"), tostring(inc.title or
    ("incident " .. tostring(inc.id))))
end

--- Fires escalation timer `row` ({ id, incident, policy, level, name, late_ms }) of `policy`:
-- sends the level's notification (at most once: the executor's key is the timer's) and
-- returns state ("fired" | "failed"), action id, note.
function M.fire(policy, row, ctx)
  local level = policy.escalate and policy.escalate[row.level]
  if not level then
    return "failed", nil, ("the policy has no escalation level %d any more"):format(row.level)
  end
  local rep, err = memory.report(row.incident)
  if not rep then return "failed", nil, err end
  local inc = rep.incident or {}
  local key = ("escalation-%d"):format(row.id)
  local r
  if type(level.notify) == "function" then
    local ok, res, e = pcall(level.notify, rep, ctx, key)
    if ok then r, err = res, e else r, err = nil, tostring(res) end
  else
    r, err = vigil.actions.notify({ to = level.notify, key = key, incident = row.incident,
      subject = "escalation-" .. row.id,
      summary = incident_summary(rep), severity = inc.severity, dedup_key = ("vigil-incident-%d")
      :format(row.incident), why = ("escalation %s: %s unacknowledged"):format(row.name or
      row.level, inc.title or "incident"), text = incident_summary(rep),
      details = { incident = row.incident, level = row.level, late_ms = row.late_ms } })
  end
  local state = type(r) == "table" and r.state or nil
  local ok = state == "done" or state == "duplicate" or state == "dry-run" or state == "observed"
  local note = ("%s -> %s%s"):format(type(level.notify) == "string" and level.notify or "notify",
    tostring(state or "failed"), (err or (type(r) == "table" and r.error)) and (": "
    .. tostring(err or r.error)) or "")
  if row.late_ms and row.late_ms >= 2000 then -- the engine looks every second
    note = note .. (" (late by %.0f s: vigil was not running when it was due)"):format(
      row.late_ms / 1000)
  end
  return ok and "fired" or "failed", type(r) == "table" and r.id or nil, note
end

--- The engine's entry (src/core/escalator.c): `row` as JSON text.
function M.fire_due(policy, row_json, ctx)
  return M.fire(policy, require("vigil.json").decode(row_json), ctx)
end

return M
