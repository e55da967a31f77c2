-- Spec of vigil.logs (docs/logs.md): the template miner binding (vigil.logs.core) and the
-- analyser built on it, on the virtual clock of `vigil test`.
local lcore = require("vigil.logs.core")
local sandbox = require("vigil.testing").sandbox

local function ssh(user, ip, port)
  return ("Failed password for %s from %s port %d ssh2"):format(user, ip, port)
end

describe("vigil.logs.miner", function()
  it("turns variable parts into <*> and returns the params of each line", function()
    local m = vigil.logs.miner()
    local r = m:add("Connected to 10.0.0.1:8080 in 35ms")
    expect(r.id):to_be(1)
    expect(r.new):to_be(true)
    expect(r.template):to_be("Connected to <*> in <*>")
    expect(r.params):to_equal({ "10.0.0.1:8080", "35ms" })
    r = m:add("Connected to 192.168.1.20:443 in 7ms\n")
    expect(r.id):to_be(1)
    expect(r.new):to_be(false)
    expect(r.params):to_equal({ "192.168.1.20:443", "7ms" })
    expect(m:add("Disk full on /var/lib/data").id):to_be(2)
    local s = m:stats()
    expect(s.lines):to_be(3)
    expect(s.created):to_be(2)
    expect(s.templates):to_be(2)
    expect(s.bytes):to_be_greater_than(0)
  end)

  it("lists templates most recently seen first, with counts and line numbers", function()
    local m = vigil.logs.miner()
    m:add("job 1 done")
    m:add("cache miss for key users")
    m:add("job 2 done")
    local ts = m:templates()
    expect(#ts):to_be(2)
    expect(ts[1]):to_equal({ id = 1, template = "job <*> done", count = 2, first_line = 1,
      last_line = 3, tokens = 3 })
    expect(ts[2].template):to_be("cache miss for key users")
    expect(#m:templates(1)):to_be(1)
    expect(#m:templates(0)):to_be(0)
    expect(m:template(2).count):to_be(1)
    expect(m:template(99)):to_be_nil()
    expect(m:template(-1)):to_be_nil()
  end)

  it("forms `Invalid user <*>` after a few user names and reports the merge", function()
    local m = vigil.logs.miner()
    local ids = {}
    for i, user in ipairs({ "bob", "alice", "carol", "dave", "erin" }) do
      local r = m:add(ssh(user, "10.0.0." .. i, 5000 + i))
      ids[i] = r.id
      if i == 4 then expect(r.merged):to_be(2) end -- alice and carol fold into bob
    end
    expect(ids[5]):to_be(1)
    expect(m:template(ids[2]).id):to_be(1) -- an alias of the surviving template
    expect(m:template(1).template):to_be("Failed password for <*> from <*> port <*> ssh2")
    expect(m:template(1).count):to_be(5)
    expect(m:stats().merged):to_be(2)
  end)

  it("matches without learning, and match_only never creates templates", function()
    local m = vigil.logs.miner()
    m:add("user 7 logged in")
    local r = m:match("user 8 logged in")
    expect(r.id):to_be(1)
    expect(r.new):to_be(false)
    expect(m:match("something else entirely")):to_be_nil()
    expect(m:template(1).count):to_be(1)
    m:set_match_only(true)
    expect(m:add("a brand new message")):to_be_nil()
    expect(m:add("user 9 logged in").id):to_be(1)
    expect(m:template(1).count):to_be(2)
    expect(m:stats().created):to_be(1)
    expect(m:stats().nomatch):to_be(2)
    local mo = vigil.logs.miner({ match_only = true })
    expect(mo:add("anything at all")):to_be_nil()
    expect(mo:stats().templates):to_be(0)
  end)

  it("ignores blank lines", function()
    local m = vigil.logs.miner()
    expect(m:add("")):to_be_nil()
    expect(m:add("   \t \r\n")):to_be_nil()
    expect(m:stats().empty):to_be(2)
    expect(m:stats().lines):to_be(0)
  end)

  it("applies user masks (Lua patterns) and can turn built-in masks off", function()
    local m = vigil.logs.miner({ masks = { "req%-%w+" } })
    expect(m:add("handled req-AbC9 ok").template):to_be("handled <*> ok")
    local plain = vigil.logs.miner({ builtin = false })
    expect(plain:add("took 35 ms").template):to_be("took 35 ms")
    local nums = vigil.logs.miner({ builtin = { "num" } })
    expect(nums:add("took 35 ms from 10.1.2.3").template):to_be("took <*> ms from <*>")
    expect(lcore.builtin_masks):to_contain("uuid")
  end)

  it("evicts the least recently seen template past max_templates", function()
    local m = vigil.logs.miner({ max_templates = 2 })
    m:add("alpha one")
    m:add("beta two three")
    m:add("gamma four five six")
    local s = m:stats()
    expect(s.templates):to_be(2)
    expect(s.evicted):to_be(1)
    expect(m:template(1)):to_be_nil()
  end)

  it("rejects bad options and arguments with messages naming them", function()
    local cases = {
      { { similarity = 0 }, "'similarity'" },
      { { similarity = 1.5 }, "'similarity'" },
      { { similarity = "high" }, "'similarity'" },
      { { depth = 0 }, "'depth'" },
      { { depth = 9 }, "'depth'" },
      { { depth = 2.5 }, "'depth'" },
      { { max_templates = 0 }, "'max_templates'" },
      { { max_line = 1e9 }, "'max_line'" },
      { { max_children = -1 }, "'max_children'" },
      { { match_only = "yes" }, "'match_only'" },
      { { builtin = { "nums" } }, "unknown mask 'nums'" },
      { { builtin = 3 }, "'builtin'" },
      { { masks = "x" }, "'masks'" },
      { { masks = { 42 } }, "item 1 is not a string" },
      { { masks = { "%" } }, "bad mask pattern" },
      { { masks = { "[a" } }, "bad mask pattern" },
      { { simlarity = 0.4 }, "bad option 'simlarity'" },
    }
    for _, c in ipairs(cases) do
      expect(function() vigil.logs.miner(c[1]) end):to_fail(c[2])
    end
    local many = {}
    for i = 1, 33 do many[i] = "x" .. i end
    expect(function() vigil.logs.miner({ masks = many }) end):to_fail("at most 32")
    expect(function() vigil.logs.miner("fast") end):to_fail("table expected")
    local m = vigil.logs.miner()
    expect(function() m:add({}) end):to_fail("string expected")
    expect(function() m:add() end):to_fail("string expected")
    expect(function() m.add("x", "line") end):to_fail("vigil.logs.miner expected")
    expect(function() m:templates(-1) end):to_fail("negative")
    expect(function() m:set_match_only(1) end):to_fail("boolean expected")
    expect(m:add(42).template):to_be("<*>") -- numbers are lines too, as in string functions
  end)

  it("survives arbitrary bytes: NUL, control characters, invalid UTF-8", function()
    local m = vigil.logs.miner({ max_line = 256 })
    local seed = 12345
    local function rand(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local added, blank = 0, 0
    for _ = 1, 2000 do
      local bytes = {}
      for j = 1, rand(300) do bytes[j] = string.char(rand(256)) end
      local r = m:add(table.concat(bytes))
      if r then
        added = added + 1
        expect(r.template:find("[%z\1-\8\10-\31\127]")):to_be_nil()
      else
        blank = blank + 1
      end
    end
    local s = m:stats()
    expect(s.lines):to_be(added)
    expect(s.empty):to_be(blank)
    expect(added):to_be_greater_than(1900)
    expect(m:add("tab\tand\0nul\1ctl \xff\xfe bad utf8").template):to_be_a("string")
  end)

  it("cuts huge lines at max_line and flags them", function()
    local m = vigil.logs.miner()
    local r = m:add("start " .. ("x"):rep(1024 * 1024) .. " end")
    expect(r.truncated):to_be(true)
    expect(#r.template <= 16384 * 3):to_be(true)
    expect(r.template:find("end", 1, true)):to_be_nil()
    expect(m:add("short line").truncated):to_be(false)
    expect(m:stats().truncated):to_be(1)
    local small = vigil.logs.miner({ max_line = 16 })
    expect(small:add("0123456789 abcdef ghijkl").truncated):to_be(true)
  end)

  it("round-trips a snapshot: same ids, templates and counts", function()
    local m = vigil.logs.miner()
    for i = 1, 20 do
      m:add(("worker %d finished batch %d"):format(i % 3, i))
      m:add(("GET /api/v1/items/%d 200"):format(i))
    end
    m:add("Out of memory: kill process")
    local snap = m:snapshot()
    expect(snap):to_be_a("string")
    local copy = vigil.logs.restore(snap)
    expect(copy:templates()):to_equal(m:templates())
    expect(copy:add("worker 2 finished batch 99").id):to_be(m:add("worker 2 finished batch 99").id)
    expect(copy:add("a line never seen").id):to_be(m:add("a line never seen").id)
    local into = vigil.logs.miner()
    into:add("something else")
    expect(into:restore(snap)):to_be(true)
    expect(#into:templates()):to_be(#m:templates() - 1)
    local capped = vigil.logs.restore(snap, { max_templates = 1 })
    expect(capped:stats().templates):to_be(1)
  end)

  it("refuses malformed snapshots without changing the miner", function()
    local m = vigil.logs.miner()
    m:add("keep me 1")
    local snap = m:snapshot()
    local bad = { "", "garbage", snap:sub(1, #snap - 1), snap:sub(1, 8), snap .. "x",
      snap:gsub("keep", "\0eep") .. "\255" }
    for _, s in ipairs(bad) do
      local ok, err = m:restore(s)
      expect(ok):to_be_nil()
      expect(err):to_match("^EINVAL: ")
      local none, err2 = vigil.logs.restore(s)
      expect(none):to_be_nil()
      expect(err2):to_match("^EINVAL: ")
    end
    expect(m:templates()[1].template):to_be("keep me <*>")
    expect(function() vigil.logs.restore(nil) end):to_fail("string expected")
  end)

  it("frees miners when they are closed or collected", function()
    local base = lcore.live()
    local m = vigil.logs.miner()
    expect(lcore.live()):to_be(base + 1)
    m:close()
    expect(lcore.live()):to_be(base)
    m:close() -- twice is fine
    expect(function() m:add("x") end):to_fail("the miner is closed")
    expect(tostring(m)):to_be("vigil.logs.miner(closed)")
    do
      local scoped <close> = vigil.logs.miner()
      scoped:add("scoped 1")
      expect(lcore.live()):to_be(base + 1)
    end
    expect(lcore.live()):to_be(base)
    for _ = 1, 200 do vigil.logs.miner():add("garbage line 1") end
    expect(lcore.live() > base):to_be(true)
    local junk
    for i = 1, 200000 do junk = { i, tostring(i) } end
    expect(junk[1]):to_be(200000)
    expect(lcore.live() < base + 200):to_be(true)
    local failed = vigil.logs.restore("garbage")
    expect(failed):to_be_nil()
  end)

  it("counts each miner against the VM's memory cap and bounds templates per VM", function()
    local kept = sandbox([[
      local keep = {}
      for i = 1, 1000 do keep[i] = vigil.logs.miner() end
    ]], { memory = 16 << 20 })
    expect(kept.status):to_be("killed")
    expect(kept.killed):to_be("memory")
    local dropped = sandbox([[
      for _ = 1, 1000 do vigil.logs.miner():add("line 1") end
      return require("vigil.logs.core").live()
    ]], { memory = 16 << 20, slice = "1h", timeout = "1h" })
    expect(dropped.killed):to_be_nil()
    expect(dropped.status):to_be("ok")
    expect(dropped.results[1] < 1000):to_be(true)
    local big = vigil.logs.miner({ max_templates = 600000 })
    expect(function() vigil.logs.miner({ max_templates = 600000 }) end)
      :to_fail("more than 1000000 templates")
    big:close()
    expect(vigil.logs.miner({ max_templates = 600000 }):stats().templates):to_be(0)
  end)

  it("is C userdata a policy cannot take apart", function()
    local r = sandbox([[
      local m = vigil.logs.miner()
      local t = m:add("login failed for 42").template
      local mt = getmetatable(m)
      local ok = pcall(setmetatable, m, {})
      local ok2 = pcall(function() vigil.logs.miner = nil end)
      return t, mt, ok, ok2, tostring(m)
    ]])
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be("login failed for <*>")
    expect(r.results[2]):to_be(false)
    expect(r.results[3]):to_be(false)
    expect(r.results[4]):to_be(false)
    expect(r.results[5]):to_be("vigil.logs.miner(1 templates)")
  end)

  it("charges mining to the task's instruction budget", function()
    local r = sandbox([[
      local m = vigil.logs.miner({ max_line = 1048576 })
      local line = ("word "):rep(200000)
      for _ = 1, 1000 do m:add(line) end
    ]], { instructions = 1e6, slice = "1h" })
    expect(r.status):to_be("killed")
    expect(r.killed):to_be("instructions")
  end)
end)

describe("vigil.logs.analyser", function()
  it("is one live object per name in a VM", function()
    local a = vigil.logs.analyser("spec-same")
    expect(vigil.logs.analyser("spec-same")):to_be(a)
    expect(vigil.logs.analyser("spec-other")).never:to_be(a)
    expect(vigil.logs.analysers()):to_contain("spec-same")
    expect(function() vigil.logs.analyser("") end):to_fail("non-empty string")
    expect(function() vigil.logs.analyser("x1", { windw = 60 }) end):to_fail("unknown option")
    expect(function() vigil.logs.analyser("x2", { spike_factor = -1 }) end):to_fail("positive")
    expect(function() vigil.logs.analyser("x3", { window = "soon" }) end):to_fail("'window'")
    expect(function() vigil.logs.analyser("x4", { detector = "magic" }) end):to_fail("'detector'")
    expect(function() vigil.logs.analyser("x5", { miner = 3 }) end):to_fail("must be a table")
    expect(function() a:add(nil) end):to_fail("string expected")
    expect(function() a:add("x", "error") end):to_fail("table or nil expected")
  end)

  it("is the runtime's state: shared by name across calls and VMs (policies, reloads)", function()
    local a = vigil.logs.analyser("spec-shared", { window = "30m", spike_min = 2 })
    a:add("ERROR payment gateway timeout after 30s")
    local b = vigil.logs.analyser("spec-shared") -- no options: whatever it has
    b:add("ERROR payment gateway timeout after 31s")
    expect(select(2, a:error_rate())):to_be(2)
    expect(a:options().window):to_be(1800)
    expect(a:options().spike_min):to_be(2)
    -- the same options are fine, other ones raise
    expect(vigil.logs.analyser("spec-shared", { window = 1800, spike_min = 2 })):to_be(a)
    expect(function() vigil.logs.analyser("spec-shared", { window = "1h" }) end)
      :to_fail("exists with other options")
    -- another VM (as another policy, or this one after a reload) sees and feeds the same state
    local r = sandbox([[
      local a = vigil.logs.analyser("spec-shared")
      local res = a:add("ERROR payment gateway timeout after 32s")
      local _, errors = a:error_rate()
      return res.new, res.id, errors
    ]])
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(false)
    expect(r.results[2]):to_be(1)
    expect(r.results[3]):to_be(3)
    expect(select(2, b:error_rate())):to_be(3)
    expect(#a:new_templates()):to_be(1)
    expect(a:stats().lines):to_be(3)
  end)

  it("finds a jump of one template's count with the per-template detector", function()
    local a = vigil.logs.analyser("spec-anomaly")
    local start = vigil.now() - vigil.now() % 60
    for m = 0, 19 do -- twenty steady minutes: two job lines and one cache line each
      a:add("job " .. m .. " done", { ts = start + 60 * m })
      a:add("job " .. m + 100 .. " done", { ts = start + 60 * m + 10 })
      a:add("cache refreshed", { ts = start + 60 * m + 20 })
    end
    for i = 1, 30 do a:add("job " .. i .. " done", { ts = start + 1200 + i }) end
    expect(#a:anomalies({ now = start + 1230 })):to_be(0) -- the minute is still open
    a:add("cache refreshed", { ts = start + 1260 })       -- a later minute closes it
    local an = a:anomalies({ now = start + 1260 })
    expect(#an):to_be(1)
    expect(an[1].template):to_be("job <*> done")
    expect(an[1].minute):to_be(start + 1200)
    expect(an[1].count):to_be(30)
    expect(an[1].baseline):to_be(2)
    expect(an[1].score >= 0.5):to_be(true)
    expect(a:stats().anomalies):to_be(1)
    expect(#a:spikes({ now = start + 1260 })):to_be(0) -- no error lines: the seed's rule is quiet
    local recs = table.concat(a:recommendations({ now = start + 1260 }), "\n")
    expect(recs):to_contain('Jump at ')
    expect(a:report({ now = start + 1260 }).anomalies[1].count):to_be(30)
  end)

  it("keeps its state through a snapshot, and refuses a bad one", function()
    local a = vigil.logs.analyser("spec-snap")
    a:add("ERROR disk quota exceeded on vol-1")
    a:add("INFO compaction done in 3s")
    local snap = a:snapshot()
    a:add("a line after the snapshot")
    expect(a:stats().templates):to_be(3)
    expect(a:restore(snap)):to_be(true)
    expect(a:stats().templates):to_be(2)
    expect(a:add("ERROR disk quota exceeded on vol-2").new):to_be(false)
    expect(#a:new_templates()):to_be(2)
    local ok, err = a:restore(snap:sub(1, 20))
    expect(ok):to_be_nil()
    expect(err):to_match("^EINVAL: ")
    expect(a:stats().lines):to_be(3)
  end)

  it("guesses levels and computes the error rate per service", function()
    expect(vigil.logs.guess_level("2026-01-01 12:00:00 ERROR db timeout")):to_be("error")
    expect(vigil.logs.guess_level("[warning] slow; error budget fine")):to_be("warn")
    expect(vigil.logs.guess_level("no level here")):to_be_nil()
    local a = vigil.logs.analyser("spec-rate")
    for i = 1, 8 do a:add("INFO request " .. i .. " ok", { service = "api" }) end
    a:add("ERROR request 9 failed", { service = "api" })
    a:add("payment declined for order 5", { level = "error", service = "pay" })
    a:add("", { level = "error" })
    local rate, errors, lines = a:error_rate()
    expect(rate):to_be_near(0.2, 1e-9)
    expect(errors):to_be(2)
    expect(lines):to_be(10)
    expect(a:error_rate({ service = "api" })):to_be_near(1 / 9, 1e-9)
    expect(a:error_rate({ service = "nope" })):to_be(0)
  end)

  it("ranks the top error templates with counts and shares", function()
    local a = vigil.logs.analyser("spec-top")
    for i = 1, 6 do a:add("ERROR connection to db-" .. i .. " refused") end
    for i = 1, 3 do a:add("ERROR timeout after " .. i .. "s calling auth") end
    a:add("ERROR disk quota exceeded")
    for i = 1, 20 do a:add("INFO served request " .. i) end
    local top = a:top_errors(2)
    expect(#top):to_be(2)
    expect(top[1].template):to_be("ERROR connection to db-<*> refused")
    expect(top[1].count):to_be(6)
    expect(top[1].share):to_be_near(0.6, 1e-9)
    expect(top[2].template):to_be("ERROR timeout after <*> calling auth")
    expect(top[2].count):to_be(3)
    expect(#a:top_errors()):to_be(3)
  end)

  it("finds an error spike in a minute series against the baseline", function()
    local a = vigil.logs.analyser("spec-spike", { spike_min = 5 })
    for _ = 1, 10 do
      a:add("ERROR upstream reset by peer")
      a:add("INFO healthy")
      vigil.sleep(60)
    end
    expect(#a:spikes()):to_be(0)
    local spike_minute = vigil.now() - vigil.now() % 60
    for _ = 1, 12 do a:add("ERROR upstream reset by peer") end
    local s = a:spikes()
    expect(#s):to_be(1)
    expect(s[1].minute):to_be(spike_minute)
    expect(s[1].errors):to_be(12)
    expect(s[1].baseline):to_be_near(1, 1e-9)
    local recs = a:recommendations()
    expect(table.concat(recs, "\n")):to_contain("Error spike at")
    -- an hour later the spike has left the window
    vigil.sleep(3700)
    expect(#a:spikes()):to_be(0)
  end, { timeout = "3h" })

  it("reports a new template once, with when and where it was first seen", function()
    local a = vigil.logs.analyser("spec-new")
    local t0 = vigil.now()
    for i = 1, 5 do a:add("INFO cache warmed in " .. i .. "ms", { service = "web" }) end
    vigil.sleep(30)
    local r
    for i = 1, 4 do
      r = a:add("ERROR TLS handshake failed with peer " .. i, { service = "web" })
    end
    expect(r.error):to_be(true)
    for _, user in ipairs({ "bob", "alice", "carol", "dave", "erin" }) do
      a:add(ssh(user, "10.9.9.9", 22), { service = "sshd" })
    end
    local new = a:new_templates()
    expect(#new):to_be(3)
    expect(new[1].first_seen):to_be(t0)
    expect(new[2].template):to_be("ERROR TLS handshake failed with peer <*>")
    expect(new[2].first_seen):to_be(t0 + 30)
    expect(new[2].service):to_be("web")
    expect(new[3].template):to_be("Failed password for <*> from <*> port <*> ssh2")
    local errs = a:new_templates({ errors = true })
    expect(#errs):to_be(1)
    expect(errs[1].id):to_be(new[2].id)
    expect(#a:new_templates({ since = t0 + 1 })):to_be(2)
    expect(a:template(new[3].id).count):to_be(5) -- the folded templates' counts moved
    local recs = table.concat(a:recommendations(), "\n")
    expect(recs):to_contain("New error pattern in web")
  end)

  it("feeds on Loki results: oldest first, skipping what an earlier feed gave", function()
    local a = vigil.logs.analyser("spec-feed")
    local t0 = vigil.now()
    local ns = function(s) return math.floor((t0 + s) * 1e9) end
    -- as vigil.loki returns them: newest first, ts in ns, the stream's labels
    local entries = {
      { ts = ns(20), line = "ERROR payment declined for order 3", labels = { service = "pay" } },
      { ts = ns(10), line = "ERROR payment declined for order 2", labels = { service = "pay" } },
      { ts = ns(0), line = "INFO started in 3s", labels = { service = "pay" } },
    }
    local added, newest, oldest = a:feed(entries)
    expect(added):to_be(3)
    expect(newest):to_be(t0 + 20)
    expect(oldest):to_be(t0)
    local new = a:new_templates()
    expect(#new):to_be(2)
    expect(new[1].template):to_be("INFO started in <*>") -- the oldest line came first
    expect(new[1].service):to_be("pay")
    expect(new[2].first_seen):to_be(t0 + 10)
    -- the same query a minute later: only the line after the last feed is added
    table.insert(entries, 1, { ts = ns(30), line = "ERROR payment declined for order 4" })
    added, newest = a:feed(entries, { after = newest, service = "pay" })
    expect(added):to_be(1)
    expect(newest):to_be(t0 + 30)
    expect(a:stats().lines):to_be(4)
    expect(a:feed({})):to_be(0)
    expect(function() a:feed("x") end):to_fail("bad argument #1 to 'feed' (table expected")
    expect(function() a:feed({ { ts = 1 } }) end):to_fail("entry 1 has no line")
  end)

  it("finds templates on the rise", function()
    local a = vigil.logs.analyser("spec-trend")
    for _ = 1, 30 do
      a:add("INFO GC pause 12ms")
      a:add("WARN queue depth 100 above soft limit")
      vigil.sleep(60)
    end
    for _ = 1, 20 do a:add("WARN queue depth 100 above soft limit") end
    local t = a:trending()
    expect(#t):to_be(1)
    expect(t[1].template):to_be("WARN queue depth <*> above soft limit")
    expect(t[1].recent):to_be(24)
    expect(t[1].growth):to_be_greater_than(2)
    expect(table.concat(a:recommendations(), "\n")):to_contain("Rising: ")
  end, { timeout = "1h" })

  it("says so when nothing needs doing, and reports everything at once", function()
    local a = vigil.logs.analyser("spec-quiet")
    a:add("INFO all good")
    local recs = a:recommendations()
    expect(#recs):to_be(1)
    expect(recs[1]):to_match("^No action needed: 1 lines, 0 errors")
    local rep = a:report()
    expect(rep.name):to_be("spec-quiet")
    expect(rep.lines):to_be(1)
    expect(rep.error_rate):to_be(0)
    expect(#rep.new_templates):to_be(1)
  end)
end)
