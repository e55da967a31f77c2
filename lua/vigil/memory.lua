-- vigil.memory: what vigil remembers about incidents, kept in the store (src/engine/memory.h):
-- timeline notes, a key/value state per policy, the knowledge base (similar incidents, known
-- fixes and their success rates) and escalation timers. Every function yields the calling task
-- until the store has answered (writes are committed first) and returns its result, or nil and
-- "ECODE: message" ("ENOSTORE" where there is no store: a standalone REPL).
local core = require("vigil.memory.core")
local json = require("vigil.json")

local M = {}

local function call(op, args)
  local text, err = core.call(op, json.encode(args))
  if not text then return nil, err end
  return json.decode(text)
end
M.call = call

--- True when there is a store (the daemon, `vigil test`); a standalone REPL has none.
M.available = core.available

--- note(incident, event, { who, comment, detail }) -> id: an entry on the incident's timeline.
function M.note(incident, event, opts)
  opts = opts or {}
  local r, err = call("note", { incident = incident, event = event, who = opts.who or "vigil",
    comment = opts.comment, detail = opts.detail })
  return r and r.id, err
end

--- state(policy): get(key) -> value | nil; set(key, value [, ttl]) -> true (nil value deletes).
function M.state(policy)
  local s = {}
  function s.get(key)
    local r, err = call("state_get", { policy = policy, key = tostring(key) })
    if not r then return nil, err end
    return r.value
  end
  function s.set(key, value, ttl)
    local ttl_ms = ttl and math.floor(require("vigil.core").duration(ttl) * 1000) or nil
    local r, err = call("state_set", { policy = policy, key = tostring(key), value = value,
      ttl_ms = ttl_ms })
    return r and true, err
  end
  return s
end

-- ---- knowledge base ----

local kb = {}
M.kb = kb

--- The searchable text of an alert: its name, label pairs and annotations.
function kb.text_of(alert, extra)
  local parts = { alert.name or (alert.labels and alert.labels.alertname) or "" }
  local names = {}
  for k in pairs(alert.labels or {}) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do parts[#parts + 1] = k .. "=" .. tostring(alert.labels[k]) end
  for _, k in ipairs({ "summary", "description" }) do
    local v = alert.annotations and alert.annotations[k]
    if v then parts[#parts + 1] = tostring(v) end
  end
  for _, v in ipairs(extra or {}) do parts[#parts + 1] = tostring(v) end
  return table.concat(parts, " ")
end

--- similar{ alert = a | text = "...", labels = {...}, exclude = incident, limit = 5 } -> list
-- of { incident, score, class, alertname, fix, outcome, ttr_ms, title }, best first.
function kb.similar(opts)
  local text = opts.text or kb.text_of(opts.alert or {})
  local labels = opts.labels or (opts.alert and opts.alert.labels) or nil
  local r, err = call("kb_similar", { text = text, labels = labels, exclude = opts.exclude,
    limit = opts.limit })
  return r and r.similar, err
end

--- fixes(key [, limit]) -> known fixes for an alert name or class, best success rate first.
function kb.fixes(key, limit)
  local r, err = call("fixes", { key = tostring(key), limit = limit })
  return r and r.fixes, err
end

--- add_fix{ key = "HighCPU", name = "scale-out", plan = { {action = "scale", ...} }, who }
-- -> id: a known fix the pipeline proposes the next time `key` fires.
function kb.add_fix(opts)
  local r, err = call("fix_add", { key = opts.key, name = opts.name, plan = opts.plan,
    who = opts.who or "operator" })
  return r and r.id, err
end

--- fix_outcome(id, ok) -> { uses, successes, failures }
function kb.fix_outcome(id, ok)
  return call("fix_outcome", { id = id, ok = ok and true or false })
end

--- learn{ incident, policy, alertname, class, confidence, labels, text, fix, outcome,
-- resolved } -> true: what the knowledge base keeps about an incident.
function kb.learn(opts)
  local r, err = call("kb_learn", opts)
  return r and true, err
end

-- ---- escalation timers ----

--- escalate{ incident, policy, level, name, due_at (seconds) } -> id, created
function M.escalate(opts)
  local r, err = call("escalate", { incident = opts.incident, policy = opts.policy,
    level = opts.level, name = opts.name, due_at = math.floor(opts.due_at * 1000) })
  if not r then return nil, err end
  return r.id, r.created
end

--- escalations(incident) -> every timer of the incident
function M.escalations(incident)
  local r, err = call("escalations", { incident = incident })
  return r and r.escalations, err
end

--- report(incident) -> the incident report document (GET /api/v1/incidents/{id}/report)
function M.report(incident)
  return call("report", { incident = incident })
end

return M
