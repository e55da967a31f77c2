return { name = "y", match = "{a=\"1\", b!~\"x.*\"}", every = { j = { interval = "1s", run = function() end } }, limits = { memory = "8MB", timeout = "1m" } }
