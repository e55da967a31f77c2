-- Spec of vigil.kube: the exact argv of each kubectl builder, replica arithmetic, validation
-- of names, namespaces, kinds and selectors, isolate/failback round trips through kubectl's
-- Service JSON, and the readers of kubectl output (notes/apis.md §8).
local kube = require("vigil.kube")
local json = vigil.json

local function refused(field, v, err)
  expect(v):to_be_nil()
  expect(err):to_match("^EINVAL: " .. field:gsub("%p", "%%%0") .. ": ")
end

-- Deployment JSON as `kubectl get deployment -o json` prints it (trimmed, notes/apis.md §8.1)
local DEPLOYMENT = [[{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "checkout", "namespace": "prod", "generation": 7,
               "annotations": {"deployment.kubernetes.io/revision": "12"}},
  "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "checkout"}},
           "strategy": {"type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}},
  "status": {"observedGeneration": 7, "replicas": 6, "updatedReplicas": 3, "readyReplicas": 5}
}]]

local function service_json(selector, annotations)
  return json.encode({
    apiVersion = "v1", kind = "Service",
    metadata = { name = "web", namespace = "prod", annotations = annotations },
    spec = { selector = selector, ports = { { port = 80, targetPort = 8080 } } },
  })
end

describe("vigil.kube.get_argv", function()
  it("builds get KIND NAME -n NS -o json", function()
    expect(kube.get_argv({ kind = "deployment", name = "web", namespace = "prod" }))
      :to_equal({ "get", "deployment", "web", "-n", "prod", "-o", "json" })
    expect(kube.get_argv({ kind = "service", name = "web", namespace = "prod" }))
      :to_equal({ "get", "service", "web", "-n", "prod", "-o", "json" })
  end)

  it("passes no namespace for a node, and refuses one", function()
    expect(kube.get_argv({ kind = "node", name = "ip-10-0-0-1.ec2.internal" }))
      :to_equal({ "get", "node", "ip-10-0-0-1.ec2.internal", "-o", "json" })
    refused("namespace", kube.get_argv({ kind = "node", name = "n1", namespace = "prod" }))
  end)

  it("raises when called without an options table", function()
    expect(function() kube.get_argv("web") end):to_fail("bad argument #1 to 'vigil.kube.get_argv'")
  end)
end)

