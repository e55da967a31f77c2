-- Spec of vigil.actions.notify and vigil.core.notifier as `vigil test` runs them: without a
-- config, so without notifiers. What holds with none: an unknown name is ENONOTIFIER (its
-- hostile bytes not echoed), a missing `to` is EINVAL, a caller setting a notifier's own
-- fields (credentials, url) is refused before any lookup, and a call without a table raises.
-- Sending to a configured notifier is tests/integration/notify.sh (a daemon with a config).
local actions = vigil.actions
local core = require("vigil.core")

describe("vigil.core.notifier", function()
  it("is nil for a name the config does not declare (there is no config here)", function()
    expect(core.notifier("oncall")):to_be_nil()
    expect(core.notifier("")):to_be_nil()
  end)

  it("raises on a name that is not a string", function()
    expect(function() core.notifier({}) end):to_fail("bad argument #1")
  end)
end)

describe("vigil.actions.notify", function()
  it("answers ENONOTIFIER for a notifier that is not in the config", function()
    local r, err = actions.notify({ to = "oncall", summary = "disk full", severity = "critical" })
    expect(r):to_be_nil()
    expect(err):to_be("ENONOTIFIER: no notifier 'oncall' in the config")
  end)

  it("does not echo control characters or quotes of a hostile name", function()
    local r, err = actions.notify({ to = "x'\n\27[31mred", text = "hi" })
    expect(r):to_be_nil()
    expect(err):to_be("ENONOTIFIER: no notifier 'x???[31mred' in the config")
  end)

  it("cuts a long name in the message", function()
    local _, err = actions.notify({ to = string.rep("n", 500), text = "hi" })
    expect(#err):to_be(#"ENONOTIFIER: no notifier '' in the config" + 64)
  end)

  it("needs `to`", function()
    for _, to in ipairs({ false, 5, "" }) do
      local r, err = actions.notify({ to = to, text = "hi" })
      expect(r):to_be_nil()
      expect(err):to_be("EINVAL: to: is required (the name of a notifier in the config)")
    end
    local r, err = actions.notify({ text = "hi" })
    expect(r):to_be_nil()
    expect(err):to_match("^EINVAL: to: ")
  end)

  it("refuses a caller's credentials or url, and does not show them", function()
    local given = { routing_key = "R0123456789abcdef0123456789abcde",
      webhook = "https://hooks.slack.com/services/T/B/SECRETPATH", secret = "hook-secret-123",
      url = "https://elsewhere.example/collect" }
    local n = 0
    for field, value in pairs(given) do
      local r, err = actions.notify({ to = "oncall", summary = "x", [field] = value })
      expect(r):to_be_nil()
      expect(err):to_be(("EINVAL: %s: is the notifier's (notifiers.oncall in the config); "
        .. "a caller cannot set it"):format(field))
      expect(err:find(value, 1, true)):to_be_nil()
      n = n + 1
    end
    expect(n):to_be(4)
  end)

  it("raises without an options table", function()
    expect(function() actions.notify("oncall") end)
      :to_fail("bad argument #1 to 'notify' (table { to = ..., ... } expected, got string)")
    expect(function() actions.notify() end):to_fail("got nil")
  end)
end)
