return { name = "x", match = { 'severity=~"(crit|high)"', alertname = "A" }, on_alert = function(a, ctx) return a.labels end }
