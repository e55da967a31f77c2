-- Checklist G (notes/reliability-research.md §2.5): attacker-controlled alert data. The
-- payload arrives as data (the `args` of the run, as labels reach on_alert) rather than as
-- policy source: patterns, format strings and source text from a label are all bounded.
local testing = require("vigil.testing")
local sandbox = testing.sandbox
-- Seconds that tell "stopped" from "ran away": a runaway never ends, and a stopped run takes
-- milliseconds, or about a second under AddressSanitizer on a busy CI machine. Not a speed target.
local PROMPT = 10

local BUDGET = { instructions = 1e8 }

local function with(code, ...)
  local r = sandbox(code, { instructions = BUDGET.instructions, args = { ... } })
  expect(r.elapsed):to_be_less_than(PROMPT)
  return r
end

local function step_budget(r)
  expect(r.status):to_be("error")
  expect(r.error):to_contain("pattern too complex for the step budget")
end

describe("G22: label text as data", function()
  it("G22: a 1 MiB label arrives intact", function()
    local r = with("local v = ... return #v, v:sub(-3)", ("a"):rep((1 << 20) - 3) .. "end")
    expect(r.results):to_equal({ 1 << 20, "end" })
  end)
  it("G22: NUL bytes survive find, gsub and %q", function()
    local r = with([[local v = ... return v:find("\0", 1, true), (v:gsub("%z", "0")),
      string.format("%q", v)]], "a\0b\0c")
    expect(r.results):to_equal({ 2, "a0b0c", '"a\\0b\\0c"' })
  end)
  it("G22: invalid UTF-8 is reported, not trusted", function()
    local r = with("local v = ... return utf8.len(v)", "ok\xff\xfe")
    expect(r.status):to_be("ok")
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_be(3)
  end)
  it("G22: a label with Unicode lookalikes is not equal to the name it mimics", function()
    local r = with("local v = ... return v == 'kube-system', #v", "kube\u{2010}system")
    expect(r.results):to_equal({ false, 13 })
  end)
end)

describe("G22: pattern injection on long labels", function()
  local hostile = { ".-.-.-.-b", "(.-)(.-)(.-)(.-)b", "^(.-)%-(.-)%-(.-)%-prod$", "%f[%w].-.-.-z" }
  for _, size in ipairs({ 1024, 4096, 65536 }) do
    for _, p in ipairs(hostile) do
      it(("G22: label:find(other_label) with %q on %d bytes"):format(p, size), function()
        step_budget(with("local s, p = ... return s:find(p)", ("a-"):rep(size // 2), p))
      end)
    end
  end
  for _, call in ipairs({ "s:match(p)", "s:gsub(p, '%%0')", "s:gsub(p, function(x) return x end)",
                          "(function() for _ in s:gmatch(p) do end end)()" }) do
    it("G22: " .. call .. " on a 64 KiB label is stopped", function()
      step_budget(with("local s, p = ... return " .. call, ("a"):rep(65536), ".-.-.-.-b"))
    end)
  end
  it("G22: a malformed pattern from a label is a clean error", function()
    for p, want in pairs({
      ["%"] = "malformed pattern (ends with '%')",
      ["[a"] = "malformed pattern (missing ']')",
      ["(()"] = "unfinished capture",
      ["%b"] = "missing arguments to '%b'",
      ["%f"] = "missing '[' after '%f' in pattern",
      [("("):rep(40) .. ("a)"):rep(40)] = "too many captures",
    }) do
      local r = with("local s, p = ... return s:find(p)", "aaaa", p)
      expect(r.status):to_be("error")
      expect(r.error):to_contain(want)
    end
  end)
  it("G22: patterns from labels still match ordinary text", function()
    local r = with("local s, p = ... return s:match(p)", "api-7f9c-prod", "^(.-)%-(.-)%-prod$")
    expect(r.results):to_equal({ "api", "7f9c" })
  end)
  it("G22: PCRE2 matchers with nested quantifiers on a long label are quick", function()
    local m = testing.matchers('pod=~"(a|aa)*c"')
    local c = os.clock()
    local ok, res = pcall(m.match, m, { pod = ("a"):rep(4000) })
    expect(os.clock() - c):to_be_less_than(PROMPT)
    expect(ok and res or false):to_be(false)
  end)
end)

describe("G22: source and format injection", function()
  it("G22: load(label) runs in the sandbox", function()
    local r = with("local v = ... return load(v)()", "return io, os.execute, debug, vigil ~= nil")
    expect(r.status):to_be("ok")
    expect(r.n):to_be(4)
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_be_nil()
    expect(r.results[3]):to_be_nil()
    expect(r.results[4]):to_be(true)
  end)
  it("G22: load(label) refuses bytecode", function()
    local r = with("local v = ... return load(v)", "\27Lua\x54\0")
    expect(r.results[1]):to_be_nil()
    expect(r.results[2]):to_contain("attempt to load a binary chunk")
  end)
  it("G22: a looping label given to load is stopped by the budget", function()
    local r = sandbox("local v = ... return load(v)()", { instructions = 2000000,
      args = { "while true do end" } })
    expect(r.status):to_be("killed")
    expect(r.killed):to_be("instructions")
  end)
  it("G22: string.format(label) with %p is refused", function()
    local r = with("local v = ... return string.format(v, {})", "%p")
    expect(r.status):to_be("error")
    expect(r.error):to_contain("'%p' is not available")
  end)
  it("G22: string.format(label) with missing arguments is a clean error", function()
    local r = with("local v = ... return string.format(v)", "%s%s%n")
    expect(r.status):to_be("error")
    expect(r.error):to_contain("no value")
  end)
  it("G22: string.format(label) with a huge width is refused", function()
    local r = with("local v = ... return string.format(v, 1)", "%099999d")
    expect(r.status):to_be("error")
    expect(r.error):to_contain("invalid conversion")
  end)
  it("G22: string.rep driven by a label's count is bounded", function()
    local r = sandbox("local v = ... return #string.rep('x', tonumber(v))",
      { memory = 16 << 20, args = { "1e9" } })
    expect(r.status):to_be("killed")
    expect(r.killed):to_be("memory")
  end)
end)
