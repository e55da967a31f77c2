-- vigil: the module policies, specs and the REPL use. The C half (vigil.core) provides time,
-- tasks and periodic jobs; this file adds what reads better in Lua. Documented in
-- docs/lua-api.md; every function there has an example that a spec runs.
local core = require("vigil.core")
local json = require("vigil.json")
local inspect = require("vigil.inspect")

local M = {
  version = core.version,
  sleep = core.sleep,
  now = core.now,
  duration = core.duration,
  spawn = core.spawn,
  wait = core.wait,
  every = core.every,
  json = json,
  inspect = inspect.inspect,
}

-- Members loaded on first use: every policy VM loads this module, most use few of these, and
-- compiling them all made each VM ten times slower to create (bench/core).
local LAZY = { http = "vigil.http", logs = "vigil.logs", detect = "vigil.detect",
  actions = "vigil.actions", exec = "vigil.exec", kube = "vigil.kube", notify = "vigil.notify",
  silence = "vigil.silence", heal = "vigil.heal", risk = "vigil.risk" }
local CLIENTS = { prom = "vigil.prom", loki = "vigil.loki", jaeger = "vigil.jaeger",
  datadog = "vigil.datadog", alertmanager = "vigil.alertmanager" }
setmetatable(M, {
  __index = function(t, k)
    local v
    if LAZY[k] then
      v = require(LAZY[k])
    elseif CLIENTS[k] then
      v = require(CLIENTS[k]).new
    else
      return nil
    end
    rawset(t, k, v)
    return v
  end,
})

--- Runs each function of `fns` as its own task, all at once, and waits for them.
-- Returns `results, errors`: results[i] is the first value fns[i] returned (nil if it failed);
-- errors is nil when every function succeeded, else errors[i] is "ETASK: ...", the message a
-- function returned as `nil, "ENAME: ..."`, or "ETIMEDOUT: ..." when opts.timeout passed
-- first (unfinished tasks are then cancelled).
function M.all(fns, opts)
  if type(fns) ~= "table" then
    error("bad argument #1 to 'all' (table of functions expected)", 2)
  end
  local deadline = opts and opts.timeout and core.now() + core.duration(opts.timeout)
  local tasks = {}
  for i, fn in ipairs(fns) do
    if type(fn) ~= "function" then
      local msg = "bad argument #1 to 'all' (element %d is a %s, not a function)"
      error(msg:format(i, type(fn)), 2)
    end
    tasks[i] = core.spawn(fn)
  end
  local results, errors = {}, nil
  for i, t in ipairs(tasks) do
    local left = deadline and math.max(0, deadline - core.now()) or nil
    local value, err = core.wait(t, left)
    if value == nil and err ~= nil then
      if err:sub(1, 10) == "ETIMEDOUT:" then
        t:cancel("vigil.all timed out")
        err = ("ETIMEDOUT: function %d did not finish within %s"):format(i, tostring(opts.timeout))
      end
      errors = errors or {}
      errors[i] = err
    end
    results[i] = value
  end
  return results, errors
end

--- A client of kind "http": requests relative to the source's URL, under its policy.
local function http_source(info)
  local http = require("vigil.http")
  local src = { url = info.url:gsub("/+$", ""), name = info.name, timeout = info.timeout }
  function src.request(opts)
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    o.url = src.url .. (o.path or "")
    o.path = nil
    o.source = src.name
    o.timeout = o.timeout or src.timeout
    return http.request(o)
  end
  function src.get(path, opts)
    local o = { path = path, method = "GET" }
    for k, v in pairs(opts or {}) do o[k] = v end
    return src.request(o)
  end
  function src.post(path, opts)
    local o = { path = path, method = "POST" }
    for k, v in pairs(opts or {}) do o[k] = v end
    return src.request(o)
  end
  return src
end

--- The data source the config declares under `name` (`sources = { name = { kind, url, ... } }`)
-- as a client of its kind: vigil.prom for "prometheus", a relative-URL HTTP client for "http",
-- the vigil.<kind> client otherwise. Its policy and credentials stay in C. Returns nil,
-- "ENOSOURCE: ..." when the config declares no such source.
function M.source(name)
  local info = core.source_info(tostring(name))
  if not info then
    return nil, ("ENOSOURCE: no source '%s' in the config"):format(tostring(name))
  end
  local opts = { url = info.url, name = info.name, timeout = info.timeout }
  if info.kind == "prometheus" then return require("vigil.prom").new(opts) end
  if info.kind == "http" then return http_source(opts) end
  local ok, mod = pcall(require, "vigil." .. info.kind)
  if ok and type(mod) == "table" and type(mod.new) == "function" then return mod.new(opts) end
  return nil, ("ENOSOURCE: no client for kind '%s' in this vigil"):format(info.kind)
end

local function logger(level)
  return function(msg, fields) core.log(level, tostring(msg), fields) end
end

--- Structured log lines tagged with the policy and task: vigil.log.info("scaled", {pod = p}).
M.log = {
  debug = logger("debug"),
  info = logger("info"),
  warn = logger("warn"),
  error = logger("error"),
}

return M
