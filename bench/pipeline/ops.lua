-- bench/pipeline/ops.lua: what one pipeline run's store and executor calls cost, fed to
-- `vigil repl --attach` of the latency phase's daemon by bench/pipeline/run (after its runs, so
-- the knowledge base holds their incidents). Each call is timed N times one after the other
-- (its latency: what a run waits for) and N times all at once (its cost per call when many
-- runs overlap: writes then share group commits). vigil.now() has millisecond precision, so a
-- call is timed in aggregate: total / N. Prints one line per call:
--   OP name seq_ms par_ms
-- The whole script is one chunk (one REPL statement), so it needs no globals.
-- luacheck: read_globals vigil
do
  local memory = require("vigil.memory")
  local N = 50
  local state = memory.state("bench-ops")
  local tag = ("%d"):format(math.floor(vigil.now() * 1000))
  local incident = 1 -- opened by the latency phase's first alert
  local alert = { name = "PodCPUSaturation", incident = incident, fingerprint = "ops" .. tag,
    labels = { alertname = "PodCPUSaturation", severity = "warning", resource = "cpu",
      namespace = "ops-" .. tag, pod = "api1-7d9f5c-x0001" },
    annotations = { summary = "pipeline benchmark alert" } }
  local ops = {
    { "kb.fixes (read)", function() return memory.kb.fixes("PodCPUSaturation", 3) end },
    { "kb.similar (read)", function()
      return memory.kb.similar({ alert = alert, exclude = incident, limit = 3 })
    end },
    { "state.get (read)", function(i) return state.get("k" .. i) end },
    { "state.set (write)", function(i) return state.set("k" .. i, vigil.now(), "1h") end },
    { "note (write)", function()
      return memory.note(incident, "bench-ops", { who = "bench", detail = { n = 1 } })
    end },
    { "kb.learn (write)", function()
      return memory.kb.learn({ incident = incident, alertname = alert.name,
        labels = alert.labels, text = memory.kb.text_of(alert) })
    end },
    { "escalate (write)", function(i)
      return memory.escalate({ incident = incident, policy = "bench-ops", level = i,
        name = "ops", due_at = vigil.now() + 86400 })
    end },
    { "notify dry-run (ledger)", function(i)
      return vigil.actions.notify({ to = "team", text = "ops",
        subject = ("ops-%s-n%d"):format(tag, i) })
    end },
    { "scale, current given (ledger)", function(i)
      return vigil.actions.scale({ kind = "deployment", name = "api", namespace = "ops-" .. i,
        replicas = "+20%", max = 10, current = 2, subject = ("ops-%s-s%d"):format(tag, i) })
    end },
    { "kubectl get (sandboxed spawn)", function(i)
      return vigil.actions.kube_get({ kind = "deployment", name = "api", namespace = "ops-" .. i })
    end },
  }
  for round, o in ipairs(ops) do
    local name, fn = o[1], o[2]
    local base = round * 1000 -- distinct keys and levels per call
    local t0 = vigil.now()
    for i = 1, N do fn(base + i) end
    local seq = (vigil.now() - t0) * 1000 / N
    local fns = {}
    for i = 1, N do fns[i] = function() return fn(base + 500 + i) or true end end
    t0 = vigil.now()
    vigil.all(fns)
    local par = (vigil.now() - t0) * 1000 / N
    print(("OP %s|%.2f|%.2f"):format(name, seq, par))
  end
end
