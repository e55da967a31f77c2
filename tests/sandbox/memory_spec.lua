-- Checklist C (notes/reliability-research.md §2.5): memory. Every way to grow memory ends at
-- the VM's cap with an uncatchable kill, and an allocation failure anywhere (fault injection,
-- as SQLite does it) is a clean outcome that leaves the host usable.
local sandbox = require("vigil.testing").sandbox
-- Seconds that tell "stopped" from "ran away": a runaway never ends, and a stopped run takes
-- milliseconds, or about a second under AddressSanitizer on a busy CI machine. Not a speed target.
local PROMPT = 10

local CAP = { memory = 16 << 20, instructions = 1e8 }

local function out_of_memory(code)
  local r = sandbox(code, CAP)
  expect(r.status):to_be("killed")
  expect(r.killed):to_be("memory")
  expect(r.error):to_contain("memory limit reached")
  expect(r.memory_peak):to_be_less_than(CAP.memory + 1)
  expect(r.elapsed):to_be_less_than(PROMPT)
  return r
end

describe("C14: growth stops at the cap", function()
  it("C14: string.rep to 1 GiB", function()
    out_of_memory("return #string.rep('x', (1 << 30) - 1)")
  end)
  it("C14: string.rep with a separator", function()
    out_of_memory("return #string.rep('x', 1 << 24, 'yy')")
  end)
  it("C14: table growth", function()
    out_of_memory("local t = {} for i = 1, 1e9 do t[i] = i end")
  end)
  it("C14: hash growth", function()
    out_of_memory("local t = {} for i = 1, 1e9 do t['k' .. i] = true end")
  end)
  it("C14: closure explosion", function()
    out_of_memory("local t = {} for i = 1, 1e9 do t[i] = function() return i end end")
  end)
  it("C14: string concatenation bomb", function()
    out_of_memory("local s = 'x' while true do s = s .. s end")
  end)
  it("C14: table.concat of a growing table", function()
    out_of_memory([[local t = {}
      for i = 1, 1e9 do t[i] = 'abcdefgh' if i % 100000 == 0 then table.concat(t) end end]])
  end)
  it("C14: pcall swallowing out-of-memory in a loop", function()
    out_of_memory([[local keep = {}
      while true do pcall(function() keep[#keep + 1] = ('x'):rep(1 << 20) end) end]])
  end)
  it("C14: xpcall handler cannot swallow it either", function()
    out_of_memory([[local keep = {}
      local function grow() keep[#keep + 1] = ('x'):rep(1 << 20) end
      while true do xpcall(grow, function(e) return e end) end]])
  end)
  it("C14: deep Lua recursion under a small cap hits the cap", function()
    out_of_memory("local function f(n) return 1 + f(n + 1) end return f(1)")
  end)
  it("C14: deep Lua recursion under the default cap is a clean stack overflow", function()
    local r = sandbox("local function f(n) return 1 + f(n + 1) end return f(1)",
      { memory = 64 << 20, instructions = 1e8 })
    expect(r.status):to_be("error")
    expect(r.error):to_contain("stack overflow")
  end)
  it("C14: the cap is the VM's, not the run's: a run under it succeeds", function()
    local r = sandbox("local t = {} for i = 1, 10000 do t[i] = i end return #t", CAP)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(10000)
    expect(r.memory_peak):to_be_greater_than(10000 * 8)
  end)
end)

describe("C15: allocation failure anywhere is a clean outcome", function()
  local CODE = [[local t = {} for i = 1, 20 do t[i] = { i, tostring(i) } end
    local ok, e = pcall(error, "x") return #t, ok, e]]
  it("C15: fail_alloc_at = 1..200: killed, refused or ok, and the host keeps working", function()
    local outcomes = { ok = 0, killed = 0, refused = 0 }
    for n = 1, 200 do
      local ok, r = pcall(sandbox, CODE, { fail_alloc_at = n })
      if not ok then
        expect(r):to_contain("cannot start the sandbox task")
        outcomes.refused = outcomes.refused + 1
      elseif r.status == "ok" then
        expect(r.results):to_equal({ 20, false, "x" })
        outcomes.ok = outcomes.ok + 1
      else
        expect(r.status):to_be("killed")
        expect(r.killed):to_be("memory")
        expect(r.error):to_contain("fault injection from allocation " .. n)
        outcomes.killed = outcomes.killed + 1
      end
      -- the next run, without injection, is unaffected
      local after = sandbox("return 1 + 1")
      expect(after.status):to_be("ok")
      expect(after.results[1]):to_be(2)
    end
    expect(outcomes.refused):to_be_greater_than(0)
    expect(outcomes.killed):to_be_greater_than(0)
    expect(outcomes.ok):to_be_greater_than(0)
    expect(outcomes.ok + outcomes.killed + outcomes.refused):to_be(200)
  end)
  it("C15: a failure while building the error message is still a clean kill", function()
    for n = 1, 60 do
      local ok, r = pcall(sandbox, "error(('e'):rep(100) .. tostring({}))", { fail_alloc_at = n })
      if ok then
        expect(r.status == "killed" or r.status == "error"):to_be(true)
        if r.status == "error" then expect(r.error):to_contain("eeee") end
      end
    end
  end)
end)
