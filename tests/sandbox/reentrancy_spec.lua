-- Checklist E20 (notes/reliability-research.md §2.5): re-entrancy. Every host function that
-- takes a Lua callback runs it under a budget: the caller's (sort comparators, gsub
-- replacements, load readers, xpcall handlers) or the task it starts (vigil.spawn,
-- vigil.every, vigil.all). None calls back into Lua outside one.
local sandbox = require("vigil.testing").sandbox
-- Seconds that tell "stopped" from "ran away": a runaway never ends, and a stopped run takes
-- milliseconds, or about a second under AddressSanitizer on a busy CI machine. Not a speed target.
local PROMPT = 10

local BUDGET = { instructions = 2000000, slice = "1h" } -- only the budget may stop these

local function killed(code)
  local r = sandbox(code, BUDGET)
  expect(r.status):to_be("killed")
  expect(r.killed):to_be("instructions")
  expect(r.elapsed):to_be_less_than(PROMPT)
  return r
end

-- The callback runs in a task of its own: the spawned task's budget stops it, and the task
-- that waits on it learns so and is itself unharmed.
local function child_killed(code)
  local r = sandbox(code, BUDGET)
  expect(r.status):to_be("ok")
  expect(r.results[1]):to_be(nil)
  expect(r.results[2]):to_contain("instruction budget exceeded")
  expect(r.elapsed):to_be_less_than(PROMPT)
  return r
end

describe("E20: callbacks from the host's C functions run under the caller's budget", function()
  it("E20: table.sort comparator", function()
    killed("table.sort({ 3, 2, 1 }, function() while true do end end)")
  end)
  it("E20: string.gsub replacement function", function()
    killed("return (('abc'):gsub('%w', function() while true do end end))")
  end)
  it("E20: string.gsub through a __index of the replacement table", function()
    killed([[
      local repl = setmetatable({}, { __index = function() while true do end end })
      return (('abc'):gsub('%w', repl))
    ]])
  end)
  it("E20: load with a reader function that never ends", function()
    killed("return load(function() while true do end end)")
  end)
  it("E20: load with a reader that feeds source forever", function()
    -- the sandbox's load stops reading at its source-size limit
    local r = sandbox("return load(function() return 'x = 1 ' end)", { instructions = 1e8 })
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(nil)
    expect(r.results[2]):to_contain("chunk too large")
  end)
  it("E20: xpcall message handler", function()
    killed("return xpcall(error, function() while true do end end)")
  end)
  it("E20: tostring calling __tostring", function()
    killed("return tostring(setmetatable({}, { __tostring = function() while true do end end }))")
  end)
  it("E20: string.format('%s') calling __tostring", function()
    killed([[
      local t = setmetatable({}, { __tostring = function() while true do end end })
      return string.format('%s', t)
    ]])
  end)
  it("E20: table.concat through __index", function()
    killed([[
      local t = setmetatable({}, { __len = function() return 3 end,
                                   __index = function() while true do end end })
      return table.concat(t)
    ]])
  end)
  it("E20: pairs calling __pairs", function()
    killed([[
      for _ in pairs(setmetatable({}, { __pairs = function() while true do end end })) do end
    ]])
  end)
  it("E20: ipairs through __index", function()
    killed([[
      for _ in ipairs(setmetatable({}, { __index = function() while true do end end })) do end
    ]])
  end)
  it("E20: a __close handler run by the host when the block ends", function()
    killed([[
      do local x <close> = setmetatable({}, { __close = function() while true do end end }) end
    ]])
  end)
end)

describe("E20: callbacks that become tasks get a budget of their own", function()
  it("E20: vigil.spawn", function()
    child_killed("return vigil.wait(vigil.spawn(function() while true do end end))")
  end)
  it("E20: vigil.all", function()
    local r = sandbox([[
      local results, errors = vigil.all{ function() while true do end end, function() return 1 end }
      return results[1], results[2], errors[1], errors[2]
    ]], BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(nil)
    expect(r.results[2]):to_be(1)
    expect(r.results[3]):to_contain("instruction budget exceeded")
    expect(r.results[4]):to_be(nil)
  end)
  it("E20: vigil.every", function()
    local r = sandbox([[
      local ticks = 0
      local job = vigil.every("10ms", function() ticks = ticks + 1 while true do end end)
      vigil.sleep("35ms")
      job:stop()
      return ticks
    ]], BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1] >= 1):to_be(true) -- each tick was stopped, and the next one still came
  end)
  it("E20: a spawned task's callback cannot spend its parent's budget", function()
    local r = sandbox([[
      local t = vigil.spawn(function() for _ = 1, 1500000 do end return "child done" end)
      for _ = 1, 1500000 do end
      return vigil.wait(t)
    ]], BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be("child done")
  end)
end)
