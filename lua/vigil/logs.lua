-- vigil.logs: log intelligence. The C half (vigil.logs.core) mines templates ("Invalid user
-- <*> from <*>") out of raw lines; this file counts them per minute and per service and answers
-- what an SRE asks: error rate, top error patterns, error spikes, patterns never seen before,
-- patterns on the rise, and what to do about it. Documented in docs/logs.md.
--
-- Analysers live in this VM (one per policy): a policy reload starts them afresh. Keep what was
-- learned with analyser.miner:snapshot() and vigil.logs.restore().
local core = require("vigil.core")
local lcore = require("vigil.logs.core")

local M = {
  miner = lcore.miner,
  restore = lcore.restore,
  builtin_masks = lcore.builtin_masks,
  tail = require("vigil.logs.tail").tail, -- following a log file (src/lua/ltail.c)
}

local ERROR_LEVELS = {
  error = true, err = true, fatal = true, critical = true, crit = true, panic = true,
  emerg = true, emergency = true, alert = true, severe = true,
}
-- Level words looked for in the first 256 bytes of a line that came without a level.
local LEVEL_WORDS = { "FATAL", "PANIC", "CRITICAL", "CRIT", "SEVERE", "ERROR", "ERR", "WARNING",
  "WARN", "INFO", "NOTICE", "DEBUG", "TRACE" }

local DEFAULTS = {
  window = 3600,      -- baseline and history kept, in seconds
  spike_factor = 3,   -- a minute is a spike above this many times the baseline (the seed's 3x)
  spike_min = 5,      -- ... and with at least this many errors
  recent = 300,       -- trending compares the last `recent` seconds with the rest of the window
  trend_factor = 2,
  trend_min = 5,
  max_events = 100,   -- new-template events kept
}

--- The level of a line, guessed from the first level word in it ("error", "warn", ...), or nil.
function M.guess_level(line)
  local head = line:sub(1, 256):upper()
  local best, at = nil, math.huge
  for _, word in ipairs(LEVEL_WORDS) do
    local i = head:find("%f[%w]" .. word .. "%f[%W]")
    if i and i < at then best, at = word, i end
  end
  if best == "WARNING" then best = "WARN" end
  return best and best:lower()
end

--- True for the levels counted as errors (error, fatal, critical, panic, ...).
function M.is_error(level)
  return level ~= nil and ERROR_LEVELS[level:lower()] == true
end

local Analyser = {}
Analyser.__index = Analyser

local function minute_of(ts) return ts - ts % 60 end

local function bucket(t, key)
  local b = t[key]
  if not b then b = { lines = 0, errors = 0 }; t[key] = b end
  return b
end

-- Drops per-minute counts older than the window (at most once a minute).
function Analyser:_prune(now)
  local oldest = minute_of(now) - self.opts.window
  if self.pruned_at == minute_of(now) then return end
  self.pruned_at = minute_of(now)
  for _, svc in pairs(self.services) do
    for m in pairs(svc.minutes) do if m < oldest then svc.minutes[m] = nil end end
  end
  for _, t in pairs(self.templates) do
    for m in pairs(t.minutes) do if m < oldest then t.minutes[m] = nil end end
  end
end

-- Forgets the templates least recently seen once there are 10 % more than the miner keeps.
function Analyser:_cap()
  local cap = self.max_templates
  if self.ntemplates <= cap + cap // 10 + 10 then return end
  local all = {}
  for _, t in pairs(self.templates) do all[#all + 1] = t end
  table.sort(all, function(a, b) return a.last_seen > b.last_seen end)
  for i = cap + 1, #all do self.templates[all[i].id] = nil end
  self.ntemplates = math.min(#all, cap)
end

-- The miner folded `merged` templates into template `into` (their ids now resolve to it):
-- moves their counts there, and keeps one "first seen" event for the pattern, the earliest.
function Analyser:_fold(into)
  local target = self.templates[into.id]
  for id, t in pairs(self.templates) do
    local now = id ~= into.id and self.miner:template(id)
    if now and now.id == into.id then
      target.count, target.errors = target.count + t.count, target.errors + t.errors
      target.first_seen = math.min(target.first_seen, t.first_seen)
      for m, c in pairs(t.minutes) do target.minutes[m] = (target.minutes[m] or 0) + c end
      for s, c in pairs(t.by_service) do target.by_service[s] = (target.by_service[s] or 0) + c end
      self.templates[id] = nil
      self.ntemplates = self.ntemplates - 1
    end
  end
  local kept, seen = {}, false
  for _, e in ipairs(self.events) do
    local now = e.id ~= into.id and self.miner:template(e.id)
    if e.id == into.id or (now and now.id == into.id) then
      if not seen then
        seen = true
        e.id, e.template = into.id, into.template
        kept[#kept + 1] = e
      end
    else
      kept[#kept + 1] = e
    end
  end
  self.events = kept
end

--- analyser:add(line [, { ts, level, service }]) mines one line and counts it. Returns the
-- miner's result { id, template, params, new, ... } plus `error` (boolean), or nil for a blank
-- line. ts defaults to vigil.now(), level to a guess from the line, service to the analyser name.
function Analyser:add(line, meta)
  if type(line) ~= "string" then
    error("bad argument #1 to 'add' (string expected, got " .. type(line) .. ")", 2)
  end
  if meta ~= nil and type(meta) ~= "table" then
    error("bad argument #2 to 'add' (table or nil expected, got " .. type(meta) .. ")", 2)
  end
  meta = meta or {}
  local r = self.miner:add(line)
  if not r then return nil end
  local ts = meta.ts or core.now()
  local level = meta.level and tostring(meta.level):lower() or M.guess_level(line)
  local is_err = M.is_error(level)
  local service = meta.service or self.name
  local minute = minute_of(ts)
  self:_prune(math.max(ts, core.now()))

  for _, key in ipairs({ "*", service }) do
    local svc = self.services[key]
    if not svc then
      svc = { lines = 0, errors = 0, minutes = {} }
      self.services[key] = svc
    end
    svc.lines = svc.lines + 1
    local b = bucket(svc.minutes, minute)
    b.lines = b.lines + 1
    if is_err then
      svc.errors = svc.errors + 1
      b.errors = b.errors + 1
    end
    svc.first = math.min(svc.first or minute, minute)
  end

  local t = self.templates[r.id]
  if not t then
    t = { id = r.id, count = 0, errors = 0, by_service = {}, minutes = {}, first_seen = ts,
      service = service, level = level }
    self.templates[r.id] = t
    self.ntemplates = self.ntemplates + 1
    self:_cap()
  end
  t.template = r.template
  t.count = t.count + 1
  t.last_seen = math.max(t.last_seen or ts, ts)
  t.minutes[minute] = (t.minutes[minute] or 0) + 1
  if is_err then
    t.errors = t.errors + 1
    t.by_service[service] = (t.by_service[service] or 0) + 1
  end
  if r.merged > 0 then self:_fold(r) end
  if r.new then
    local events = self.events
    events[#events + 1] = { id = r.id, template = r.template, first_seen = ts, service = service,
      level = level, error = is_err, line = line:sub(1, 512) }
    if #events > self.opts.max_events then table.remove(events, 1) end
  end
  r.error = is_err
  return r
end

-- Query options: { service = name, now = seconds } (now defaults to vigil.now()).
local function query(self, opts)
  opts = opts or {}
  local now = opts.now or core.now()
  return self.services[opts.service or "*"], now, minute_of(now) - self.opts.window
end

--- analyser:error_rate([opts]) -> rate, errors, lines over the window (0 with no lines).
function Analyser:error_rate(opts)
  local svc, _, oldest = query(self, opts)
  local errors, lines = 0, 0
  for m, b in pairs(svc and svc.minutes or {}) do
    if m >= oldest then errors, lines = errors + b.errors, lines + b.lines end
  end
  return lines > 0 and errors / lines or 0, errors, lines
end

--- analyser:top_errors([n = 5 [, opts]]) -> { { id, template, count, share }, ... }: the error
-- templates with the most errors since the start, share being their part of all errors.
function Analyser:top_errors(n, opts)
  local svc = query(self, opts)
  local service = opts and opts.service
  local total = svc and svc.errors or 0
  local list = {}
  for _, t in pairs(self.templates) do
    local count = service and (t.by_service[service] or 0) or t.errors
    if count > 0 then
      list[#list + 1] = { id = t.id, template = t.template, count = count, share = count / total }
    end
  end
  table.sort(list, function(a, b)
    return a.count > b.count or (a.count == b.count and a.id < b.id)
  end)
  for i = #list, (n or 5) + 1, -1 do list[i] = nil end
  return list
end

--- analyser:spikes([opts]) -> { { minute, errors, baseline }, ... }: minutes of the window whose
-- errors exceed spike_factor times the average of the other minutes (minutes without errors
-- count as zero) and spike_min, oldest first. The minute running now is included.
function Analyser:spikes(opts)
  local svc, now, oldest = query(self, opts)
  if not svc then return {} end
  local first = math.max(oldest, svc.first)
  local span = (minute_of(now) - first) // 60 + 1
  local total = 0
  for m, b in pairs(svc.minutes) do
    if m >= first then total = total + b.errors end
  end
  local out = {}
  for m, b in pairs(svc.minutes) do
    local baseline = span > 1 and (total - b.errors) / (span - 1) or 0
    if m >= first and b.errors >= self.opts.spike_min
        and b.errors > self.opts.spike_factor * baseline then
      out[#out + 1] = { minute = m, errors = b.errors, baseline = baseline }
    end
  end
  table.sort(out, function(a, b) return a.minute < b.minute end)
  return out
end

--- analyser:new_templates([opts]) -> templates first seen within the window (or since
-- opts.since), oldest first: { id, template, first_seen, service, level, error, line }.
-- opts.errors = true keeps only those first seen on an error line.
function Analyser:new_templates(opts)
  opts = opts or {}
  local since = opts.since or (opts.now or core.now()) - self.opts.window
  local out = {}
  for _, e in ipairs(self.events) do
    if e.first_seen >= since and (not opts.errors or e.error)
        and (not opts.service or e.service == opts.service) then
      out[#out + 1] = e
    end
  end
  return out
end

--- analyser:trending([opts]) -> templates whose rate over the last `recent` seconds is at least
-- trend_factor times their rate over the rest of the window (or of the time since the first
-- line, when shorter), most growing first:
-- { id, template, recent, before, growth }. A template with no earlier lines counts as one.
function Analyser:trending(opts)
  local svc, now, oldest = query(self, opts)
  if not svc then return {} end
  local recent_from = minute_of(now) - self.opts.recent + 60
  local before_minutes = math.max(1, (recent_from - math.max(oldest, svc.first)) // 60)
  local recent_minutes = self.opts.recent // 60
  local out = {}
  for _, t in pairs(self.templates) do
    local recent, before = 0, 0
    for m, c in pairs(t.minutes) do
      if m >= recent_from then recent = recent + c elseif m >= oldest then before = before + c end
    end
    local growth = (recent / recent_minutes) / (math.max(before, 1) / before_minutes)
    if recent >= self.opts.trend_min and growth >= self.opts.trend_factor then
      out[#out + 1] = { id = t.id, template = t.template, recent = recent, before = before,
        growth = growth }
    end
  end
  table.sort(out, function(a, b)
    return a.growth > b.growth or (a.growth == b.growth and a.id < b.id)
  end)
  return out
end

local function clip(s) return #s > 80 and s:sub(1, 77) .. "..." or s end

--- analyser:recommendations([opts]) -> list of sentences for a human, most urgent first.
function Analyser:recommendations(opts)
  local out = {}
  local rate, errors, lines = self:error_rate(opts)
  if rate > 0.05 then
    out[#out + 1] = ("High error rate: %.1f%% of %d lines in the last %d min are errors; check "
      .. "recent deployments and dependencies"):format(rate * 100, lines, self.opts.window // 60)
  end
  for _, s in ipairs(self:spikes(opts)) do
    out[#out + 1] = ("Error spike at %s: %d errors in one minute against %.1f/min normally; "
      .. "correlate with deploys and alerts of that minute"):format(
      os.date("!%H:%M", s.minute), s.errors, s.baseline)
  end
  for _, e in ipairs(self:new_templates({ errors = true, service = opts and opts.service,
      now = opts and opts.now })) do
    out[#out + 1] = ("New error pattern in %s: %q, first seen %s"):format(
      e.service, clip(e.template), os.date("!%Y-%m-%d %H:%M:%S", e.first_seen))
  end
  local top = self:top_errors(1, opts)[1]
  if top and errors >= 10 and top.share > 0.5 then
    out[#out + 1] = ("One pattern causes %d%% of errors: %q; fixing it fixes most of them")
      :format(math.floor(top.share * 100 + 0.5), clip(top.template))
  end
  for _, t in ipairs(self:trending(opts)) do
    out[#out + 1] = ("Rising: %q, %.1fx its usual rate"):format(clip(t.template), t.growth)
  end
  if #out == 0 then
    out[1] = ("No action needed: %d lines, %d errors in the last %d min"):format(
      lines, errors, self.opts.window // 60)
  end
  return out
end

--- analyser:report([opts]) -> every query at once, as one plain table.
function Analyser:report(opts)
  local rate, errors, lines = self:error_rate(opts)
  return {
    name = self.name, lines = lines, errors = errors, error_rate = rate,
    top_errors = self:top_errors(5, opts), spikes = self:spikes(opts),
    new_templates = self:new_templates(opts), trending = self:trending(opts),
    recommendations = self:recommendations(opts),
  }
end

local analysers = {} -- by name, for this VM

local function check_opts(name, opts)
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do
    if k == "miner" then
      if type(v) ~= "table" then error("vigil.logs.analyser: opts.miner must be a table", 3) end
    elseif DEFAULTS[k] == nil then
      error(("vigil.logs.analyser: unknown option '%s'"):format(tostring(k)), 3)
    else
      local n = (k == "window" or k == "recent") and core.duration(v) or v
      if type(n) ~= "number" or n <= 0 then
        error(("vigil.logs.analyser: option '%s' must be positive"):format(k), 3)
      end
      o[k] = n
    end
  end
  o.window = math.max(60, o.window - o.window % 60)
  o.recent = math.min(o.window, math.max(60, o.recent - o.recent % 60))
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'analyser' (non-empty string expected)", 3)
  end
  return o
end

--- vigil.logs.analyser(name [, opts]) -> the analyser of that name in this VM, created on first
-- use with opts { window, spike_factor, spike_min, recent, trend_factor, trend_min, max_events,
-- miner = { options of vigil.logs.miner } }. Later calls return the same object (opts ignored).
function M.analyser(name, opts)
  local a = analysers[name]
  if a then return a end
  local o = check_opts(name, opts)
  local mopts = opts and opts.miner
  a = setmetatable({
    name = name, opts = o, miner = lcore.miner(mopts),
    max_templates = mopts and mopts.max_templates or 10000,
    services = {}, templates = {}, ntemplates = 0, events = {},
  }, Analyser)
  analysers[name] = a
  return a
end

--- vigil.logs.analysers() -> the names of this VM's analysers, sorted.
function M.analysers()
  local names = {}
  for name in pairs(analysers) do names[#names + 1] = name end
  table.sort(names)
  return names
end

return M
