local s = ("a"):rep(100) return { name = s:find(".-b") and "z" or "w", match = {}, on_alert = print }
