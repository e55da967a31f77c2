-- Checklist A (notes/reliability-research.md §2.5): capabilities a policy must not reach.
local sandbox = require("vigil.testing").sandbox

local function first_line(s) return (tostring(s):match("[^\n]*")) end

describe("A1: dangerous globals are absent", function()
  for _, name in ipairs({ "io", "debug", "package", "dofile", "loadfile", "collectgarbage",
                          "rawset", "coroutine", "require_original", "module", "newproxy" }) do
    it("A1: " .. name .. " is undefined", function()
      local r = sandbox("return " .. name)
      expect(r.status):to_be("error")
      expect(r.error):to_contain("undefined global '" .. name .. "'")
    end)
  end
  for _, fn in ipairs({ "execute", "exit", "getenv", "remove", "rename", "tmpname",
                        "setlocale" }) do
    it("A1: os." .. fn .. " is nil", function()
      local r = sandbox("return os." .. fn)
      expect(r.status):to_be("ok")
      expect(r.n):to_be(1)
      expect(r.results[1]):to_be_nil()
    end)
  end
  it("A1: os keeps only time, clock, date, difftime", function()
    local r = sandbox([[local names = {} for k in pairs(os) do names[#names + 1] = k end
      table.sort(names) return table.concat(names, ",")]])
    expect(r.results[1]):to_be("clock,date,difftime,time")
  end)
  it("A1: require outside vigil.* and lib.* is refused", function()
    for _, m in ipairs({ "os", "io", "string", "cjson", "cjson.safe", "ffi", "socket" }) do
      local r = sandbox(("return require(%q)"):format(m))
      expect(r.status):to_be("error")
      expect(r.error):to_contain("policies may require vigil.* modules and lib.*")
    end
  end)
  it("A1: lib.* cannot climb out of the lib directory", function()
    local r = sandbox("return require('lib...etc.passwd')")
    expect(r.status):to_be("error")
    expect(r.error):to_contain("invalid module name")
  end)
end)

describe("A2: reaching them another way", function()
  local attempts = {
    ["_G.os.execute"] = nil,
    ["_G.io"] = "undefined global 'io'",
    ["_ENV.io"] = "undefined global 'io'",
    ["rawget(_G, 'os')"] = nil,
    ["getmetatable(_ENV)"] = false,
    ["load('return io')()"] = nil,
    ["load('return os.execute, rawget(_G, \"dofile\")')()"] = nil,
    ["('').dump"] = nil,
    ["getmetatable('').__index"] = "attempt to index a boolean value",
    ["next(_G)"] = nil,
    ["select('#', next(_ENV))"] = 1,
  }
  for code, want in pairs(attempts) do
    it("A2: " .. code, function()
      local r = sandbox("return " .. code)
      if type(want) == "string" then
        expect(r.status):to_be("error")
        expect(first_line(r.error)):to_contain(want)
      else
        expect(r.status):to_be("ok")
        expect(r.results[1]):to_be(want)
      end
    end)
  end
  it("A2: enumerating _ENV and the libraries finds nothing dangerous", function()
    local r = sandbox([[
      local found = {}
      for k in pairs(_ENV) do found[#found + 1] = tostring(k) end
      for k in pairs(string) do if k == "dump" then found[#found + 1] = "string.dump" end end
      return table.concat(found, ",")]])
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be("")
  end)
end)

describe("A3: bytecode is refused", function()
  it("A3: string.dump does not exist", function()
    local r = sandbox("return string.dump(function() end)")
    expect(r.status):to_be("error")
  end)
  it("A3: load of a binary chunk header", function()
    local r = sandbox([[return load("\27Lua\84\0\25\147\13\10\26\10\4\8\8")]])
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_contain("binary")
  end)
  it("A3: load from a reader function feeding bytecode", function()
    local r = sandbox([[local sent = false
      return load(function() if sent then return nil end sent = true return "\27Lua\84" end)]])
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_contain("binary")
  end)
  it("A3: load with mode 'b' is refused, 'bt' still refuses binary", function()
    local r = sandbox([[return load("return 1", "x", "b")]])
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_contain("binary chunks are not allowed")
    r = sandbox([[local f = load("return 1", "x", "bt") local g = load("\27Lua", "y", "bt")
      return f(), g]])
    expect(r.results[1]):to_be(1)
    expect(r.results[2]):to_be_nil()
  end)
end)

describe("A4: load with an explicit environment", function()
  it("A4: an empty env sees nothing, not the host globals", function()
    local r = sandbox([[return load("return string, print, vigil", "n", "t", {})()]])
    expect(r.status):to_be("ok")
    expect(r.results):to_equal({})
  end)
  it("A4: a nil env leaves the chunk with no globals at all", function()
    local r = sandbox([[return load("return print", "n", "t", nil)()]])
    expect(r.status):to_be("error")
    expect(r.error):to_contain("attempt to index a nil value")
  end)
  it("A4: without an env the chunk gets a fresh sandbox, never the VM's real globals", function()
    local r = sandbox([[x_from_policy = 1
      return load("return rawget(_G, 'dofile'), io, os.execute, x_from_policy, "
               .. "string.upper('a')")()]],
      { strict = false })
    expect(r.status):to_be("ok")
    expect(r.results):to_equal({ nil, nil, nil, nil, "A" })
  end)
end)

describe("A5: metatable tricks", function()
  local attempts = {
    ["setmetatable(_ENV, {})"] = "cannot change a protected metatable",
    ["getmetatable(_ENV).__index = {}"] = "attempt to index a boolean value",
    ["rawset(_ENV, 'x', 1)"] = "undefined global 'rawset'",
    ["string.upper = function() return 'PWNED' end"] = "read-only table 'string'",
    ["table.insert = print"] = "read-only table 'table'",
    ["math.pi = 3"] = "read-only table 'math'",
    ["os.time = nil"] = "read-only table 'os'",
    ["setmetatable(string, {})"] = "cannot change a protected metatable",
    ["getmetatable('').__index.upper = nil"] = "attempt to index a boolean value",
  }
  for code, want in pairs(attempts) do
    it("A5: " .. code, function()
      local r = sandbox(code)
      expect(r.status):to_be("error")
      expect(first_line(r.error)):to_contain(want)
    end)
  end
  it("A5: getmetatable of builtins reveals nothing", function()
    local r = sandbox([[return getmetatable(""), getmetatable(1), getmetatable(nil),
      getmetatable(print), getmetatable(string), getmetatable(vigil)]])
    expect(r.results):to_equal({ false, nil, nil, nil, false, false })
    expect(r.n):to_be(6)
  end)
  it("A5: string methods on values still work after the attempts", function()
    local r = sandbox([[pcall(function() string.upper = nil end) return ("abc"):upper()]])
    expect(r.results[1]):to_be("ABC")
  end)
end)

describe("A6: the host API is read-only", function()
  for _, code in ipairs({ "vigil.sleep = nil", "vigil.log.info = print", "vigil.json.decode = nil",
                          "vigil.new_field = 1" }) do
    it("A6: " .. code, function()
      local r = sandbox(code)
      expect(r.status):to_be("error")
      expect(r.error):to_contain("attempt to modify read-only table")
    end)
  end
  it("A6: the proxy holds no raw fields to poison", function()
    local r = sandbox("return rawget(vigil, 'sleep'), rawlen(vigil)")
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_be(0)
  end)
  it("A6: require('vigil') hands out the same read-only view", function()
    local r = sandbox("local v = require('vigil') v.sleep = nil")
    expect(r.status):to_be("error")
    expect(r.error):to_contain("read-only")
  end)
end)

describe("A7: information leaks", function()
  it("A7: tostring shows no addresses", function()
    local r = sandbox("return tostring(print), tostring({}), tostring(function() end)")
    for i = 1, 3 do
      expect(r.results[i]).never:to_match("0x%x+")
      expect(r.results[i]):to_match("^%a+: %x%x%x%x%x%x%x%x$")
    end
  end)
  it("A7: tostring ids still tell values apart", function()
    local r = sandbox("local t = {} return tostring(t) == tostring(t), tostring(t) ~= tostring({})")
    expect(r.results):to_equal({ true, true })
  end)
  it("A7: string.format('%p') is refused", function()
    for _, f in ipairs({ "%p", "%10p", "%-p" }) do
      local r = sandbox(("return string.format(%q, {})"):format(f))
      expect(r.status):to_be("error")
      expect(r.error):to_contain("'%p' is not available")
    end
    local r = sandbox([[return string.format("%%p %d", 1)]])
    expect(r.results[1]):to_be("%p 1")
  end)
  it("A7: no way to read the environment of the daemon", function()
    local r = sandbox("return os.getenv")
    expect(r.results[1]):to_be_nil()
  end)
end)
