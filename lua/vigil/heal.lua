-- vigil.heal: a self-healing run. Ordered steps (each one an action, or any function returning
-- an action's result), stopped at the first that fails, then an optional verification that
-- must hold within a time limit, else the healing failed. Every run is recorded in the store
-- (GET /api/v1/healings/{id}) with its status, steps, error and duration. Documented in
-- docs/actions.md.
local core = require("vigil.actions.core")
local json = require("vigil.json")
local vcore = require("vigil.core")

local M = {}

-- States of an action's result that let the run go on. A step that was only recorded
-- (observe, dry-run) passes: the run is then a rehearsal, and verification is skipped.
local PASSES = { done = true, ["dry-run"] = true, observed = true, skipped = true }
local REHEARSAL = { ["dry-run"] = true, observed = true }

local function step_name(step, i)
  return type(step) == "table" and step.name or ("step " .. i)
end

-- Runs one step; returns the record { name, state, error, duration } and whether it passed.
local function run_step(step, i)
  local fn = type(step) == "table" and step.run or step
  if type(fn) ~= "function" then
    error(("heal: step %d must be a function or { name = ..., run = function }"):format(i), 3)
  end
  local t0 = vcore.now()
  local ok, r, err = pcall(fn)
  local rec = { name = step_name(step, i), duration = vcore.now() - t0 }
  if not ok then
    rec.state, rec.error = "failed", "ESTEP: " .. tostring(r)
  elseif r == nil then
    rec.state, rec.error = "failed", err or "ESTEP: the step returned nothing"
  elseif type(r) == "table" then
    rec.state, rec.error, rec.id = r.state, r.error, r.id
  else
    rec.state = r and "done" or "failed"
  end
  return rec, PASSES[rec.state] == true, REHEARSAL[rec.state] == true
end

-- A verification: a function (-> ok, detail), or { query = PromQL, source = "prom" }, which
-- holds when the query returns at least one series (a PromQL condition such as
-- `up{job="web"} == 1` returns series only while it is true).
local function check(verify)
  if type(verify) == "function" then return verify() end
  local src = verify.client or require("vigil").source(verify.source or "prom")
  local result, err = src:query(verify.query)
  if not result then return false, err end
  return #result > 0, ("%d series"):format(#result)
end

local function verify_within(verify)
  local within = vcore.duration(type(verify) == "table" and verify.within or "5m")
  local every = vcore.duration(type(verify) == "table" and verify.every or "15s")
  local deadline = vcore.now() + within
  local detail
  repeat
    local ok, d = check(verify)
    detail = d
    if ok then return true, d end
    if vcore.now() + every > deadline then break end
    vcore.sleep(every)
  until false
  return false, ("EVERIFY: did not hold within %gs%s"):format(within,
    detail and (": " .. tostring(detail)) or "")
end

--- run{ name, steps = {...}, verify = fn | { query, source, within, every }, alert | subject }
-- -> { id, status = "succeeded" | "failed", steps = {...}, error?, duration, rehearsal }
function M.run(opts)
  if type(opts) ~= "table" or type(opts.name) ~= "string" or type(opts.steps) ~= "table" then
    error("bad argument #1 to 'vigil.heal.run' ({ name = string, steps = {...} } expected)", 2)
  end
  local alert = opts.alert
  local subject = opts.subject or (type(alert) == "table" and alert.fingerprint) or nil
  local incident = type(alert) == "table" and math.tointeger(alert.incident) or nil
  local id = core.heal_begin(opts.name, subject and tostring(subject), incident) or 0
  local t0 = vcore.now()
  local run = { id = id, name = opts.name, steps = {}, status = "succeeded", rehearsal = false }
  for i, step in ipairs(opts.steps) do
    local rec, passed, rehearsal = run_step(step, i)
    run.steps[#run.steps + 1] = rec
    run.rehearsal = run.rehearsal or rehearsal
    if not passed then
      run.status = "failed"
      run.error = ("%s: %s"):format(rec.name, rec.error or rec.state)
      break
    end
  end
  if run.status == "succeeded" and opts.verify ~= nil then
    if run.rehearsal then
      run.verified = "skipped: the steps were only rehearsed (observe or dry-run)"
    else
      local ok, detail = verify_within(opts.verify)
      run.steps[#run.steps + 1] = { name = "verify", state = ok and "done" or "failed",
        error = not ok and detail or nil }
      if not ok then
        run.status, run.error = "failed", detail
      end
    end
  end
  run.duration = vcore.now() - t0
  if id > 0 then
    local ok, err = core.heal_end(id, run.status, json.encode(run.steps), run.error)
    if not ok then vcore.log("warn", "healing record not stored", { error = err }) end
  end
  return run
end

return M
