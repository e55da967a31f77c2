-- Spec of vigil.inspect: deterministic text for any value, sorted keys, cycles marked, depth and
-- width capped, and never a metamethod run.
local inspect = vigil.inspect

local function compact(v, opts)
  opts = opts or {}
  opts.compact = true
  return inspect(v, opts)
end

describe("vigil.inspect", function()
  it("renders scalars", function()
    expect(inspect(nil)):to_be("nil")
    expect(inspect(true)):to_be("true")
    expect(inspect(42)):to_be("42")
    expect(inspect(-7)):to_be("-7")
    expect(inspect(1.5)):to_be("1.5")
    expect(inspect(0.1)):to_be("0.10000000000000001")
    expect(inspect(0 / 0)):to_be("0/0")
    expect(inspect(1 / 0)):to_be("math.huge")
    expect(inspect(-1 / 0)):to_be("-math.huge")
    expect(inspect("x")):to_be('"x"')
    expect(inspect("a\nb")):to_be('"a\\nb"')
    expect(inspect('q"uote')):to_be('"q\\"uote"')
    expect(inspect(print)):to_be("<function>")
  end)

  it("renders lists then keys in sorted order, one line with compact", function()
    expect(compact({ 1, 2 })):to_be("{ 1, 2, }")
    expect(compact({ b = 1, a = "x" })):to_be('{ a = "x", b = 1, }')
    expect(compact({})):to_be("{}")
    expect(compact({ "x", "y", z = true, [10] = 10, [2.5] = 0 }))
      :to_be('{ "x", "y", [2.5] = 0, [10] = 10, z = true, }')
    expect(compact({ ["with space"] = 1, ["1abc"] = 2, _ok = 3, ["a.b"] = 4 }))
      :to_be('{ ["1abc"] = 2, _ok = 3, ["a.b"] = 4, ["with space"] = 1, }')
  end)

  it("is deterministic whatever the insertion order", function()
    local a, b = {}, {}
    for i = 1, 50 do a["k" .. i] = i end
    for i = 50, 1, -1 do b["k" .. i] = i end
    expect(inspect(a)):to_be(inspect(b))
  end)

  it("indents nested tables", function()
    expect(inspect({ a = { b = 1 }, 2 })):to_be("{\n  2,\n  a = {\n    b = 1,\n  },\n}")
    expect(inspect({ a = { 1 } }, { indent = "\t" })):to_be("{\n\ta = {\n\t\t1,\n\t},\n}")
    expect(compact({ a = { b = { c = "d" } } })):to_be('{ a = { b = { c = "d", }, }, }')
  end)

  it("marks cycles but shows a table seen twice in full", function()
    local t = { name = "loop" }
    t.self = t
    expect(compact(t)):to_be('{ name = "loop", self = <cycle>, }')
    local shared = { 1 }
    expect(compact({ a = shared, b = shared })):to_be("{ a = { 1, }, b = { 1, }, }")
    local a, b = {}, {}
    a.b, b.a = b, a
    expect(compact(a)):to_be("{ b = { a = <cycle>, }, }")
  end)

  it("caps depth (default 6)", function()
    local v = { a = { b = { c = {} } } }
    expect(compact(v, { depth = 2 })):to_be("{ a = { b = {...}, }, }")
    expect(compact(v, { depth = 0 })):to_be("{...}")
    local deep = {}
    local cur = deep
    for _ = 1, 10 do cur.next = {}; cur = cur.next end
    local text = compact(deep)
    local _, opened = text:gsub("{ next", "")
    expect(opened):to_be(6)
    expect(text):to_contain("{...}")
  end)

  it("caps width (default 200 entries per table)", function()
    expect(compact({ 1, 2, 3, 4, 5 }, { width = 2 })):to_be("{ 1, 2, ... }")
    expect(compact({ a = 1, b = 2, c = 3 }, { width = 1 })):to_be("{ a = 1, ... }")
    local big = {}
    for i = 1, 1000 do big[i] = i end
    local text = compact(big)
    local _, commas = text:gsub(",", "")
    expect(commas):to_be(200)
    expect(text):to_match("200, %.%.%. }$")
  end)

  it("never runs metamethods of the value", function()
    local function trap(name)
      return function() error(name .. " was called") end
    end
    local mt = { __index = trap("__index"), __pairs = trap("__pairs"), __len = trap("__len"),
                 __tostring = trap("__tostring"), __call = trap("__call"), __eq = trap("__eq"),
                 __lt = trap("__lt"), __le = trap("__le"), __concat = trap("__concat") }
    local t = setmetatable({ 1, x = setmetatable({ y = 2 }, mt) }, mt)
    expect(compact(t)):to_be("{ 1, x = { y = 2, }, }")
  end)

  it("never runs metamethods of table keys either", function()
    local called = false
    local mt = { __tostring = function() called = true; error("__tostring was called") end,
                 __lt = function() called = true; error("__lt was called") end }
    local k1, k2 = setmetatable({}, mt), setmetatable({}, mt)
    local ok, text = pcall(inspect, { [k1] = 1, [k2] = 2 }, { compact = true })
    expect(called):to_be(false)
    expect(ok):to_be(true)
    expect(text):to_match("^{ %[<table>%] = %d, %[<table>%] = %d, }$")
  end)

  it("orders keys of different types by type name", function()
    expect(compact({ [true] = "b", [1.5] = "n", s = "s" }))
      :to_be('{ [true] = "b", [1.5] = "n", s = "s", }')
  end)

  it("is vigil.inspect and require('vigil.inspect').inspect", function()
    local m = require("vigil.inspect")
    expect(m.inspect({ 1 }, { compact = true })):to_be("{ 1, }")
    expect(vigil.inspect({ 1 }, { compact = true })):to_be("{ 1, }")
  end)
end)
