-- vigil.test.clock.set far ahead: moving the virtual time past the harness's own per-test
-- timeout (10 minutes by default) must not make the test itself time out, and one test timing
-- out must not break the tests after it.
local T = require("vigil.test")

describe("clock.set", function()
  it("moves a day ahead without timing out the test", function()
    local t0 = vigil.now()
    T.clock.set(t0 + 86400)
    vigil.sleep(10)
    expect(vigil.now()):to_be(t0 + 86410)
  end)

  it("leaves the next test of the file running normally", function()
    local t0 = vigil.now()
    vigil.sleep(1)
    expect(vigil.now() - t0):to_be(1)
  end)
end)
