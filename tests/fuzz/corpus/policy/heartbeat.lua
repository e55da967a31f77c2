-- A periodic job: every minute, log that the daemon is alive and how long it has been up.
local started = vigil.now()

return {
  name = "heartbeat",
  match = {},
  every = {
    alive = {
      interval = "1m",
      run = function(ctx)
        ctx.log.info("alive", { uptime_s = math.floor(vigil.now() - started) })
      end,
    },
  },
}
