-- luacheck configuration: Lua 5.4, no implicit globals anywhere.
std = "lua54"
max_line_length = 100
codes = true
-- Fuzz seeds are inputs (some deliberately odd), not code we maintain.
exclude_files = { "tests/fuzz/corpus/**" }

-- The runtime library runs with the real globals of its VM.
files["lua/vigil"] = { std = "lua54" }

-- Policies and their libraries see only the sandbox (docs/policies.md).
local sandbox = {
  "assert", "error", "ipairs", "next", "pairs", "select", "tonumber", "tostring", "type",
  "rawequal", "rawlen", "rawget", "pcall", "xpcall", "setmetatable", "getmetatable", "load",
  "require", "print", "_VERSION", "string", "table", "math", "utf8", "os", "vigil",
}
files["policies"] = { std = "none", read_globals = sandbox }
files["examples"] = { std = "none", read_globals = sandbox, globals = { "env", "file" } }

-- Specs also get the test harness globals.
local spec = { "describe", "it", "pending", "before_each", "after_each", "expect", "spy" }
for _, dir in ipairs({ "tests/lua", "tests/sandbox", "policies", "examples", "docs" }) do
  files[dir .. "/**/*_spec.lua"] = {
    std = "none", read_globals = (function()
      local t = {}
      for _, v in ipairs(sandbox) do t[#t + 1] = v end
      for _, v in ipairs(spec) do t[#t + 1] = v end
      return t
    end)(),
  }
end
