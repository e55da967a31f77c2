-- Spec of vigil.notify: Slack, PagerDuty Events v2 and signed webhook requests (notes/apis.md
-- §5, §6), checked by decoding the body; severity mapping, limits on a character boundary,
-- the signature scheme recomputed independently, and secrets kept out of errors.
local notify = require("vigil.notify")
local crypto = require("vigil.crypto")
local json = vigil.json

local HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX"
local KEY = "e93facc04764012d7bfb002500d5d1a6"

local function refused(field, v, err)
  expect(v):to_be_nil()
  expect(err):to_match("^EINVAL: " .. field:gsub("%p", "%%%0") .. ": ")
  return err
end

local function body(req)
  expect(req.method):to_be("POST")
  expect(req.headers[1]):to_be("Content-Type: application/json")
  local doc, err = json.decode(req.body)
  expect(err):to_be_nil()
  return doc
end

describe("vigil.notify.slack", function()
  it("builds text, blocks and a coloured attachment with the fields", function()
    local req = notify.slack({ webhook = HOOK, title = "HighErrorRate — checkout",
      text = "5xx ratio 7.3%", severity = "critical",
      fields = { namespace = "prod", action = "scaled deployment/checkout 3->5" },
      incident_url = "https://vigil.example/incidents/42?x=1&y=2" })
    expect(req.url):to_be(HOOK)
    expect(req.redacted_url):to_be("https://hooks.slack.com/…")
    local doc = body(req)
    expect(doc.text):to_be(":red_circle: [CRITICAL] HighErrorRate — checkout: 5xx ratio 7.3%")
    expect(doc.blocks):to_equal({
      { type = "header", text = { type = "plain_text", text = "HighErrorRate — checkout",
        emoji = true } },
      { type = "section", text = { type = "mrkdwn", text = "5xx ratio 7.3%" } },
      { type = "actions", elements = { { type = "button",
        text = { type = "plain_text", text = "Open incident" },
        url = "https://vigil.example/incidents/42?x=1&y=2" } } },
    })
    expect(doc.attachments):to_equal({ {
      color = "#d0021b",
      fallback = doc.text,
      fields = {
        { title = "action", value = "scaled deployment/checkout 3-&gt;5", short = true },
        { title = "namespace", value = "prod", short = true },
      },
    } })
  end)

  it("needs only a webhook and text", function()
    local doc = body(notify.slack({ webhook = HOOK, text = "hello" }))
    expect(doc.text):to_be(":bell: hello")
    expect(#doc.blocks):to_be(1)
    expect(doc.attachments[1].fields):to_be_nil()
  end)

  it("keeps field order for a list and escapes Slack's control characters", function()
    local doc = body(notify.slack({ webhook = HOOK, text = "<!channel> & <https://evil|click>",
      fields = { { title = "b", value = "2", short = false }, { name = "a", value = 1 } } }))
    expect(doc.blocks[1].text.text):to_be("&lt;!channel&gt; &amp; &lt;https://evil|click&gt;")
    expect(doc.text).never:to_contain("<")
    expect(doc.attachments[1].fields):to_equal({
      { title = "b", value = "2", short = false }, { title = "a", value = "1", short = true } })
  end)

  it("cuts long text on a character boundary", function()
    local doc = body(notify.slack({ webhook = HOOK, text = ("é"):rep(5000),
      title = ("x"):rep(300) }))
    expect(utf8.len(doc.blocks[2].text.text)):to_be(2900)
    expect(doc.blocks[2].text.text:sub(-3)):to_be("…")
    expect(utf8.len(doc.blocks[1].text.text)):to_be(150)
  end)

  it("cuts after escaping, so escaped text stays within Slack's limits and whole", function()
    local doc = body(notify.slack({ webhook = HOOK, text = ("a<"):rep(3000) }))
    local t = doc.blocks[1].text.text
    -- 579 whole "a&lt;" make 2895 characters; the 580th is cut to "a", the partial entity
    -- dropped, then the ellipsis
    expect(utf8.len(t)):to_be(2897)
    expect(t:sub(-9)):to_be("a&lt;a…")
  end)

  it("refuses a missing text or a bad URL without showing the webhook", function()
    refused("text", notify.slack({ webhook = HOOK }))
    refused("text", notify.slack({ webhook = HOOK, text = {} }))
    for _, bad in ipairs({ "ftp://hooks.slack.com/x", "https://hooks.slack.com/SECRET x",
                           "https://hooks.slack.com/SECRET\r\nX: y", "SECRET", 42 }) do
      local err = refused("webhook", notify.slack({ webhook = bad, text = "t" }))
      expect(err).never:to_contain("SECRET")
    end
    refused("incident_url", notify.slack({ webhook = HOOK, text = "t",
      incident_url = "javascript:alert(1)" }))
    refused("fields", notify.slack({ webhook = HOOK, text = "t", fields = { { value = 1 } } }))
    expect(function() notify.slack() end):to_fail("bad argument #1 to 'vigil.notify.slack'")
  end)
end)

describe("vigil.notify.pagerduty", function()
  it("builds a trigger event", function()
    local req = notify.pagerduty({ routing_key = KEY, dedup_key = "vigil-incident-42",
      summary = "HighErrorRate: checkout 5xx 7.3%", source = "checkout.prod", severity = "high",
      component = "checkout", group = "prod", class = "HighErrorRate", timestamp = 1719913290.5,
      custom_details = { fingerprint = "c75f68922c9ebc87", replicas = { 3, 5 } },
      links = { { href = "https://grafana.example/d/x", text = "Dashboard" } } })
    expect(req.url):to_be("https://events.pagerduty.com/v2/enqueue")
    expect(req.redacted_url):to_be("https://events.pagerduty.com/v2/enqueue")
    expect(body(req)):to_equal({
      routing_key = KEY, event_action = "trigger", dedup_key = "vigil-incident-42",
      payload = {
        summary = "HighErrorRate: checkout 5xx 7.3%", source = "checkout.prod",
        severity = "error", component = "checkout", group = "prod", class = "HighErrorRate",
        timestamp = "2024-07-02T09:41:30.500Z",
        custom_details = { fingerprint = "c75f68922c9ebc87", replicas = { 3, 5 } },
      },
      links = { { href = "https://grafana.example/d/x", text = "Dashboard" } },
      client = "vigil",
    })
  end)

  it("maps vigil severities onto PagerDuty's four", function()
    local want = { critical = "critical", high = "error", medium = "warning", low = "info",
      info = "info", warning = "warning", error = "error", CRITICAL = "critical",
      page = "error" }
    for sev, pd in pairs(want) do
      local doc = body(notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
        severity = sev }))
      expect(doc.payload.severity):to_be(pd)
    end
    local doc = body(notify.pagerduty({ routing_key = KEY, summary = "s", source = "h" }))
    expect(doc.payload.severity):to_be("error")
  end)

  it("acknowledges and resolves by dedup_key only", function()
    for _, action in ipairs({ "acknowledge", "resolve" }) do
      local doc = body(notify.pagerduty({ routing_key = KEY, action = action,
        dedup_key = "vigil-incident-42", summary = "ignored" }))
      expect(doc):to_equal({ routing_key = KEY, event_action = action,
        dedup_key = "vigil-incident-42" })
      refused("dedup_key", notify.pagerduty({ routing_key = KEY, action = action }))
    end
  end)

  it("cuts the summary to 1024 characters on a character boundary", function()
    local doc = body(notify.pagerduty({ routing_key = KEY, summary = ("ü"):rep(3000),
      source = "h" }))
    expect(utf8.len(doc.payload.summary)):to_be(1024)
    expect(#doc.payload.summary <= 2048 + 3):to_be(true)
  end)

  it("refuses bad keys, actions and dedup keys, never showing the routing key", function()
    for _, bad in ipairs({ "short", KEY .. "x", KEY:sub(1, 31) .. "-", 42 }) do
      local err = refused("routing_key", notify.pagerduty({ routing_key = bad, summary = "s",
        source = "h" }))
      expect(err).never:to_contain("short")
    end
    refused("action", notify.pagerduty({ routing_key = KEY, action = "snooze", dedup_key = "k" }))
    refused("dedup_key", notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      dedup_key = ("k"):rep(256) }))
    refused("dedup_key", notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      dedup_key = "a\nb" }))
    refused("summary", notify.pagerduty({ routing_key = KEY, source = "h" }))
    refused("source", notify.pagerduty({ routing_key = KEY, summary = "s" }))
    refused("timestamp", notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      timestamp = "yesterday" }))
    refused("links", notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      links = { { href = "file:///etc/passwd" } } }))
    refused("custom_details", notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      custom_details = { f = print } }))
  end)

  it("drops custom_details when the event would pass 512 KB", function()
    local doc = body(notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      custom_details = { blob = ("x"):rep(600000) } }))
    expect(doc.payload.custom_details):to_equal({
      note = "custom_details dropped: the event was over 512 KB" })
  end)

  it("posts to another URL when asked", function()
    local req = notify.pagerduty({ routing_key = KEY, summary = "s", source = "h",
      url = "http://127.0.0.1:8080/v2/enqueue" })
    expect(req.url):to_be("http://127.0.0.1:8080/v2/enqueue")
  end)