describe("vigil.kube validation", function()
  local function get(name, ns, kind)
    return kube.get_argv({ kind = kind or "deployment", name = name, namespace = ns or "prod" })
  end

  it("accepts DNS-1123 subdomain names up to 253 bytes", function()
    local long = ("a"):rep(63) .. "." .. ("b"):rep(63) .. "." .. ("c"):rep(63) .. "." ..
      ("d"):rep(61)
    expect(#long):to_be(253)
    expect(get(long)[3]):to_be(long)
    expect(get("web-1.v2")[3]):to_be("web-1.v2")
    expect(get("0abc")[3]):to_be("0abc")
    refused("name", get(long .. "e"))
  end)

  it("refuses names that are not DNS-1123 subdomains", function()
    for _, bad in ipairs({ "", "Web", "web_1", "-web", "web-", ".web", "web.", "a..b", "we b",
                           "web/x", "web;x", "wéb", "web\n", 42, true }) do
      refused("name", get(bad))
    end
    refused("name", get(nil))
  end)

  it("refuses namespaces that are not DNS-1123 labels (63 bytes at most, no dots)", function()
    expect(get("web", ("n"):rep(63))[5]):to_be(("n"):rep(63))
    for _, bad in ipairs({ ("n"):rep(64), "Prod", "pro.d", "-prod", "prod-", "", "pr od" }) do
      refused("namespace", get("web", bad))
    end
    refused("namespace", kube.get_argv({ kind = "deployment", name = "web" }))
  end)

  it("refuses kube-* namespaces unless allow_system is set", function()
    refused("namespace", get("coredns", "kube-system"))
    local argv = kube.get_argv({ kind = "deployment", name = "coredns", namespace = "kube-system",
      allow_system = true })
    expect(argv):to_equal({ "get", "deployment", "coredns", "-n", "kube-system", "-o", "json" })
  end)

  it("takes kinds from a fixed list only", function()
    for _, bad in ipairs({ "Deployment", "deployments", "deploy", "secret", "namespace",
                           "-deployment", "deployment/web", "", 1 }) do
      refused("kind", get("web", "prod", bad))
    end
    expect(kube.KINDS):to_contain("statefulset")
    expect(kube.KINDS):to_contain("node")
  end)

  it("holds Service names to DNS-1035 (a letter first, no dots)", function()
    expect(kube.get_argv({ kind = "service", name = "web", namespace = "prod" })).never:to_be_nil()
    refused("name", kube.get_argv({ kind = "service", name = "1web", namespace = "prod" }))
    refused("name", kube.get_argv({ kind = "service", name = "web.x", namespace = "prod" }))
  end)

  it("never echoes the refused value in the error", function()
    local _, err = get("web$(id)")
    expect(err).never:to_contain("$(id)")
  end)
end)

describe("vigil.kube.compute_replicas", function()
  it("takes absolute counts", function()
    expect(kube.compute_replicas(3, 5)):to_be(5)
    expect(kube.compute_replicas(3, "7")):to_be(7)
    expect(kube.compute_replicas(3, 0)):to_be(0)
    expect(kube.compute_replicas(3, 4.0)):to_be(4)
    expect(math.type(kube.compute_replicas(3, 4.0))):to_be("integer")
  end)

  it("adds and removes counts", function()
    expect(kube.compute_replicas(3, "+2")):to_be(5)
    expect(kube.compute_replicas(3, "-1")):to_be(2)
    expect(kube.compute_replicas(3, "-5")):to_be(0)
  end)

  it("rounds percentage increases up and decreases down, exactly", function()
    expect(kube.compute_replicas(5, "+20%")):to_be(6) -- 5 * 1.2 is 6.000000000000001 in floats
    expect(kube.compute_replicas(3, "+20%")):to_be(4)
    expect(kube.compute_replicas(1, "+1%")):to_be(2)
    expect(kube.compute_replicas(10, "+12.5%")):to_be(12)
    expect(kube.compute_replicas(5, "-20%")):to_be(4)
    expect(kube.compute_replicas(3, "-50%")):to_be(1)
    expect(kube.compute_replicas(3, "-10%")):to_be(2)
    expect(kube.compute_replicas(4, "-200%")):to_be(0)
    expect(kube.compute_replicas(0, "+50%")):to_be(0)
  end)

  it("bounds the result by min and max", function()
    expect(kube.compute_replicas(9, "+20%", 1, 10)):to_be(10)
    expect(kube.compute_replicas(2, "-50%", 2, 10)):to_be(2)
    expect(kube.compute_replicas(0, "+50%", 1)):to_be(1)
    expect(kube.compute_replicas(3, 100, nil, 8)):to_be(8)
    refused("min", kube.compute_replicas(3, "+1", 5, 4))
    refused("min", kube.compute_replicas(3, "+1", -1))
    refused("max", kube.compute_replicas(3, "+1", 0, 1.5))
  end)

  it("refuses what is not a count or change", function()
    for _, bad in ipairs({ "20%", "+", "+-2", "++2", "+2.5", "2e3", "five", "+20%%", " +2",
                           "+1.0001%", "+9999999%", "+12.%", "+.5%", -1, 2.5, {}, "" }) do
      refused("replicas", kube.compute_replicas(3, bad))
    end
    refused("replicas", kube.compute_replicas(3, nil))
    refused("current", kube.compute_replicas(-1, "+1"))
    refused("current", kube.compute_replicas("3", "+1"))
  end)
end)

describe("vigil.kube.scale", function()
  it("builds scale kind/name --replicas=N -n NS", function()
    expect(kube.scale_argv({ kind = "deployment", name = "web", namespace = "prod", replicas = 5 }))
      :to_equal({ "scale", "deployment/web", "--replicas=5", "-n", "prod" })
    expect(kube.scale_argv({ kind = "statefulset", name = "db", namespace = "prod", replicas = 3,
      current = 2 }))
      :to_equal({ "scale", "statefulset/db", "--replicas=3", "-n", "prod", "--current-replicas=2" })
    refused("kind", kube.scale_argv({ kind = "daemonset", name = "x", namespace = "p",
      replicas = 1 }))
    refused("replicas", kube.scale_argv({ kind = "deployment", name = "x", namespace = "p",
      replicas = "5" }))
  end)

  it("plans a relative change from the current count, with a precondition", function()
    local plan = kube.scale({ kind = "deployment", name = "web", namespace = "prod",
      replicas = "+20%", min = 2, max = 10, current = 5 })
    expect(plan):to_equal({
      kind = "deployment", name = "web", namespace = "prod", replicas = 6, current = 5,
      changed = true,
      argv = { "scale", "deployment/web", "--replicas=6", "-n", "prod", "--current-replicas=5" },
      get_argv = { "get", "deployment", "web", "-n", "prod", "-o", "json" },
    })
  end)

  it("reports a change that the bounds cancel", function()
    local plan = kube.scale({ kind = "deployment", name = "web", namespace = "prod",
      replicas = "+1", max = 4, current = 4 })
    expect(plan.replicas):to_be(4)
    expect(plan.changed):to_be(false)
  end)

  it("needs the current count for a relative change", function()
    refused("current", kube.scale({ kind = "deployment", name = "web", namespace = "prod",
      replicas = "-1" }))
    local plan = kube.scale({ kind = "deployment", name = "web", namespace = "prod",
      replicas = 12, max = 10 })
    expect(plan.argv):to_equal({ "scale", "deployment/web", "--replicas=10", "-n", "prod" })
    expect(plan.current):to_be_nil()
  end)

  it("goes with parse_replicas over kubectl's Deployment JSON", function()
    local current = kube.parse_replicas(DEPLOYMENT)
    expect(current):to_be(5)
    expect(math.type(current)):to_be("integer")
    local plan = kube.scale({ kind = "deployment", name = "checkout", namespace = "prod",
      replicas = "-50%", min = 1, current = current })
    expect(plan.replicas):to_be(2)
  end)
end)

describe("vigil.kube.parse_replicas", function()
  it("fails on output without an integer spec.replicas", function()
    local v, err = kube.parse_replicas('{"kind":"Deployment","spec":{}}')
    expect(v):to_be_nil()
    expect(err):to_match("^EPROTO: ")
    v, err = kube.parse_replicas('{"spec":{"replicas":2.5}}')
    expect(v):to_be_nil()
    expect(err):to_match("^EPROTO: ")
    v, err = kube.parse_replicas("Error from server (NotFound)")
    expect(v):to_be_nil()
    expect(err):to_match("^EJSON: ")
    v, err = kube.parse_replicas("[1]")
    expect(v):to_be_nil()
    expect(err):to_match("^EPROTO: ")
    expect(function() kube.parse_replicas(nil) end):to_fail("bad argument #1")
  end)
end)

describe("vigil.kube.restart_argv and rollout_status_argv", function()
  it("restarts deployments, statefulsets and daemonsets", function()
    expect(kube.restart_argv({ kind = "deployment", name = "web", namespace = "prod" }))
      :to_equal({ "rollout", "restart", "deployment/web", "-n", "prod" })
    expect(kube.restart_argv({ kind = "daemonset", name = "agent", namespace = "ops" }))
      :to_equal({ "rollout", "restart", "daemonset/agent", "-n", "ops" })
    refused("kind", kube.restart_argv({ kind = "pod", name = "web", namespace = "prod" }))
  end)

  it("waits for a rollout with a timeout that is never 0", function()
    expect(kube.rollout_status_argv({ kind = "deployment", name = "web", namespace = "prod" }))
      :to_equal({ "rollout", "status", "deployment/web", "-n", "prod", "--timeout=300s" })
    expect(kube.rollout_status_argv({ kind = "statefulset", name = "db", namespace = "prod",
      timeout = "2m", revision = 4 }))
      :to_equal({ "rollout", "status", "statefulset/db", "-n", "prod", "--timeout=120s",
        "--revision=4" })
    expect(kube.rollout_status_argv({ kind = "deployment", name = "w", namespace = "p",
      timeout = 1.5 })[6]):to_be("--timeout=2s")
    for _, bad in ipairs({ 0, -5, "soon", 100000, 0 / 0 }) do
      refused("timeout", kube.rollout_status_argv({ kind = "deployment", name = "w",
        namespace = "p", timeout = bad }))
    end
    refused("revision", kube.rollout_status_argv({ kind = "deployment", name = "w",
      namespace = "p", revision = "4; rm" }))
  end)
end)

describe("vigil.kube.encode", function()
  it("sorts keys, keeps integers exact and marks arrays", function()
    expect(kube.encode({ b = 1, a = { d = true, c = json.null }, e = { 3, 2 } }))
      :to_be('{"a":{"c":null,"d":true},"b":1,"e":[3,2]}')
    expect(kube.encode({ n = 9007199254740993, f = 0.1 })):to_be('{"f":0.10000000000000001,'
      .. '"n":9007199254740993}')
    expect(kube.encode({ list = kube.array({}), obj = {} })):to_be('{"list":[],"obj":{}}')
  end)

  it("refuses what JSON cannot say", function()
    for _, bad in ipairs({ { 1, nil, 3 }, { [1] = "a", x = "b" }, { [2] = "x" }, { f = print },
                           { s = "\xff" }, { n = math.huge } }) do
      refused("json", kube.encode(bad))
    end
    local deep = {}
    local cur = deep
    for _ = 1, 40 do cur.x = {}; cur = cur.x end
    refused("json", kube.encode(deep))
  end)
end)

describe("vigil.kube.patch_argv", function()
  it("encodes a table patch with sorted keys", function()
    expect(kube.patch_argv({ kind = "deployment", name = "web", namespace = "prod",
      patch = { spec = { template = { metadata = { annotations = { z = "1", a = "2" } } } } } }))
      :to_equal({ "patch", "deployment/web", "-n", "prod", "--type=strategic", "-p",
        '{"spec":{"template":{"metadata":{"annotations":{"a":"2","z":"1"}}}}}' })
  end)

  it("takes merge and json patches, strings passed as they are", function()
    expect(kube.patch_argv({ kind = "deployment", name = "web", namespace = "prod", type = "merge",
      patch = '{"spec": {"replicas": 3}}' }))
      :to_equal({ "patch", "deployment/web", "-n", "prod", "--type=merge", "-p",
        '{"spec": {"replicas": 3}}' })
    expect(kube.patch_argv({ kind = "deployment", name = "web", namespace = "prod", type = "json",
      patch = { { op = "replace", path = "/spec/replicas", value = 3 } } })[7])
      :to_be('[{"op":"replace","path":"\\/spec\\/replicas","value":3}]')
  end)

  it("refuses patches of the wrong shape", function()
    local base = { kind = "deployment", name = "web", namespace = "prod" }
    local function with(t)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(t) do o[k] = v end
      return kube.patch_argv(o)
    end
    refused("type", with({ patch = { a = 1 }, type = "apply" }))
    refused("patch", with({ patch = { { op = "remove", path = "/x" } } }))      -- array, strategic
    refused("patch", with({ patch = { spec = {} }, type = "json" }))            -- object, json
    refused("patch", with({ patch = {} }))
    refused("patch", with({ patch = "{not json" }))
    refused("patch", with({ patch = '{"a":\n1}' }))
    refused("patch", with({ patch = '"text"' }))
    refused("patch", with({ patch = 42 }))
    refused("patch", with({ patch = { a = "\xc0\x80" } }))
  end)
end)

describe("vigil.kube isolate and failback", function()
  it("isolates with one merge patch that saves the current selector", function()
    local argv = kube.isolate_argv({ service = "web", namespace = "prod",
      selector = { app = "maintenance" }, current_selector = { app = "web", tier = "front" } })
    expect(#argv):to_be(7)
    expect({ argv[1], argv[2], argv[3], argv[4], argv[5], argv[6] })
      :to_equal({ "patch", "service/web", "-n", "prod", "--type=merge", "-p" })
    expect(argv[7]):to_be('{"metadata":{"annotations":{"vigil.dev\\/saved-selector":'
      .. '"{\\"app\\":\\"web\\",\\"tier\\":\\"front\\"}"}},'
      .. '"spec":{"selector":{"app":"maintenance","tier":null}}}')
  end)

  it("round-trips through Service JSON: saved_selector reads what isolate saved", function()
    local argv = kube.isolate_argv({ service = "web", namespace = "prod",
      selector = { ["vigil.dev/maintenance"] = "true" }, current_selector = { app = "web" } })
    local patch = json.decode(argv[7])
    local saved_text = patch.metadata.annotations[kube.SAVED_SELECTOR]
    local svc = service_json({ ["vigil.dev/maintenance"] = "true" },
      { [kube.SAVED_SELECTOR] = saved_text })
    expect(kube.saved_selector(svc)):to_equal({ app = "web" })
    expect(kube.selector(svc)):to_equal({ ["vigil.dev/maintenance"] = "true" })
    local back = kube.failback_argv({ service = "web", namespace = "prod",
      saved_selector = kube.saved_selector(svc) })
    expect(back):to_equal({ "patch", "service/web", "-n", "prod", "--type=json", "-p",
      '[{"op":"replace","path":"\\/spec\\/selector","value":{"app":"web"}},'
      .. '{"op":"remove","path":"\\/metadata\\/annotations\\/vigil.dev~1saved-selector"}]' })
  end)

  it("refuses to isolate twice or with bad selectors", function()
    local function iso(sel, cur)
      return kube.isolate_argv({ service = "web", namespace = "prod", selector = sel,
        current_selector = cur })
    end
    refused("selector", iso({ app = "m" }, { app = "m" }))
    refused("selector", iso({}, { app = "web" }))
    refused("current_selector", iso({ app = "m" }, {}))
    refused("selector", iso({ ["app"] = "bad value" }, { app = "web" }))
    refused("selector", iso({ ["-app"] = "m" }, { app = "web" }))
    refused("selector", iso({ ["a/b/c"] = "m" }, { app = "web" }))
    refused("selector", iso({ ["Bad_Prefix/app"] = "m" }, { app = "web" }))
    refused("selector", iso({ app = 1 }, { app = "web" }))
    refused("selector", iso({ [1] = "m" }, { app = "web" }))
    refused("selector", iso({ app = ("v"):rep(64) }, { app = "web" }))
    refused("service", kube.isolate_argv({ service = "Web", namespace = "prod",
      selector = { app = "m" }, current_selector = { app = "web" } }))
    expect(iso({ ["example.com/app"] = "" }, { app = "web" })).never:to_be_nil()
  end)

  it("reports a Service that is not isolated or carries a broken annotation", function()
    local v, err = kube.saved_selector(service_json({ app = "web" }))
    expect(v):to_be_nil()
    expect(err):to_match("^ENOENT: ")
    v, err = kube.saved_selector(service_json({ app = "web" }, { [kube.SAVED_SELECTOR] = "{x" }))
    expect(v):to_be_nil()
    expect(err):to_match("^EPROTO: ")
    v, err = kube.saved_selector(service_json({ app = "web" },
      { [kube.SAVED_SELECTOR] = '{"app":"$(id)"}' }))
    expect(v):to_be_nil()
    expect(err):to_match("^EPROTO: ")
    v, err = kube.selector('{"spec":{}}')
    expect(v):to_be_nil()
    expect(err):to_match("^EPROTO: ")
  end)
end)

describe("vigil.kube.command", function()
  it("puts the kubectl path first", function()
    local argv = kube.get_argv({ kind = "pod", name = "p", namespace = "n" })
    expect(kube.command(argv)):to_equal({ "kubectl", "get", "pod", "p", "-n", "n", "-o", "json" })
    expect(kube.command(argv, "/usr/local/bin/kubectl")[1]):to_be("/usr/local/bin/kubectl")
    expect(function() kube.command(argv, "") end):to_fail("bad argument #2")
  end)
end)
