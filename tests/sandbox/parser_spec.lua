-- Checklist D (notes/reliability-research.md §2.5): stack and parser. Source text from a
-- policy or from an alert that it passes to load() is refused cleanly when it is too deep,
-- too large or too wide, and never takes long: the parser runs in C, out of the hook's reach.
local sandbox = require("vigil.testing").sandbox
-- Seconds that tell "stopped" from "ran away": a runaway never ends, and a stopped run takes
-- milliseconds, or about a second under AddressSanitizer on a busy CI machine. Not a speed target.
local PROMPT = 10

local BUDGET = { instructions = 1e8 }

-- Runs load(<expr>) in the sandbox; returns what load returned (function or nil, message).
local function load_of(expr)
  local r = sandbox("local f, e = load(" .. expr .. ") return f, e", BUDGET)
  expect(r.status):to_be("ok")
  expect(r.elapsed):to_be_less_than(PROMPT)
  return r.results[1], r.results[2]
end

describe("D16: deep source", function()
  for name, expr in pairs({
    ["1e5 nested parens"] = "'return ' .. ('('):rep(1e5) .. '1' .. (')'):rep(1e5)",
    ["1e5 nested table constructors"] = "'return ' .. ('{'):rep(1e5) .. ('}'):rep(1e5)",
    ["1e5 chained .."] = "'return ' .. ('\"a\" .. '):rep(1e5) .. '\"a\"'",
    ["1e5 nested functions"] = "('function f() '):rep(1e5) .. ('end '):rep(1e5)",
    ["1e5 nested blocks"] = "('do '):rep(1e5) .. ('end '):rep(1e5)",
  }) do
    it("D16: " .. name .. " is refused", function()
      local f, err = load_of(expr)
      expect(f):to_be_nil()
      expect(err):to_match("stack overflow")
    end)
  end
  it("D16: 300 nested table constructors still load", function()
    local f, err = load_of("'return ' .. ('{'):rep(150) .. ('}'):rep(150)")
    expect(f):to_be("<function>")
    expect(err):to_be_nil()
  end)
end)

describe("D16: wide and large source", function()
  it("D16: more than 200 locals", function()
    local _, err = load_of("('local a = 1 '):rep(300)")
    expect(err):to_contain("too many local variables")
  end)
  it("D16: more than 255 upvalues", function()
    local _, err = load_of([[(function()
      local t = {}
      for i = 1, 150 do t[#t + 1] = 'local a' .. i .. ' = 1' end
      t[#t + 1] = 'local function g() do'
      for i = 1, 150 do t[#t + 1] = 'local b' .. i .. ' = 1' end
      t[#t + 1] = 'return function() return 0'
      for i = 1, 150 do t[#t + 1] = '+ a' .. i .. ' + b' .. i end
      t[#t + 1] = 'end end end'
      return table.concat(t, ' ')
    end)()]])
    expect(err):to_contain("upvalues")
  end)
  it("D16: a 2 MB single line loads and runs", function()
    local r = sandbox("return load('return ' .. ('1+'):rep(1e6) .. '1')()", BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(1000001)
  end)
  it("D16: source over the 4 MiB limit is refused before parsing", function()
    local f, err = load_of("('x'):rep(5 << 20)")
    expect(f):to_be_nil()
    expect(err):to_be("chunk too large")
  end)
  it("D16: a reader function cannot exceed the limit piecewise", function()
    local f, err = load_of("function() return ('-- filler\\n'):rep(1 << 16) end")
    expect(f):to_be_nil()
    expect(err):to_be("chunk too large")
  end)
  it("D16: huge numeric literals", function()
    local r = sandbox("return load('return ' .. ('9'):rep(1e5))(), load('return 1e99999')()",
      BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(math.huge)
    expect(r.results[2]):to_be(math.huge)
  end)
  it("D16: long brackets of every level", function()
    local r = sandbox([===[local eq = ('='):rep(5000)
      local src = 'return [' .. eq .. '[ ]] ]==] ]' .. eq .. ']'
      return load(src)()]===], BUDGET)
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be(" ]] ]==] ")
  end)
  it("D16: an unfinished long string is a syntax error", function()
    local f, err = load_of("'return [==[' .. ('x'):rep(1e6)")
    expect(f):to_be_nil()
    expect(err):to_contain("unfinished long string")
  end)
  it("D16: 50 000 gotos and labels are refused quickly", function()
    local f, err = load_of([[(function()
      local t = {}
      for i = 1, 50000 do t[#t + 1] = 'goto L' .. i end
      for i = 1, 50000 do t[#t + 1] = '::L' .. i .. '::' end
      return table.concat(t, ' ')
    end)()]])
    expect(f):to_be_nil()
    expect(err):to_contain("too many labels/gotos")
  end)
end)

describe("D16: stack depth at run time", function()
  it("D16: gsub with a recursive replacement function", function()
    local r = sandbox([[local function rec(c) return (c:gsub('.', rec)) end
      return rec('x')]], BUDGET)
    expect(r.status):to_be("error")
    expect(r.error):to_match("stack overflow")
  end)
  it("D16: sort comparator recursing through table.sort", function()
    local r = sandbox([[local function cmp(a, b) table.sort({2, 1}, cmp) return a < b end
      table.sort({2, 1}, cmp)]], BUDGET)
    expect(r.status):to_be("error")
    expect(r.error):to_match("stack overflow")
  end)
end)
