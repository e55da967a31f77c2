-- Checklist B (notes/reliability-research.md §2.5): CPU. Every loop is stopped by the
-- instruction budget, wherever it hides; C-level work is bounded or charged.
local sandbox = require("vigil.testing").sandbox
-- Seconds that tell "stopped" from "ran away": a runaway never ends, and a stopped run takes
-- milliseconds, or about a second under AddressSanitizer on a busy CI machine. Not a speed target.
local PROMPT = 10

local BUDGET = { instructions = 2000000, slice = "1h" } -- only the budget may stop these

local function killed(code, opts)
  local r = sandbox(code, opts or BUDGET)
  expect(r.status):to_be("killed")
  expect(r.killed):to_be("instructions")
  expect(r.elapsed):to_be_less_than(PROMPT)
  return r
end

describe("B8: plain loops", function()
  it("B8: while true do end", function() killed("while true do end") end)
  it("B8: tail-call loop", function() killed("local function f() return f() end return f()") end)
  it("B8: repeat until false", function() killed("repeat until false") end)
  it("B8: goto loop", function() killed("::top:: goto top") end)
  it("B8: numeric for over a huge range", function()
    killed("for i = 1, math.maxinteger do end")
  end)
end)

describe("B9: protected calls cannot swallow the kill", function()
  it("B9: pcall around a loop", function()
    killed("local ok = pcall(function() while true do end end) return 'escaped', ok")
  end)
  it("B9: nested pcall", function()
    killed("pcall(pcall, pcall, function() while true do end end) return 'escaped'")
  end)
  it("B9: while true do pcall(loop) end", function()
    killed("while true do pcall(function() while true do end end) end")
  end)
  it("B9: xpcall with a handler that returns normally", function()
    killed("while true do xpcall(function() while true do end end, function(e) return e end) end")
  end)
  it("B9: error objects cannot pass for the kill", function()
    local r = sandbox("local ok, e = pcall(error, 'x') return ok, e", BUDGET)
    expect(r.results):to_equal({ false, "x" })
  end)
  it("B9: raw coroutines are not there to swallow yields or errors", function()
    local r = sandbox("return coroutine.wrap(function() while true do end end)()", BUDGET)
    expect(r.status):to_be("error")
    expect(r.error):to_contain("undefined global 'coroutine'")
  end)
end)

describe("B10: loops in handlers, metamethods and callbacks", function()
  it("B10: loop inside an xpcall message handler", function()
    killed("xpcall(function() error('x') end, function() while true do end end)")
  end)
  it("B10: xpcall handler looping after a budget error", function()
    killed("xpcall(function() while true do end end, function() while true do end end)")
  end)
  local metamethods = {
    __index = "local t = setmetatable({}, {__index = function() while true do end end}) return t.x",
    __newindex = [[local t = setmetatable({}, {__newindex = function() while true do end end})
      t.x = 1]],
    __eq = [[local mt = {__eq = function() while true do end end}
      local a, b = setmetatable({}, mt), setmetatable({}, mt) return a == b]],
    __lt = [[local mt = {__lt = function() while true do end end}
      return setmetatable({}, mt) < setmetatable({}, mt)]],
    __concat = "return setmetatable({}, {__concat = function() while true do end end}) .. 'x'",
    __len = "return #setmetatable({}, {__len = function() while true do end end})",
    __call = "return setmetatable({}, {__call = function() while true do end end})()",
    __tostring = [[return tostring(setmetatable({},
      {__tostring = function() while true do end end}))]],
    __pairs = [[for _ in pairs(setmetatable({}, {__pairs = function() while true do end end}))
      do end]],
    __close = [[do local x <close> = setmetatable({}, {__close = function() while true do end end})
      end]],
    __unm = "return -setmetatable({}, {__unm = function() while true do end end})",
  }
  for name, code in pairs(metamethods) do
    it("B10: loop inside " .. name, function() killed(code) end)
  end
  it("B10: __close looping while the kill unwinds", function()
    killed([[local x <close> = setmetatable({}, {__close = function() while true do end end})
      while true do end]])
  end)
  it("B10: loop inside a table.sort comparator", function()
    killed("table.sort({3, 2, 1}, function() while true do end end)")
  end)
  it("B10: loop inside a string.gsub replacement function", function()
    killed("return ('abc'):gsub('.', function() while true do end end)")
  end)
  it("B10: loop inside a load reader function", function()
    killed("load(function() while true do end end)")
  end)
end)

