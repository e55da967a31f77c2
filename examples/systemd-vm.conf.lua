-- vigil on a VM next to the services it looks after, run by systemd (see docs/running.md):
--   [Service]
--   ExecStart=/usr/local/bin/vigil run -c /etc/vigil/vigil.conf.lua
--   Restart=on-failure
--   User=vigil
--   StateDirectory=vigil
-- Actions restart units through systemctl (allowlisted, argv only); a polkit rule or sudoers
-- entry for the vigil user should allow exactly those units and nothing else.
return {
  listen = "127.0.0.1:9095",
  store = "/var/lib/vigil/vigil.db",
  policies = "/etc/vigil/policies",
  repl_socket = "/run/vigil/vigil.sock",

  sources = {
    prom = { kind = "prometheus", url = "http://127.0.0.1:9090", timeout = "5s" },
    loki = { kind = "loki", url = "http://127.0.0.1:3100" },
  },

  -- Who the policies tell (the bundled ones use these three names, policies/README.md). The
  -- secrets come from the unit's environment, e.g. EnvironmentFile=/etc/vigil/secrets.env
  -- (mode 0600), never from this file.
  notifiers = {
    oncall = { kind = "pagerduty", routing_key = env "VIGIL_PD_ONCALL_KEY" },
    managers = { kind = "webhook", url = "https://paging.internal/api/escalate",
                 secret = env "VIGIL_HOOK_SECRET", headers = { ["X-Team"] = "sre" } },
    team = { kind = "slack", webhook = env "VIGIL_SLACK_WEBHOOK", channel = "#ops" },
  },

  executor = {
    mode = "dry-run",                          -- watch what it would do first; then "enforce"
    allow = { "/usr/bin/systemctl", "/usr/bin/journalctl" },
    env = { "PATH", "LANG" },
    net_ports = {},                            -- actions need no network here
    kill_switch_file = "/run/vigil/stop",
    timeout = "60s",
  },

  guard = { rate = "6/h", target_rate = "2/h", cooldown = "15m", breaker_failures = 2 },
}