end)

describe("vigil.notify.dedup_key", function()
  it("derives a stable key from the incident", function()
    expect(notify.dedup_key({ id = 42 })):to_be("vigil-incident-42")
    expect(notify.dedup_key({ id = "inc-7" })):to_be("vigil-incident-inc-7")
    local g = notify.dedup_key({ group_key = '{}:{alertname="HighErrorRate"}' })
    expect(g):to_be("vigil-group-" .. crypto.sha256('{}:{alertname="HighErrorRate"}'):sub(1, 32))
    expect(notify.dedup_key({ group_key = '{}:{alertname="HighErrorRate"}' })):to_be(g)
    expect(notify.dedup_key({ fingerprint = "C75F68922C9EBC87" }))
      :to_be("vigil-alert-c75f68922c9ebc87")
  end)

  it("hashes ids with odd characters and refuses an incident with nothing stable", function()
    local k = notify.dedup_key({ id = "a b\n" .. ("z"):rep(500) })
    expect(k):to_match("^vigil%-incident%-%x+$")
    expect(#k <= 255):to_be(true)
    refused("incident", notify.dedup_key({}))
    refused("incident", notify.dedup_key({ fingerprint = "not hex" }))
  end)
end)

describe("vigil.notify.webhook", function()
  it("sends the payload unsigned without a secret", function()
    local req = notify.webhook({ url = "http://127.0.0.1:9/hook?token=abc",
      payload = { event = "scaled", n = 5 } })
    expect(req.headers):to_equal({ "Content-Type: application/json" })
    expect(body(req)):to_equal({ event = "scaled", n = 5 })
    expect(req.redacted_url):to_be("http://127.0.0.1:9/…")
  end)

  it("signs timestamp.body with HMAC-SHA256 in X-Vigil-Signature", function()
    local req = notify.webhook({ url = "https://hooks.example/h", payload = { a = 1 },
      secret = "s3cret", timestamp = 1767225600.9 })
    expect(req.body):to_be('{"a":1}')
    expect(req.headers):to_equal({
      "Content-Type: application/json",
      "X-Vigil-Timestamp: 1767225600",
      "X-Vigil-Signature: sha256=" .. crypto.hmac_sha256("s3cret", '1767225600.{"a":1}'),
    })
    -- the same value computed without vigil.crypto's HMAC: H(K^opad, H(K^ipad, m)), K padded
    local k = "s3cret" .. ("\0"):rep(64 - 6)
    local function xor(s, b)
      return (s:gsub(".", function(c) return string.char(c:byte() ~ b) end))
    end
    local function unhex(h)
      return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end))
    end
    local inner = unhex(crypto.sha256(xor(k, 0x36) .. '1767225600.{"a":1}'))
    expect(req.headers[3])
      :to_be("X-Vigil-Signature: sha256=" .. crypto.sha256(xor(k, 0x5c) .. inner))
    expect(req.body).never:to_contain("s3cret")
  end)

  it("uses the virtual clock by default and custom header names", function()
    local req = notify.webhook({ url = "https://h.example/", payload = "[1,2]", secret = "k",
      header = "X-Sig", timestamp_header = "X-Sig-Time", headers = { ["X-Team"] = "sre" } })
    local ts = ("%d"):format(math.floor(vigil.now()))
    expect(req.body):to_be("[1,2]")
    expect(req.headers):to_equal({ "Content-Type: application/json", "X-Sig-Time: " .. ts,
      "X-Sig: sha256=" .. crypto.hmac_sha256("k", ts .. ".[1,2]"), "X-Team: sre" })
  end)

  it("refuses bad payloads, header injection and empty secrets without showing them", function()
    refused("payload", notify.webhook({ url = "https://h.example/", payload = "{x" }))
    refused("payload", notify.webhook({ url = "https://h.example/", payload = 5 }))
    refused("payload", notify.webhook({ url = "https://h.example/", payload = { f = print } }))
    local err = refused("secret", notify.webhook({ url = "https://h.example/", payload = {},
      secret = "" }))
    expect(err).never:to_contain("''")
    refused("header", notify.webhook({ url = "https://h.example/", payload = {}, secret = "k",
      header = "X-Sig\r\nX-Evil: 1" }))
    refused("header", notify.webhook({ url = "https://h.example/", payload = {}, secret = "k",
      header = "Content-Type" }))
    err = refused("headers", notify.webhook({ url = "https://h.example/", payload = {},
      headers = { Authorization = "Bearer TOKEN\r\nX-Evil: 1" } }))
    expect(err).never:to_contain("TOKEN")
    refused("headers", notify.webhook({ url = "https://h.example/", payload = {}, secret = "k",
      headers = { ["x-vigil-signature"] = "sha256=forged" } }))
    refused("url", notify.webhook({ url = "https://h.example/ x", payload = {} }))
  end)
end)

describe("vigil.notify.http_options", function()
  it("turns header lines into the map vigil.http.request takes", function()
    local req = notify.webhook({ url = "https://h.example/", payload = {}, secret = "k",
      timestamp = 10 })
    local o = notify.http_options(req)
    expect(o.method):to_be("POST")
    expect(o.url):to_be("https://h.example/")
    expect(o.body):to_be(req.body)
    expect(o.headers["Content-Type"]):to_be("application/json")
    expect(o.headers["X-Vigil-Timestamp"]):to_be("10")
    expect(o.headers["X-Vigil-Signature"])
      :to_be("sha256=" .. crypto.hmac_sha256("k", "10." .. req.body))
  end)
end)
