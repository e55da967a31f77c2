-- The AIOps pipeline (lua/vigil/pipeline.lua) on a probe policy whose classes each exercise one
-- rule: enrichment failures are recorded, not fatal; a failing classifier acts on nothing;
-- optional steps; a step that cannot be built stops the plan (fail closed) and brings the
-- escalation forward; group_by; the policy's own guard; templates escaped in queries; known
-- fixes first; on_resolve; load-time validation with file:line.
local T = require("vigil.test")
local memory = require("vigil.memory")

local PROBE = "tests/fixtures/policies/pipeline_probe.lua"

local function probe(queries)
  local fake = {}
  function fake.query(_, q)
    queries[#queries + 1] = q
    return { { labels = {}, value = 0.75 } }
  end
  return fake
end

local function alert(mode, service)
  return { labels = { alertname = "Probe", severity = "warning", mode = mode,
    service = service or "svc" } }
end

local function step_of(rec, name)
  for _, s in ipairs(rec.steps) do
    if s.step == name then return s end
  end
end

describe("the pipeline", function()
  local policy, queries
  before_each(function()
    policy = T.policy(PROBE)
    -- the spec file's store outlives each test: start every test with a fresh guard window
    memory.state("pipeline-probe").set("window", nil)
    queries = {}
    policy.sources.prom = probe(queries)
  end)

  it("records an enrichment that fails and goes on with the rest", function()
    local _, rec = policy:alert(alert("nothing"))
    expect(rec.evidence.load):to_be(0.75)
    expect(step_of(rec, "enrich").errors.broken):to_match("^EINVAL: '{{nope}}'")
    expect(#queries):to_be(1)
  end)

  it("escapes label values inside a query's string literal", function()
    policy:alert(alert("nothing", 'x"} or vector(1) or {a="\n'))
    expect(queries[1]):to_be('load{service="x\\"} or vector(1) or {a=\\"\\n"}')
  end)

  it("acts on nothing when the classifier fails (fail closed), and says so", function()
    local a = alert("raise")
    local _, rec = policy:alert(a)
    expect(step_of(rec, "analyse").error):to_match("the classifier broke")
    expect(rec.actions):to_be_nil()
    expect(rec.summary):to_match("no action")
    expect(memory.escalations(a.incident)[1].state):to_be("pending") -- the escalation stands
  end)

  it("goes past an optional step that fails", function()
    local _, rec = policy:alert(alert("optional"))
    expect(rec.actions[1].state):to_be("failed")
    expect(rec.actions[1].optional):to_be(true)
    expect(rec.actions[2].state):to_be("dry-run")
    expect(rec.summary):to_match("run dry%-run")
  end)

  it("stops the plan at a step it cannot build and escalates now", function()
    local a = alert("stops")
    local t0 = vigil.now()
    local _, rec = policy:alert(a)
    expect(#rec.actions):to_be(1)
    expect(rec.actions[1].error):to_match("missing_label")
    expect(rec.actions[1].stopped):to_be(true)
    local timer = memory.escalations(a.incident)[1]
    expect(timer.level):to_be(1)
    expect(timer.due_at // 1000):to_be(math.floor(t0)) -- brought forward from 15 minutes
  end)

  it("groups alerts by the group_by labels into one subject", function()
    local a = alert("twice", "checkout")
    local _, one = policy:alert(a)
    expect(one.actions[1].state):to_be("dry-run")
    local r = require("vigil.actions").run({ argv = { "/bin/true" }, target = "a-checkout",
      subject = ("incident-%d:group:pipeline-probe:checkout"):format(a.incident) })
    expect(r.state):to_be("dry-run") -- the same key the pipeline used: one action per group
  end)

  it("holds the policy's own guard: at most 3 actions an hour", function()
    local _, first = policy:alert(alert("twice", "a"))
    expect(first.refused):to_be_nil()
    local _, second = policy:alert(alert("twice", "b"))
    expect(second.refused):to_match("^ERATELIMIT: the policy took 2 actions")
    T.clock.advance("61m")
    local _, third = policy:alert(alert("twice", "c"))
    expect(third.refused):to_be_nil()
  end, { timeout = "2h" })

  it("applies a known fix before the policy's own class", function()
    local id = memory.kb.add_fix({ key = "Probe", name = "known-run", who = "spec",
      plan = { { action = "run", argv = { "/bin/true" }, target = "fix-{{service}}" } } })
    memory.kb.fix_outcome(id, true)
    local _, rec = policy:alert(alert("nothing"))
    expect(rec.class):to_be("known_issue")
    expect(rec.known_fix):to_be("known-run")
    expect(rec.plan):to_be("kb:known-run")
    expect(rec.actions[1].state):to_be("dry-run")
    expect(rec.evidence.policy_class):to_be("nothing")
  end)

  it("runs on_resolve when the alert resolves", function()
    local a = alert("nothing", "shop")
    policy:alert(a)
    a.status = "resolved"
    policy:alert(a)
    local last = policy.logs[#policy.logs]
    expect(last.msg):to_be("resolved")
    expect(last.fields.service):to_be("shop")
  end)

  it("refuses a broken v2 policy at load time with the field's line", function()
    expect(function() T.policy("tests/fixtures/policies/pipeline_broken.lua") end)
      :to_fail("pipeline_broken.lua:6: plan.fix[1].action must name an action")
  end)
end)
