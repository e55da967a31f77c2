-- Spec of vigil.silence: the Alertmanager API v2 silence request built from an alert's labels
-- or explicit matchers (notes/apis.md §7.2), durations and times, the refusal of silences that
-- could match every alert, expiry, and local matching with Alertmanager's semantics.
local silence = require("vigil.silence")
local json = vigil.json

local AM = "http://127.0.0.1:9093"
local T0 = 1767225600 -- 2026-01-01T00:00:00Z

local ALERT = {
  labels = { alertname = "HighErrorRate", service = "checkout", namespace = "prod",
             severity = "critical" },
  annotations = { summary = "5xx ratio 7.3%" },
}

local function refused(field, v, err)
  expect(v):to_be_nil()
  expect(err):to_match("^EINVAL: " .. field:gsub("%p", "%%%0") .. ": ")
  return err
end

local function eq(name, value)
  return { name = name, value = value, isRegex = false, isEqual = true }
end

describe("vigil.silence.request", function()
  it("silences an alert by all its labels", function()
    local req = silence.request({ url = AM .. "/", alert = ALERT, duration = "1h",
      comment = "auto-silence during remediation", created_by = "vigil/checkout",
      starts_at = T0 })
    expect(req.method):to_be("POST")
    expect(req.url):to_be("http://127.0.0.1:9093/api/v2/silences")
    expect(req.headers):to_equal({ "Content-Type: application/json" })
    local want = { eq("alertname", "HighErrorRate"), eq("namespace", "prod"),
      eq("service", "checkout"), eq("severity", "critical") }
    expect(json.decode(req.body)):to_equal({
      matchers = want,
      startsAt = "2026-01-01T00:00:00.000Z",
      endsAt = "2026-01-01T01:00:00.000Z",
      createdBy = "vigil/checkout",
      comment = "auto-silence during remediation",
    })
    expect(req.matchers):to_equal(want)
    expect(req.starts_at):to_be(T0)
    expect(req.ends_at):to_be(T0 + 3600)
  end)

  it("silences by a chosen subset of labels, or a plain label map", function()
    local req = silence.request({ url = AM, alert = ALERT, by = { "service", "alertname" },
      duration = 600, starts_at = T0 })
    expect(json.decode(req.body).matchers)
      :to_equal({ eq("alertname", "HighErrorRate"), eq("service", "checkout") })
    req = silence.request({ url = AM, labels = { job = "api" }, starts_at = T0 })
    expect(req.matchers):to_equal({ eq("job", "api") })
    req = silence.request({ url = AM, alert = { job = "api" }, starts_at = T0 })
    expect(req.matchers):to_equal({ eq("job", "api") })
  end)

  it("defaults to one hour from now, with vigil's name", function()
    local req = silence.request({ url = AM, alert = ALERT })
    local doc = json.decode(req.body)
    expect(req.starts_at):to_be(vigil.now())
    expect(req.ends_at - req.starts_at):to_be(3600)
    expect(doc.createdBy):to_be("vigil")
    expect(doc.comment):to_be("silenced by vigil")
  end)

  it("takes RFC 3339 times and an explicit end", function()
    local req = silence.request({ url = AM, alert = ALERT, starts_at = "2026-01-01T02:00:00+02:00",
      ends_at = "2026-01-01T00:30:00Z" })
    expect(req.starts_at):to_be(T0)
    expect(req.ends_at):to_be(T0 + 1800)
  end)

  it("passes explicit matchers, regexes included", function()
    local req = silence.request({ url = AM, starts_at = T0, matchers = {
      { name = "alertname", value = "HighErrorRate" },
      { name = "namespace", value = "prod|staging", regex = true },
      { name = "team", value = "db", isEqual = false },
    } })
    expect(json.decode(req.body).matchers):to_equal({
      eq("alertname", "HighErrorRate"),
      { name = "namespace", value = "prod|staging", isRegex = true, isEqual = true },
      { name = "team", value = "db", isRegex = false, isEqual = false },
    })
  end)

  it("never builds a silence that could match every alert", function()
    refused("alert", silence.request({ url = AM, alert = { labels = {} } }))
    refused("labels", silence.request({ url = AM, labels = {} }))
    refused("labels", silence.request({ url = AM, labels = { a = "" } }))
    refused("matchers", silence.request({ url = AM, matchers = {} }))
    refused("matchers", silence.request({ url = AM, matchers = {
      { name = "alertname", value = "", isEqual = false } } }))
    refused("matchers", silence.request({ url = AM, matchers = {
      { name = "alertname", value = ".*", isRegex = true } } }))
    refused("matchers", silence.request({ url = AM, matchers = {
      { name = "alertname", value = "x", isEqual = false } } }))
    refused("alert", silence.request({ url = AM }))
  end)

  it("refuses bad names, values, durations and URLs", function()
    refused("by", silence.request({ url = AM, alert = ALERT, by = { "pod" } }))
    refused("by", silence.request({ url = AM, alert = ALERT, by = {} }))
    refused("by", silence.request({ url = AM, alert = ALERT, by = { "bad-name" } }))
    refused("labels", silence.request({ url = AM, labels = { ["bad name"] = "x" } }))
    refused("labels", silence.request({ url = AM, labels = { a = 1 } }))
    refused("labels", silence.request({ url = AM, labels = { a = "\xff" } }))
    refused("labels", silence.request({ url = AM, labels = { a = ("x"):rep(4097) } }))
    refused("matchers", silence.request({ url = AM, alert = ALERT, matchers = { a = "b" } }))
    for _, d in ipairs({ 0, -60, "forever", 31 * 86400, 0 / 0 }) do
      refused("duration", silence.request({ url = AM, alert = ALERT, duration = d }))
    end
    refused("starts_at", silence.request({ url = AM, alert = ALERT, starts_at = "soon" }))
    refused("comment", silence.request({ url = AM, alert = ALERT, comment = "" }))
    for _, u in ipairs({ "alertmanager:9093", "http://am:9093/?x=1", "http://am 9093", 9093 }) do
      refused("url", silence.request({ url = u, alert = ALERT }))
    end
    expect(function() silence.request() end):to_fail("bad argument #1")
  end)

  it("cuts a long comment on a character boundary", function()
    local req = silence.request({ url = AM, alert = ALERT, comment = ("ß"):rep(2000) })
    expect(utf8.len(json.decode(req.body).comment)):to_be(1000)
  end)
end)

