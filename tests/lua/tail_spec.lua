-- Spec of vigil.logs.tail (docs/logs.md, "Tailing a log file"): what a policy sees when the
-- path is not allowed, and its argument checks. `vigil test` runs without a config, so no
-- logs.allow prefix exists and every path is refused; and a spec cannot write files (no io in
-- the sandbox). Reading lines, rotation and the allow list with real prefixes, ".." and
-- symlinks are driven from C in tests/unit/lua/ltail_test.c, which writes the files itself.
describe("vigil.logs.tail", function()
  it("is vigil.logs.tail", function()
    expect(vigil.logs.tail):to_be(require("vigil.logs.tail").tail)
  end)

  it("refuses a path outside the allow list with EDENIED", function()
    local t, err = vigil.logs.tail("/etc/passwd")
    expect(t):to_be_nil()
    expect(err):to_match("^EDENIED: ")
    expect(err):to_contain("/etc/passwd")
  end)

  it("refuses a .. escape and a relative path", function()
    local t, err = vigil.logs.tail("/var/log/../../etc/shadow")
    expect(t):to_be_nil()
    expect(err):to_match("^EDENIED: ")
    t, err = vigil.logs.tail("../secrets.log")
    expect(t):to_be_nil()
    expect(err):to_be("EDENIED: ../secrets.log: not an absolute path")
  end)

  it("raises on bad options (a caller's mistake)", function()
    expect(function() vigil.logs.tail() end):to_fail("bad argument #1")
    expect(function() vigil.logs.tail("/var/log/x.log", { from = "middle" }) end)
      :to_fail("from must be \"start\" or \"end\"")
    expect(function() vigil.logs.tail("/var/log/x.log", { max_line = 0 }) end)
      :to_fail("bad option 'max_line'")
    expect(function() vigil.logs.tail("/var/log/x.log", { timeout = "soon" }) end)
      :to_fail("bad argument")
  end)
end)
