-- Injection suite for the action builders (vigil.kube, vigil.notify, vigil.silence): hostile
-- alert-label content goes through every field of every builder that can carry it. Each value
-- must be refused with EINVAL or end up inert: as exactly one argv element in the place the
-- builder meant (never a flag of its own, never split), or inside a JSON body that decodes
-- back to it. Errors never echo the value, and stay one short line.
local kube = require("vigil.kube")
local notify = require("vigil.notify")
local silence = require("vigil.silence")
local json = vigil.json

local BIG = ("a"):rep(100 * 1024)

-- name, value, and what a receiver should read back from a JSON string when the builder cuts
-- strings to `max` characters (notify) or leaves them (silence, patches)
local HOSTILE = {
  { "semicolon", "; rm -rf /" },
  { "command substitution", "$(id)" },
  { "backticks", "`id`" },
  { "newline", "web\nX-Injected: 1" },
  { "carriage return", "web\r\nrm" },
  { "leading dash", "-rf" },
  { "kubeconfig flag", "--kubeconfig=/tmp/x" },
  { "namespace flag", "-n=kube-system" },
  { "path traversal", "../../etc" },
  { "NUL byte", "web\0--all" },
  { "100 KB", BIG },
  { "invalid UTF-8", "w\xffe\xfeb", clean = "w\u{FFFD}e\u{FFFD}b" },
  { "overlong NUL", "\xc0\x80", clean = "\u{FFFD}\u{FFFD}" },
  { "Cyrillic a", "\u{430}pp" },
  { "Cyrillic e in web", "w\u{435}b" },
  { "full-width", "\u{FF57}\u{FF45}\u{FF42}" },
  { "right-to-left override", "web\u{202E}gpj.exe" },
  { "quotes and braces", '"}],{"x":"' },
  { "JSON-looking", '{"spec":{"replicas":0}}' },
  { "shell glob", "*" },
  { "Slack mention", "<!channel> please" },
  { "Slack link", "<https://evil.example|click here> & more" },
  { "many entities", ("<&>"):rep(5000) },
  { "space", "web prod" },
  { "empty", "" },
}

-- the flags kube builders write themselves; anything else starting with '-' is an injection
local OWN_FLAGS = { ["-n"] = true, ["-o"] = true, ["-p"] = true }
local OWN_PREFIXES = { "--replicas=", "--current-replicas=", "--timeout=", "--revision=",
  "--type=" }

