-- vigil as a sidecar in a Kubernetes pod: it takes the cluster's Alertmanager webhook, reads the
-- in-cluster Prometheus, and may restart and scale the Deployments of its own namespace.
-- Mount the policies from a ConfigMap at /etc/vigil/policies and give the pod's service account
-- only the verbs below (RBAC is the outer guard rail). docs/actions.md explains every key.
return {
  listen = "0.0.0.0:9095",              -- the pod's port; a mesh or proxy terminates TLS
  token = env "VIGIL_TOKEN",            -- every write needs "Authorization: Bearer ..."
  store = "/var/lib/vigil/vigil.db",    -- a PersistentVolume: claims and budgets survive
  policies = "/etc/vigil/policies",
  repl_socket = "/var/run/vigil/vigil.sock",

  -- What the bundled policies read (policies/README.md): Prometheus with the recording rules
  -- of examples/prometheus/vigil-rules.yml, and Loki for error-spike.
  sources = {
    prom = { kind = "prometheus", url = "http://prometheus-server.monitoring:9090",
             timeout = "5s" },
    loki = { kind = "loki", url = "http://loki-gateway.monitoring", timeout = "10s" },
    alertmanager = { kind = "alertmanager", url = "http://alertmanager.monitoring:9093" },
  },

  -- Who the bundled policies tell: `oncall` is paged (crash loops, disks about to fill, new
  -- error patterns, unacknowledged critical incidents), `team` gets the rest, `managers` are
  -- paged when a critical incident stays unacknowledged for 25 minutes. The secrets come from
  -- the pod's environment (a Secret mounted with envFrom), never from this file.
  notifiers = {
    oncall = { kind = "pagerduty", routing_key = env "VIGIL_PD_ONCALL_KEY" },
    managers = { kind = "pagerduty", routing_key = env "VIGIL_PD_MANAGERS_KEY" },
    team = { kind = "slack", webhook = env "VIGIL_SLACK_WEBHOOK", channel = "#sre",
             username = "vigil" },
  },

  executor = {
    mode = "enforce",
    allow = { "/usr/local/bin/kubectl" },
    env = { "PATH", "HOME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT" },
    scratch = "/var/lib/vigil/scratch",
    net_ports = { 443, 6443 },                -- the API server, nothing else
    landlock = "require", seccomp = "require", -- refuse to start less confined
    kill_switch_file = "/var/run/vigil/stop", -- kubectl exec ... touch it to stop everything
    approval_timeout = "15m",
  },

  guard = {
    rate = "10/h", target_rate = "3/h", cooldown = "10m",
    blast_targets = 3, blast_window = "30m",
    types = { scale = { rate = "6/h" }, restart = { rate = "6/h", concurrency = 1 } },
  },
}
