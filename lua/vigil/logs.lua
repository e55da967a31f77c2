-- vigil.logs: log intelligence. The C half (vigil.logs.core) mines templates ("Invalid user
-- <*> from <*>") out of raw lines and keeps named analysers: counts per minute, per service and
-- per template, first-seen times, error spikes and template-count anomalies. They live in the
-- runtime, shared by every policy, reloads and the intake (POST /api/v1/logs). This file gives
-- them defaults (now = vigil.now()) and turns what they find into advice for a human.
-- Documented in docs/logs.md.
local core = require("vigil.core")
local lcore = require("vigil.logs.core")

local M = {
  miner = lcore.miner,
  restore = lcore.restore,
  builtin_masks = lcore.builtin_masks,
  tail = require("vigil.logs.tail").tail, -- following a log file (src/lua/ltail.c)
}

M.guess_level = lcore.guess_level --- the level word of a line ("error", "warn", ...), or nil
M.is_error = lcore.is_error       --- true for error, err, fatal, critical, crit, panic, ...

local Analyser = {}
Analyser.__index = Analyser

-- Query options: { service = name, now = seconds } (now defaults to vigil.now()).
local function q(opts)
  opts = opts or {}
  return opts.service, opts.now or core.now()
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
  local level = meta.level ~= nil and tostring(meta.level):lower() or nil
  local service = meta.service ~= nil and tostring(meta.service) or nil
  return self.core:add(line, meta.ts or core.now(), level, service)
end

--- analyser:feed(entries [, opts]) -> added, newest, oldest: log entries as vigil.loki returns
-- them ({ ts = <ns>, line, labels }, newest or oldest first), added oldest first so "first
-- seen" means something. opts.after (seconds): skip entries at or before it (what an earlier
-- feed gave); opts.service: the service of every line (else labels.service, if any);
-- opts.level: the level of every line (else guessed from the line). newest and oldest are the
-- times (seconds) of the entries added, nil when none was.
function Analyser:feed(entries, opts)
  if type(entries) ~= "table" then
    error("bad argument #1 to 'feed' (table expected, got " .. type(entries) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'feed' (table or nil expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local n = #entries
  local first, last, step = 1, n, 1
  if n > 1 and tonumber(entries[1].ts or 0) > tonumber(entries[n].ts or 0) then
    first, last, step = n, 1, -1 -- newest first (Loki's backward direction)
  end
  local added, newest, oldest = 0, nil, nil
  for i = first, last, step do
    local e = entries[i]
    if type(e) ~= "table" or type(e.line) ~= "string" then
      error(("bad argument #1 to 'feed' (entry %d has no line)"):format(i), 2)
    end
    local ts = tonumber(e.ts) and tonumber(e.ts) / 1e9 or nil
    if not (ts and opts.after and ts <= opts.after) then
      local service = opts.service or (type(e.labels) == "table" and e.labels.service) or nil
      self.core:add(e.line, ts or core.now(), opts.level, service and tostring(service))
      added = added + 1
      if ts then
        newest = math.max(newest or ts, ts)
        oldest = math.min(oldest or ts, ts)
      end
    end
  end
  return added, newest, oldest
end

--- analyser:error_rate([opts]) -> rate, errors, lines over the window (0 with no lines).
function Analyser:error_rate(opts) return self.core:error_rate(q(opts)) end

--- analyser:top_errors([n = 5 [, opts]]) -> { { id, template, count, share }, ... }.
function Analyser:top_errors(n, opts) return self.core:top_errors(n or 5, q(opts)) end

--- analyser:spikes([opts]) -> { { minute, errors, baseline }, ... } (the seed's 3x rule).
function Analyser:spikes(opts) return self.core:spikes(q(opts)) end

--- analyser:new_templates([opts]) -> { { id, template, first_seen, service, level, error,
-- line }, ... } first seen in the window (or since opts.since); opts.errors = true: errors only.
function Analyser:new_templates(opts)
  local service, now = q(opts)
  return self.core:new_templates(service, now, opts and opts.since, opts and opts.errors)
end

--- analyser:anomalies([opts]) -> { { id, template, minute, count, baseline, score }, ... }:
-- closed minutes where a template's detector flagged a rise of its count.
function Analyser:anomalies(opts)
  local _, now = q(opts)
  return self.core:anomalies(nil, now, opts and opts.since)
end

--- analyser:trending([opts]) -> { { id, template, recent, before, growth }, ... }.
function Analyser:trending(opts) return self.core:trending(q(opts)) end

--- analyser:template(id) -> { id, template, count, errors, first_seen, last_seen, service,
-- level } or nil; analyser:stats(), :options(), :snapshot(), :restore(s) as in docs/logs.md.
function Analyser:template(id) return self.core:template(id) end
function Analyser:stats() return self.core:stats() end
function Analyser:options() return self.core:options() end
function Analyser:snapshot() return self.core:snapshot() end
function Analyser:restore(s) return self.core:restore(s) end

local function clip(s) return #s > 80 and s:sub(1, 77) .. "..." or s end

--- analyser:recommendations([opts]) -> list of sentences for a human, most urgent first.
function Analyser:recommendations(opts)
  local out = {}
  local minutes = self.core:options().window // 60
  local rate, errors, lines = self:error_rate(opts)
  if rate > 0.05 then
    out[#out + 1] = ("High error rate: %.1f%% of %d lines in the last %d min are errors; check "
      .. "recent deployments and dependencies"):format(rate * 100, lines, minutes)
  end
  for _, s in ipairs(self:spikes(opts)) do
    out[#out + 1] = ("Error spike at %s: %d errors in one minute against %.1f/min normally; "
      .. "correlate with deploys and alerts of that minute"):format(
      os.date("!%H:%M", s.minute), s.errors, s.baseline)
  end
  for _, a in ipairs(self:anomalies(opts)) do
    out[#out + 1] = ("Jump at %s: %q logged %d times in one minute against %.1f/min before")
      :format(os.date("!%H:%M", a.minute), clip(a.template), a.count, a.baseline)
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
      lines, errors, minutes)
  end
  return out
end

--- analyser:report([opts]) -> every query at once, as one plain table.
function Analyser:report(opts)
  local rate, errors, lines = self:error_rate(opts)
  return {
    name = self.name, lines = lines, errors = errors, error_rate = rate,
    top_errors = self:top_errors(5, opts), spikes = self:spikes(opts),
    new_templates = self:new_templates(opts), anomalies = self:anomalies(opts),
    trending = self:trending(opts), recommendations = self:recommendations(opts),
  }
end

local handles = {} -- by name: the same table for the same analyser in this VM

--- vigil.logs.analyser(name [, opts]) -> the runtime's analyser of that name, created on first
-- use with opts { window, spike_factor, spike_min, recent, trend_factor, trend_min, max_events,
-- max_services, detector, detector_window, miner = { options of vigil.logs.miner } }. Every
-- policy (and the intake) shares it; opts given for an existing one must be the same.
function M.analyser(name, opts)
  if type(name) ~= "string" or name == "" then
    error("bad argument #1 to 'analyser' (non-empty string expected)", 2)
  end
  local ud = lcore.analyser(name, opts)
  local a = handles[name]
  if not a then
    a = setmetatable({ name = name, core = ud }, Analyser)
    handles[name] = a
  end
  return a
end

--- vigil.logs.analysers() -> the names of the runtime's analysers, sorted.
function M.analysers()
  local names = lcore.analysers()
  table.sort(names)
  return names
end

return M