describe("B11: finalizers", function()
  it("B11: __gc metamethods are refused", function()
    local r = sandbox("setmetatable({}, {__gc = function() while true do end end})", BUDGET)
    expect(r.status):to_be("error")
    expect(r.error):to_contain("__gc metamethods are not allowed")
  end)
  it("B11: __gc hidden behind __index of the metatable is found (raw check)", function()
    local r = sandbox([[
      local mt = setmetatable({}, {__index = function() return nil end})
      rawequal(mt, mt)
      local proto = {__gc = function() while true do end end}
      setmetatable(proto, nil)
      return pcall(setmetatable, {}, proto)]], BUDGET)
    expect(r.results[1]):to_be(false)
    expect(r.results[2]):to_contain("__gc")
  end)
  it("B11: __gc added to the metatable afterwards never runs", function()
    local r = sandbox([[
      local mt = {}
      local t = setmetatable({}, mt)
      mt.__gc = function() while true do end end
      t = nil
      local junk = {} for i = 1, 200000 do junk[i] = {i} end
      return "finished"]], BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be("finished")
  end)
  it("B11: weak tables with finalizers are refused too", function()
    local r = sandbox("setmetatable({}, {__mode = 'k', __gc = print})", BUDGET)
    expect(r.status):to_be("error")
    expect(r.error):to_contain("__gc")
  end)
end)

describe("B12: code defined in one phase, run in another", function()
  it("B12: a function loaded earlier is still under the budget when called later", function()
    killed("local f = load('while true do end') vigil.sleep(0) f()")
  end)
  it("B12: a spawned child task has its own budget and is stopped", function()
    local r = sandbox([[local t = vigil.spawn(function() while true do end end)
      local v, err = vigil.wait(t) return v, err]], BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[2]):to_contain("ETASK: killed: instruction budget exceeded")
  end)
end)

describe("B13: C-level CPU", function()
  local patterns = { ".-.-.-b", ".-.-.-.-b", "^(.-)%-(.-)%-(.-)%-prod$", "(.-)%1", "%b()" }
  for _, size in ipairs({ 1024, 4096, 65536 }) do
    for _, p in ipairs(patterns) do
      it(("B13: pattern %q on %d bytes fails fast"):format(p, size), function()
        local subject = p == "%b()" and ("("):rep(size) or ("x-"):rep(size // 2)
        local r = sandbox("local s, p = ... return s:find(p)", { args = { subject, p } })
        expect(r.elapsed):to_be_less_than(PROMPT)
        if r.status ~= "ok" then
          expect(r.error):to_contain("pattern too complex for the step budget")
        end
      end)
    end
  end
  it("B13: every pattern function is bounded", function()
    for _, call in ipairs({ "s:find(p)", "s:match(p)", "s:gsub(p, '')",
                            "(function() for m in s:gmatch(p) do end end)()" }) do
      local r = sandbox("local s, p = ... return " .. call,
        { args = { ("a"):rep(300), ".-.-.-.-b" } })
      expect(r.status):to_be("error")
      expect(r.error):to_contain("step budget")
      expect(r.elapsed):to_be_less_than(PROMPT)
    end
  end)
  it("B13: pattern steps count against the task's instructions", function()
    local r = sandbox([[local s = ("a"):rep(200)
      while true do pcall(string.find, s, ".-.-.-b") end]],
      { instructions = 20000000, slice = "1h" })
    expect(r.status):to_be("killed")
    expect(r.elapsed):to_be_less_than(PROMPT)
  end)
  it("B13: string.rep with a large count and separator hits the memory cap", function()
    local r = sandbox("return #string.rep('x', 1 << 25, ',')", { memory = 32 << 20 })
    expect(r.status):to_be("killed")
    expect(r.killed):to_be("memory")
  end)
  it("B13: string.rep beyond the largest string is refused before any work", function()
    local r = sandbox("return #string.rep('x', 1 << 30, ',')", { memory = 32 << 20 })
    expect(r.status):to_be("error")
    expect(r.error):to_contain("resulting string too large")
  end)
  -- regression: Lua's str_rep loops n times in C even when every copy is empty
  for _, code in ipairs({ "string.rep('', 2^40)", "string.rep('', math.maxinteger, '')",
                          "(''):rep(1 << 50)" }) do
    it("B13: " .. code .. " returns '' at once", function()
      local r = sandbox("return " .. code, BUDGET)
      expect(r.status):to_be("ok")
      expect(r.results[1]):to_be("")
      expect(r.elapsed):to_be_less_than(PROMPT)
    end)
  end
  it("B13: string.rep keeps its results", function()
    local r = sandbox("return string.rep('ab', 3, ','), string.rep('x', 0), string.rep('', 3, '-')")
    expect(r.results):to_equal({ "ab,ab,ab", "", "--" })
  end)
  -- regression: these loop in C over a range (or a __len) the caller picks, without growing
  -- memory; each call is charged its element count up front
  local ranges = {
    ["table.move of 2^40 nils"] = "table.move({}, 1, 2^40, 1)",
    ["table.move over the whole integer range"] =
      "table.move({}, math.mininteger, math.maxinteger, 1)",
    ["table.remove with a huge __len"] =
      "table.remove(setmetatable({}, {__len = function() return 2^40 end}), 1)",
    ["table.insert with a huge __len"] =
      "table.insert(setmetatable({}, {__len = function() return 2^40 end}), 1, 0)",
    ["table.concat of C-made empty strings"] = [[
      local t = setmetatable({}, {__len = rawlen, __index = table.concat})
      return table.concat(t, "", 1, 2^40)]],
    ["table.sort of virtual elements"] = [[
      local t = setmetatable({}, {__len = function() return 2^28 end,
                                  __index = rawlen, __newindex = rawlen})
      table.sort(t)]],
  }
  for name, code in pairs(ranges) do
    it("B13: " .. name .. " is killed before it starts", function()
      local r = killed(code)
      expect(r.instructions):to_be_greater_than(BUDGET.instructions)
    end)
  end
  it("B13: table functions keep their results", function()
    local r = sandbox([[local t = {1, 2, 3} table.insert(t, 1, 0) table.insert(t, 9)
      local x = table.remove(t, 1)
      return table.concat(t, ","), x, table.concat(table.move({1, 2, 3}, 1, 3, 2), ",")]], BUDGET)
    expect(r.results):to_equal({ "1,2,3,9", 0, "1,1,2,3" })
  end)
  it("B13: a million-element sort is charged to the budget", function()
    local fill = "local t = {} for i = 1, 1000000 do t[i] = -i end "
    local plain = sandbox(fill .. "return t[1]", { instructions = 1e8 })
    local sorted = sandbox(fill .. "table.sort(t) return t[1]", { instructions = 1e8 })
    expect(sorted.results[1]):to_be(-1000000)
    expect(sorted.instructions - plain.instructions):to_be_greater_than(8000000 - 1)
    local r = sandbox(fill .. "table.sort(t) return t[1]",
      { instructions = plain.instructions + 4000000 })
    expect(r.status):to_be("killed")
    expect(r.killed):to_be("instructions")
  end)
  it("B13: string.format widths are capped at two digits", function()
    local r = sandbox("return string.format('%99.99f', 1e308)")
    expect(r.status):to_be("ok")
    expect(#r.results[1]):to_be(409)
    r = sandbox("return string.format('%100d', 1)")
    expect(r.status):to_be("error")
    expect(r.error):to_contain("invalid conversion")
  end)
  it("B13: utf8.len on a large string is quick", function()
    local r = sandbox("return utf8.len(('é'):rep(1 << 20))")
    expect(r.results[1]):to_be(1 << 20)
    expect(r.elapsed):to_be_less_than(PROMPT)
  end)
end)