describe("vigil.silence.expire_request", function()
  it("deletes /api/v2/silence/<id>", function()
    expect(silence.expire_request({ url = AM, id = "7c3a9b2e-5f1d-4c61-9e0c-2a8f6b1d4e77" }))
      :to_equal({ method = "DELETE", headers = {},
        url = AM .. "/api/v2/silence/7c3a9b2e-5f1d-4c61-9e0c-2a8f6b1d4e77" })
    refused("id", silence.expire_request({ url = AM, id = "../../status" }))
    refused("id", silence.expire_request({ url = AM, id = "" }))
  end)
end)

describe("vigil.silence.matches", function()
  local sup = silence.request({ url = AM, alert = ALERT, by = { "alertname", "service" },
    starts_at = T0, duration = "1h" })

  it("matches label sets that satisfy every matcher, within the silence's time", function()
    local labels = { alertname = "HighErrorRate", service = "checkout", pod = "x" }
    expect(silence.matches(sup, labels, T0)):to_be(true)
    expect(silence.matches(sup, labels, T0 + 3599)):to_be(true)
    expect(silence.matches(sup, labels, T0 + 3600)):to_be(false)
    expect(silence.matches(sup, labels, T0 - 1)):to_be(false)
    expect(silence.matches(sup, { alertname = "HighErrorRate", service = "cart" }, T0))
      :to_be(false)
    expect(silence.matches(sup, { alertname = "HighErrorRate" }, T0)):to_be(false)
  end)

  it("treats a missing label as empty and honours isEqual = false", function()
    local s = { matchers = { eq("alertname", "X"), eq("canary", ""),
      { name = "team", value = "db", isEqual = false } } }
    expect(silence.matches(s, { alertname = "X" })):to_be(true)
    expect(silence.matches(s, { alertname = "X", team = "web" })):to_be(true)
    expect(silence.matches(s, { alertname = "X", team = "db" })):to_be(false)
    expect(silence.matches(s, { alertname = "X", canary = "yes" })):to_be(false)
    expect(silence.matches({ matchers = { alertname = "X" } }, { alertname = "X" })):to_be(true)
  end)

  it("refuses regex matchers and suppressions that would match everything", function()
    refused("matchers", silence.matches({ matchers = { eq("a", "b"),
      { name = "c", value = "d.*", isRegex = true } } }, { a = "b" }))
    refused("matchers", silence.matches({ matchers = {} }, {}))
    refused("matchers", silence.matches({}, {}))
    expect(function() silence.matches(sup) end):to_fail("bad argument #2")
  end)
end)
