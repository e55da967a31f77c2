-- Spec of policies/disk_filling.lua: `vigil test policies`. One store for the whole file, and
-- every filesystem alert is in one incident (no namespace to group by): each test uses its own
-- mountpoint. Specs have no notifiers, so a notify step ends ENONOTIFIER; what it would send
-- is read from the plan the pipeline remembers.
local T = require("vigil.test")
local memory = require("vigil.memory")

local GB = 1e9
local STEP = 300 -- the policy's 5 m step

-- `n` points of free space, 5 minutes apart, ending at `last` bytes, falling by `per_hour`.
local function avail(n, last, per_hour)
  local values = {}
  for i = 1, n do values[i] = last + (n - i) * per_hour * STEP / 3600 end
  return values
end

local function prom_returning(values)
  local fake = { calls = {} }
  function fake:query_range(q, opts)
    self.calls[#self.calls + 1] = { query = q, start = opts.start, step = opts.step }
    return values and T.series(values, { mountpoint = "/var" }, STEP) or {}
  end
  return fake
end

local function alert(mountpoint)
  return { labels = { alertname = "NodeFilesystemFillingUp", severity = "warning",
    instance = "node-1:9100", mountpoint = mountpoint, device = "/dev/sda1" } }
end

-- The steps the pipeline ran for the incident (kept until the alert resolves), when the last
-- run had any.
local function planned(a, rec)
  local p = #rec.actions > 0 and memory.state("disk-filling").get("plan:incident-" .. a.incident)
  return p and p.steps or nil
end

describe("disk-filling", function()
  local policy
  before_each(function() policy = T.policy("policies/disk_filling.lua") end)

  it("matches the filesystem alerts only", function()
    expect(policy:matches(alert("/"))):to_be(true)
    expect(policy:matches({ labels = { alertname = "NodeFilesystemAlmostOutOfSpace" } }))
      :to_be(true)
    expect(policy:matches({ labels = { alertname = "NodeFilesystemFilesFillingUp" } }))
      :to_be(false)
  end)

  it("reads 6 hours of free space at a 5 minute step, labels quoted", function()
    policy.sources.prom = prom_returning(avail(72, 400 * GB, -0.1 * GB))
    policy:alert(alert("/query"))
    expect(policy.sources.prom.calls):to_equal({ { start = "6h", step = "5m",
      query = 'node_filesystem_avail_bytes{instance="node-1:9100",mountpoint="/query"}' } })
  end)

  it("full within 4 hours: disk_full_soon, pages the on-call", function()
    -- 2 GB left, 3 GB an hour: full in 40 minutes
    policy.sources.prom = prom_returning(avail(72, 2 * GB, 3 * GB))
    local a = alert("/soon")
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("disk_full_soon")
    expect(rec.confidence):to_be(0.9)
    expect(rec.evidence.avail_bytes):to_be(2 * GB)
    expect(rec.evidence.time_to_full_s):to_be_near(40 * 60, 60)
    expect(rec.auto):to_be(true)
    expect(#rec.actions):to_be(1)
    expect(rec.actions[1].action):to_be("notify")
    expect(rec.actions[1].error):to_be("ENONOTIFIER: no notifier 'oncall' in the config")
    expect(planned(a, rec)):to_equal({ { action = "notify", to = "oncall", severity = "critical",
      subject = "incident-" .. a.incident .. "/node-1:9100:/soon",
      summary = "node-1:9100:/soon will be full in 0.7 h" } })
  end)

  it("two filesystems in one incident are paged about apart (not as duplicates)", function()
    policy.sources.prom = prom_returning(avail(72, 2 * GB, 3 * GB))
    local a, b = alert("/data1"), alert("/data2")
    local _, rec = policy:alert(a)
    expect(planned(a, rec)[1].subject):to_be("incident-" .. a.incident .. "/node-1:9100:/data1")
    _, rec = policy:alert(b)
    expect(b.incident):to_be(a.incident)
    expect(planned(b, rec)[1].subject):to_be("incident-" .. a.incident .. "/node-1:9100:/data2")
  end)

  it("full within 3 days: disk_filling, tells the team", function()
    -- 100 GB left, 2 GB an hour: full in 50 hours
    policy.sources.prom = prom_returning(avail(72, 100 * GB, 2 * GB))
    local a = alert("/days")
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("disk_filling")
    expect(rec.confidence):to_be(0.8)
    expect(rec.evidence.time_to_full_s):to_be_near(50 * 3600, 3600)
    expect(rec.actions[1].action):to_be("notify")
    expect(rec.actions[1].error):to_be("ENONOTIFIER: no notifier 'team' in the config")
    expect(planned(a, rec)):to_equal({ { action = "notify", to = "team",
      subject = "incident-" .. a.incident .. "/node-1:9100:/days",
      text = "node-1:9100:/days will be full in 50.0 h" } })
  end)

  it("just over 4 hours is not a page", function()
    policy.sources.prom = prom_returning(avail(72, 4.2 * GB, 1 * GB))
    local _, rec = policy:alert(alert("/edge"))
    expect(rec.evidence.time_to_full_s):to_be_greater_than(4 * 3600)
    expect(rec.class):to_be("disk_filling")
  end)

  it("slow, or not filling at all: disk_filling_slow, recorded, nothing sent", function()
    -- 400 GB left, 100 MB an hour: months
    policy.sources.prom = prom_returning(avail(72, 400 * GB, 0.1 * GB))
    local a = alert("/slow")
    local _, rec = policy:alert(a)
    expect(rec.class):to_be("disk_filling_slow")
    expect(rec.confidence):to_be(0.7)
    expect(rec.actions):to_equal({})
    expect(planned(a, rec)):to_be_nil()

    policy.sources.prom = prom_returning(avail(72, 50 * GB, -1 * GB)) -- space being freed
    _, rec = policy:alert(alert("/freed"))
    expect(rec.class):to_be("disk_filling_slow")
    expect(rec.evidence.time_to_full_s):to_be_nil()
    expect(rec.actions):to_equal({})
  end)

  it("less than 30 minutes of history, or none: disk_filling_unknown, nothing sent", function()
    policy.sources.prom = prom_returning(avail(5, 2 * GB, 3 * GB))
    local _, rec = policy:alert(alert("/short"))
    expect(rec.class):to_be("disk_filling_unknown")
    expect(rec.confidence):to_be(0.3)
    expect(rec.evidence):to_equal({ why = "less than 30 minutes of history" })
    expect(rec.actions):to_equal({})

    policy.sources.prom = prom_returning(avail(6, 2 * GB, 3 * GB)) -- six points are enough
    _, rec = policy:alert(alert("/six"))
    expect(rec.class):to_be("disk_full_soon")

    policy.sources.prom = prom_returning(nil)
    _, rec = policy:alert(alert("/none"))
    expect(rec.class):to_be("disk_filling_unknown")
    expect(rec.actions):to_equal({})
  end)
end)
