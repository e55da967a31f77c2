-- Spec of vigil.actions as `vigil test` runs it: the executor in dry-run with the spec file's
-- own store. Dry-run returns the exact command and what the guard rails would say, recorded
-- in the ledger with the incident it belongs to; observe records the decision only; a policy
-- or an action may lower the mode but never raise it; hostile label values are refused before any
-- command exists; conditions are checked before the engine sees the action; read-only runs
-- are limited to commands that read.
local actions = vigil.actions

local ALERT = { labels = { alertname = "HighCPU", deployment = "web", namespace = "prod" },
  fingerprint = "0123456789abcdef", starts_at = 1700000000, incident = 7 }

describe("vigil.actions in dry-run (the default mode)", function()
  it("records the decision in the ledger with the incident it belongs to", function()
    local T = require("vigil.test")
    local a = T.ingest({ labels = { alertname = "HighCPU", deployment = "api",
      namespace = "prod" } })
    local r = assert(actions.restart({ alert = a, kind = "deployment", name = "api",
      namespace = "prod" }))
    local report = assert(require("vigil.memory").report(a.incident))
    expect(#report.actions):to_be(1)
    expect(report.actions[1].id):to_be(r.id)
    expect(report.actions[1].state):to_be("dry-run")
  end)

  it("returns the exact argv of a restart and does not run it", function()
    local r = assert(actions.restart({ alert = ALERT, kind = "deployment", name = "web",
      namespace = "prod", why = "crash looping" }))
    expect(r.state):to_be("dry-run")
    expect(r.mode):to_be("dry-run")
    expect(r.would):to_be("allowed")
    expect(r.code):to_be_nil()
    -- policy / subject (the incident) / type / target
    expect(r.key):to_match("actions_spec%.lua/incident%-7/restart/prod/deployment/web$")
  end)

  it("builds the argv with the kubectl path first", function()
    local r = assert(actions.run({ argv = { "/usr/bin/systemctl", "restart", "nginx" },
      target = "nginx" }))
    expect(r.state):to_be("dry-run")
    expect(r.id):to_be_greater_than(0) -- each spec file has a store of its own
  end)

  it("scales to an absolute count within bounds without reading anything", function()
    local r = assert(actions.scale({ alert = ALERT, kind = "deployment", name = "web",
      namespace = "prod", replicas = 50, max = 10 }))
    expect(r.state):to_be("dry-run")
    expect(r.replicas):to_be(10)
  end)

  it("sends notifications through the same engine", function()
    local r = assert(actions.webhook({ url = "http://127.0.0.1:9/hook",
      payload = { text = "hello" } }))
    expect(r.state):to_be("dry-run")
  end)
end)

describe("modes", function()
  it("observe records the decision only", function()
    local r = assert(actions.restart({ alert = ALERT, kind = "deployment", name = "web",
      namespace = "prod", mode = "observe" }))
    expect(r.state):to_be("observed")
    expect(r.would):to_be_nil()
  end)

  it("an action cannot raise the mode: enforce asked, dry-run given", function()
    local r = assert(actions.restart({ alert = ALERT, kind = "deployment", name = "web",
      namespace = "prod", mode = "enforce" }))
    expect(r.state):to_be("dry-run")
  end)

  it("refuses a mode that does not exist", function()
    expect(function()
      actions.execute({ type = "run", target = "x", argv = { "/bin/true" }, mode = "yolo" })
    end):to_fail("mode must be observe, dry-run or enforce")
  end)
end)

describe("requests the engine refuses", function()
  it("needs a target: never 'all'", function()
    local r, err = actions.execute({ type = "run", target = "", argv = { "/bin/true" } })
    expect(r):to_be_nil()
    expect(err):to_match("^EINVAL: an action needs a type and a non%-empty target")
  end)

  it("runs a process or a request, not both", function()
    local r, err = actions.execute({ type = "x", target = "t", argv = { "/bin/true" },
      url = "http://127.0.0.1:9/" })
    expect(r):to_be_nil()
    expect(err):to_match("either a process")
  end)

  it("refuses header lines with CR or LF", function()
    expect(function()
      actions.execute({ type = "x", target = "t", url = "http://127.0.0.1:9/",
        headers = { "X: a\r\nInjected: yes" } })
    end):to_fail("CR or LF")
  end)

  it("refuses environment names that are not names", function()
    expect(function()
      actions.execute({ type = "x", target = "t", argv = { "/bin/true" },
        env = { ["LD_PRELOAD=x;"] = "1" } })
    end):to_fail("action.env")
  end)

  it("lets only reading commands run read-only", function()
    local r = assert(actions.execute({ type = "read", target = "t", read_only = true,
      argv = { "/usr/bin/kubectl", "delete", "deployment", "web" } }))
    expect(r.state):to_be("refused")
    expect(r.error):to_match("^EDENIED: ")
  end)
end)

describe("hostile alert content", function()
  local hostile = { "--kubeconfig=/tmp/x", "web; rm -rf /", "$(id)", "`id`", "web\nx",
    "../../etc", ("a"):rep(100000), "wеb" --[[ Cyrillic e ]] }
  for _, name in ipairs(hostile) do
    it("refuses " .. name:sub(1, 24):gsub("\n", "\\n") .. " before any command exists", function()
      local r, err = actions.restart({ alert = ALERT, kind = "deployment", name = name,
        namespace = "prod" })
      expect(r):to_be_nil()
      expect(err):to_match("^EINVAL: ")
    end)
  end
end)

describe("conditions", function()
  it("stop the action before the engine sees it", function()
    local seen = false
    local r = assert(actions.restart({ alert = ALERT, kind = "deployment", name = "web",
      namespace = "prod", conditions = {
        function() seen = true; return true end,
        function() return false, "the deployment is already rolling out" end,
      } }))
    expect(seen):to_be(true)
    expect(r.state):to_be("skipped")
    expect(r.error):to_be("ECONDITION: the deployment is already rolling out")
  end)
end)

describe("vigil.exec.run", function()
  it("is an action: dry-run by default, with the state to say so", function()
    local r = assert(vigil.exec.run({ "/bin/echo", "hi" }, { timeout = "5s" }))
    expect(r.state):to_be("dry-run")
  end)
end)

describe("the operator switches", function()
  it("the kill switch refuses every action but notifications", function()
    expect(actions.kill_switch()):to_be(false)
    assert(actions.kill_switch(true, "spec", "testing"))
    expect(actions.kill_switch()):to_be(true)
    local r = assert(actions.restart({ alert = ALERT, kind = "deployment", name = "web",
      namespace = "prod" }))
    expect(r.state):to_be("dry-run")
    expect(r.would):to_match("^EKILLSWITCH")
    local n = assert(actions.webhook({ url = "http://127.0.0.1:9/hook", payload = {} }))
    expect(n.would):to_be("allowed")
    assert(actions.kill_switch(false))
  end)

  it("counts what happened", function()
    local s = actions.stats()
    expect(s.dry_run > 0):to_be(true)
    expect(s.kill_switch):to_be(false)
  end)
end)

describe("vigil.heal", function()
  it("runs steps in order and stops at the first that fails", function()
    local order = {}
    local run = vigil.heal.run({ name = "web", alert = ALERT, steps = {
      { name = "restart", run = function()
        order[#order + 1] = "restart"
        return vigil.actions.restart({ alert = ALERT, kind = "deployment", name = "web",
          namespace = "prod" })
      end },
      { name = "broken", run = function() order[#order + 1] = "broken"; error("no luck") end },
      { name = "never", run = function() order[#order + 1] = "never"; return true end },
    } })
    expect(order):to_equal({ "restart", "broken" })
    expect(run.status):to_be("failed")
    expect(run.steps[1].state):to_be("dry-run")
    expect(run.steps[2].state):to_be("failed")
    expect(run.error):to_match("^broken: ESTEP: ")
  end)

  it("skips verification when the steps were only rehearsed", function()
    local run = vigil.heal.run({ name = "web", steps = {
      function() return vigil.actions.restart({ kind = "deployment", name = "web",
        namespace = "prod" }) end,
    }, verify = function() error("not reached") end })
    expect(run.status):to_be("succeeded")
    expect(run.rehearsal):to_be(true)
    expect(run.verified):to_match("^skipped")
  end)

  it("fails a run whose verification does not hold in time (on the virtual clock)", function()
    local checks = 0
    local t0 = vigil.now()
    local run = vigil.heal.run({ name = "web", steps = { function() return true end },
      verify = { within = "2m", every = "30s",
        client = { query = function() checks = checks + 1; return {} end }, query = "up == 1" } })
    expect(run.status):to_be("failed")
    expect(run.error):to_match("^EVERIFY: did not hold within 120s")
    expect(checks):to_be(5)
    expect(vigil.now() - t0):to_be(120)
  end)

  it("succeeds once the verification holds", function()
    local n = 0
    local run = vigil.heal.run({ name = "web", steps = { function() return true end },
      verify = function() n = n + 1; return n >= 3, "ready" end })
    expect(run.status):to_be("succeeded")
    expect(run.steps[#run.steps].name):to_be("verify")
  end)
end)

describe("local suppressions", function()
  it("refuse matchers that could match everything", function()
    local r, err = vigil.actions.suppress({ matchers = {} })
    expect(r):to_be_nil()
    expect(err):to_match("^EINVAL")
  end)

  it("take an alert's labels, in force at once", function()
    local r = assert(vigil.actions.suppress({ alert = ALERT, by = { "alertname", "deployment" },
      duration = "1h", reason = "known issue" }))
    expect(r.state):to_be("done")
    expect(r.matchers):to_be('{alertname="HighCPU",deployment="web"}')
    expect(vigil.actions.stats().suppressions):to_be(1)
  end)
end)
