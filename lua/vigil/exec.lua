-- vigil.exec: run an allowlisted program, as a policy action. `vigil.exec.run(argv, opts)` is
-- vigil.actions.run with the result shaped like a process's: every run goes through the same
-- engine (mode, kill switch, guard rails, the at-most-once claim, the audit log) and the same
-- sandbox (docs/actions.md). argv only: there is never a shell in between.
local actions = require("vigil.actions")

local M = {}

--- run(argv, opts) -> { code, signal?, stdout, stderr, timed_out, duration, state, id }
-- or nil, "ENAME: detail". opts: timeout, env, stdin, max_output, why, target, type, mode,
-- key, alert/subject. In observe and dry-run modes nothing runs: the result has state
-- "observed" or "dry-run" and no code. A refusal (guard rails, kill switch, allowlist) is
-- nil, "ERATELIMIT: ..." and so on.
function M.run(argv, opts)
  if type(argv) ~= "table" then
    error("bad argument #1 to 'vigil.exec.run' (argv table expected)", 2)
  end
  local spec = {}
  for k, v in pairs(opts or {}) do spec[k] = v end
  spec.argv = argv
  local r, err = actions.run(spec)
  if not r then return nil, err end
  if r.state == "refused" or r.state == "duplicate" or r.state == "denied"
      or r.state == "expired" or r.state == "skipped" then
    return nil, r.error
  end
  if r.state == "failed" and r.code == nil then
    return nil, r.error -- nothing ran (spawn failed, sandbox refused)
  end
  return r
end

return M
