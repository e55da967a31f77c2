-- An example vigil config. Every key is optional; these are the defaults unless noted.
return {
  listen = "127.0.0.1:9095",
  store = "vigil.db",
  policies = "examples/policies",  -- default: "policies"
  repl_socket = "vigil.sock",
  log_level = "info",
  -- token = env "VIGIL_TOKEN",    -- secrets come from env "NAME" or file "PATH", never literals
  limits = { memory = "64MB", instructions = 100000000, slice = "1s", timeout = "5m" },
  policy_errors = { max = 5, window = "5m" },
  drain = "30s",
  reload_debounce = "200ms",
  watchdog = "5s",
  executor = { mode = "dry-run" },
}