local function own_flag(e)
  if OWN_FLAGS[e] then return true end
  for _, p in ipairs(OWN_PREFIXES) do
    if e:sub(1, #p) == p then return true end
  end
  return false
end

local function check_error(value, err)
  expect(err):to_be_a("string")
  expect(err):to_match("^EINVAL: [%w_]+: ")
  expect(#err < 400):to_be(true)
  expect(err:find("[%z\r\n]")):to_be_nil()
  if #value >= 3 then expect(err).never:to_contain(value) end
end

--- argv must equal `want` exactly, or the call must have been refused; an accepted argv also
-- passes the generic checks (strings, no controls, no foreign flags, values after -n/-o/-p
-- never flags).
local function check_argv(value, argv, err, want)
  if argv == nil then
    check_error(value, err)
    return "refused"
  end
  expect(err):to_be_nil()
  for i, e in ipairs(argv) do
    expect(e):to_be_a("string")
    expect(e:find("[%z\r\n]")):to_be_nil()
    if e:sub(1, 1) == "-" then
      expect(own_flag(e)):to_be(true)
      expect(OWN_FLAGS[argv[i - 1]]):to_be_nil() -- a flag's value is not a flag
    end
  end
  expect(argv):to_equal(want)
  return "accepted"
end

--- a JSON body must be valid UTF-8 without raw control characters, and decode
local function decode_body(req)
  expect(utf8.len(req.body)).never:to_be_nil()
  expect(req.body:find("[%z\1-\31]")):to_be_nil()
  for _, h in ipairs(req.headers) do expect(h:find("[%z\r\n]")):to_be_nil() end
  local doc, err = json.decode(req.body)
  expect(err):to_be_nil()
  return doc
end

--- what a notify builder should deliver for `h` with a cut at `max` characters
local function cleaned(h, max)
  local s = h.clean or h[2]
  if max and utf8.len(s) > max then s = s:sub(1, utf8.offset(s, max) - 1) .. "…" end
  return s
end

--- what Slack text should be: escaped first, then cut at `max` characters without splitting
-- an entity
local function slack_escaped(h, max)
  local s = (h.clean or h[2]):gsub("[&<>]", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;" })
  if utf8.len(s) > max then
    s = s:sub(1, utf8.offset(s, max) - 1):gsub("&%a*$", "") .. "…"
  end
  return s
end

local function each(fn)
  local outcomes = {}
  for _, h in ipairs(HOSTILE) do
    local ok, e = pcall(fn, h[2], h)
    if not ok then error(("with %s: %s"):format(h[1], tostring(e)), 0) end
    outcomes[e or "?"] = (outcomes[e or "?"] or 0) + 1
  end
  return outcomes
end

describe("hostile values in kubectl names, namespaces and kinds", function()
  -- each returns argv, err, and the argv it must be when accepted
  local function target(t) return t.kind .. "/" .. tostring(t.name) end
  local builders = {
    get = function(t)
      local a, e = kube.get_argv(t)
      return a, e, { "get", t.kind, t.name, "-n", t.namespace, "-o", "json" }
    end,
    scale_argv = function(t)
      t.replicas = 3
      local a, e = kube.scale_argv(t)
      return a, e, { "scale", target(t), "--replicas=3", "-n", t.namespace }
    end,
    scale = function(t)
      t.replicas, t.current = "+20%", 5
      local plan, e = kube.scale(t)
      return plan and plan.argv, e,
        { "scale", target(t), "--replicas=6", "-n", t.namespace, "--current-replicas=5" }
    end,
    restart = function(t)
      local a, e = kube.restart_argv(t)
      return a, e, { "rollout", "restart", target(t), "-n", t.namespace }
    end,
    rollout_status = function(t)
      local a, e = kube.rollout_status_argv(t)
      return a, e, { "rollout", "status", target(t), "-n", t.namespace, "--timeout=300s" }
    end,
    patch = function(t)
      t.patch = { spec = { paused = true } }
      local a, e = kube.patch_argv(t)
      return a, e, { "patch", target(t), "-n", t.namespace, "--type=strategic", "-p",
        '{"spec":{"paused":true}}' }
    end,
  }

  for bname, build in pairs(builders) do
    for _, field in ipairs({ "name", "namespace", "kind" }) do
      it(("%s refuses every hostile %s"):format(bname, field), function()
        local outcomes = each(function(v)
          local t = { kind = "deployment", name = "web", namespace = "prod" }
          t[field] = v
          return check_argv(v, build(t))
        end)
        -- none of the hostile values is a valid Kubernetes name, namespace or kind
        expect(outcomes):to_equal({ refused = #HOSTILE })
      end)
    end
    it(bname .. " builds the expected argv for a valid target", function()
      local t = { kind = "deployment", name = "web", namespace = "prod" }
      expect(check_argv("web", build(t))):to_be("accepted")
    end)
  end
end)

describe("hostile values in isolate and failback selectors", function()
  local function isolate(sel, cur, service)
    return kube.isolate_argv({ service = service or "web", namespace = "prod", selector = sel,
      current_selector = cur })
  end

  local function failback(saved, service)
    return kube.failback_argv({ service = service or "web", namespace = "prod",
      saved_selector = saved })
  end

  it("refuses them as selector values, keys, service names and saved selectors", function()
    local outcomes = each(function(v)
      local results = {
        { isolate({ app = v }, { app = "web" }) },
        { isolate({ [v] = "m" }, { app = "web" }) },
        { isolate({ app = "m" }, { app = v }) },
        { isolate({ app = "m" }, { [v] = "web" }) },
        { isolate({ app = "m" }, { app = "web" }, v) },
        { failback({ app = v }) },
        { failback({ [v] = "x" }) },
        { failback({ app = "x" }, v) },
      }
      for _, r in ipairs(results) do
        if v == "" and r[1] then
          -- an empty label value is legal in a selector: it is one JSON string, "" in the patch
          local patch = json.decode(r[1][7])
          expect(patch).never:to_be_nil()
        else
          check_argv(v, r[1], r[2], {})
        end
      end
      return "refused"
    end)
    expect(outcomes.refused):to_be(#HOSTILE)
  end)

  it("a hostile saved-selector annotation cannot reach failback", function()
    each(function(v)
      local svc = json.encode({ metadata = { annotations = {
        [kube.SAVED_SELECTOR] = json.encode({ app = v }) } }, spec = { selector = { m = "1" } } })
      local sel, err = kube.saved_selector(svc)
      if v == "" then
        expect(sel):to_equal({ app = "" })
      else
        expect(sel):to_be_nil()
        expect(err):to_match("^EPROTO: ")
        if #v >= 3 then expect(err).never:to_contain(v) end
      end
      return "ok"
    end)
  end)
end)

describe("hostile values inside a patch", function()
  it("stay one JSON argument that decodes back to them, or are refused", function()
    local outcomes = each(function(v, h)
      local argv, err = kube.patch_argv({ kind = "deployment", name = "web", namespace = "prod",
        type = "merge", patch = { metadata = { annotations = { note = v } } } })
      if h.clean then
        check_error(v, err) -- invalid UTF-8 cannot be sent to the API server
        return "refused"
      end
      expect(#argv):to_be(7)
      expect({ argv[1], argv[2], argv[3], argv[4], argv[5], argv[6] })
        :to_equal({ "patch", "deployment/web", "-n", "prod", "--type=merge", "-p" })
      expect(argv[7]:find("[%z\1-\31]")):to_be_nil()
      expect(json.decode(argv[7])):to_equal({ metadata = { annotations = { note = v } } })
      return "accepted"
    end)
    expect(outcomes):to_equal({ accepted = #HOSTILE - 2, refused = 2 })
  end)

  it("a hostile string patch is refused unless it is one line of JSON", function()
    each(function(v)
      local argv, err = kube.patch_argv({ kind = "deployment", name = "web", namespace = "prod",
        patch = v })
      if v == '{"spec":{"replicas":0}}' then
        expect(argv[7]):to_be(v) -- valid JSON: passed as one element, as it is
      else
        check_argv(v, argv, err, {})
      end
      return "ok"
    end)
  end)
end)

describe("hostile replica specs and timeouts", function()
  it("are refused", function()
    local outcomes = each(function(v)
      local n, err = kube.compute_replicas(3, v)
      expect(n):to_be_nil()
      check_error(v, err)
      local argv
      argv, err = kube.rollout_status_argv({ kind = "deployment", name = "web", namespace = "prod",
        timeout = v })
      check_argv(v, argv, err, {})
      return "refused"
    end)
    expect(outcomes.refused):to_be(#HOSTILE)
  end)
end)

describe("hostile values in Slack messages", function()
  local HOOK = "https://hooks.slack.com/services/T0/B0/XSECRETX"

  it("are escaped JSON text in text, title, fields and severity", function()
    each(function(v, h)
      local req, err = notify.slack({ webhook = HOOK, text = v, title = v, severity = v,
        fields = { [h[1]] = v } })
      if v == "" then
        check_error(v, err) -- text is required
        return "refused"
      end
      local doc = decode_body(req)
      expect(doc.blocks[1].text.text):to_be(cleaned(h, 150))
      expect(doc.blocks[2].text.text):to_be(slack_escaped(h, 2900))
      expect(utf8.len(doc.blocks[2].text.text) <= 3000):to_be(true) -- Slack's section limit
      expect(doc.attachments[1].fields[1].value):to_be(slack_escaped(h, 1000))
      expect(doc.text:find("<", 1, true)):to_be_nil()
      expect(doc.text:find(">", 1, true)):to_be_nil()
      return "accepted"
    end)
  end)

  it("cannot turn a URL into a header, a blank or a control", function()
    each(function(v)
      for _, field in ipairs({ "webhook", "incident_url" }) do
        local opts = { webhook = HOOK, text = "t" }
        opts[field] = "https://hooks.slack.com/" .. v
        local req, err = notify.slack(opts)
        if req then
          local doc = decode_body(req)
          local url = field == "webhook" and req.url or doc.blocks[2].elements[1].url
          expect(url):to_be(opts[field])
          expect(url:find("[%s%c]")):to_be_nil()
        else
          check_error(v, err)
          expect(err).never:to_contain("XSECRETX")
        end
      end
      return "ok"
    end)
  end)
end)

describe("hostile values in PagerDuty events", function()
  local KEY = "e93facc04764012d7bfb002500d5d1a6"

  it("are JSON text in summary, source, component, group, class and details", function()
    each(function(v, h)
      local req, err = notify.pagerduty({ routing_key = KEY, summary = v, source = v,
        severity = v, component = v, group = v, class = v, custom_details = { [h[1]] = v } })
      if v == "" then
        check_error(v, err)
        return "refused"
      end
      local p = decode_body(req).payload
      expect(p.summary):to_be(cleaned(h, 1024))
      expect(p.source):to_be(cleaned(h, 255))
      expect(p.component):to_be(cleaned(h, 255))
      expect(p.group):to_be(cleaned(h, 255))
      expect(p.class):to_be(cleaned(h, 255))
      expect(p.severity):to_be("error")
      expect(p.custom_details[h[1]]):to_be(h.clean or v)
      return "accepted"
    end)
  end)

  it("are refused as dedup keys and routing keys, and hashed from incident ids", function()
    each(function(v)
      local req, err = notify.pagerduty({ routing_key = KEY, action = "resolve", dedup_key = v })
      if req then
        expect(decode_body(req).dedup_key):to_be(v)
        expect(#v <= 255 and utf8.len(v) ~= nil):to_be(true)
      else
        check_error(v, err)
      end
      req, err = notify.pagerduty({ routing_key = v, summary = "s", source = "h" })
      expect(req):to_be_nil()
      check_error(v, err)
      if v ~= "" then
        expect(notify.dedup_key({ id = v })):to_match("^vigil%-incident%-[%w%-_.:]+$")
        expect(notify.dedup_key({ group_key = v })):to_match("^vigil%-group%-%x+$")
      end
      return "ok"
    end)
  end)
end)

describe("hostile values in signed webhooks", function()
  it("are JSON text in the payload, and the signature covers the exact body", function()
    local crypto = require("vigil.crypto")
    each(function(v, h)
      local req = notify.webhook({ url = "https://hooks.example/h", secret = "k",
        timestamp = 1767225600, payload = { label = v, [h[1]] = { v } } })
      local doc = decode_body(req)
      expect(doc.label):to_be(h.clean or v)
      expect(doc[h[1]]):to_equal({ h.clean or v })
      expect(req.headers[3]):to_be("X-Vigil-Signature: sha256="
        .. crypto.hmac_sha256("k", "1767225600." .. req.body))
      return "ok"
    end)
  end)

  it("are refused as header values, header names and secrets in errors", function()
    each(function(v)
      local req, err = notify.webhook({ url = "https://hooks.example/h", payload = {},
        headers = { ["X-Label"] = v } })
      if req then
        expect(req.headers[2]):to_be("X-Label: " .. v)
        expect(v:find("[%z\r\n]")):to_be_nil()
      else
        check_error(v, err)
      end
      req, err = notify.webhook({ url = "https://hooks.example/h", payload = {}, secret = "k",
        header = v })
      expect(req):to_be_nil()
      check_error(v, err)
      return "ok"
    end)
  end)
end)

describe("hostile values in silences", function()
  local AM = "http://127.0.0.1:9093"

  it("are exact matcher values in the JSON body, or refused", function()
    local outcomes = each(function(v, h)
      local req, err = silence.request({ url = AM, starts_at = 1767225600,
        labels = { alertname = "HighErrorRate", pod = v } })
      if h.clean or #v > 4096 then
        check_error(v, err) -- Alertmanager could not match it: invalid UTF-8, or too long
        return "refused"
      end
      local doc = decode_body(req)
      expect(doc.matchers):to_equal({
        { name = "alertname", value = "HighErrorRate", isRegex = false, isEqual = true },
        { name = "pod", value = v, isRegex = false, isEqual = true },
      })
      expect(silence.matches(req, { alertname = "HighErrorRate", pod = v }, 1767225600))
        :to_be(true)
      expect(silence.matches(req, { alertname = "HighErrorRate", pod = "web" }, 1767225600))
        :to_be(false)
      return "accepted"
    end)
    expect(outcomes):to_equal({ accepted = #HOSTILE - 4, refused = 4 })
  end)

  it("are exact text in the comment and creator, or refused", function()
    local outcomes = each(function(v, h)
      for _, field in ipairs({ "comment", "created_by" }) do
        local opts = { url = AM, labels = { alertname = "X" } }
        opts[field] = v
        local req, err = silence.request(opts)
        if h.clean or v == "" then
          check_error(v, err)
        else
          local doc = decode_body(req)
          local got = field == "comment" and doc.comment or doc.createdBy
          local max = field == "comment" and 1000 or 256
          expect(got):to_be(cleaned(h, max))
        end
      end
      return h.clean and "refused" or "ok"
    end)
    expect(outcomes.refused):to_be(2)
  end)

  it("are refused as label names and `by` names", function()
    each(function(v)
      local req, err = silence.request({ url = AM, labels = { alertname = "X", [v] = "y" } })
      expect(req):to_be_nil()
      check_error(v, err)
      req, err = silence.request({ url = AM, labels = { alertname = "X" }, by = { v } })
      expect(req):to_be_nil()
      check_error(v, err)
      return "refused"
    end)
  end)
end)
