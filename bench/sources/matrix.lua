-- bench/sources/matrix.lua: how long turning an 11,000-point matrix answer into prom.lua's
-- matrix shape takes, fed to `vigil repl` after a prologue setting BODY (the answer body,
-- from gen_matrix.py) and ITER. `convert` is prom.lua's own (vigil.prom exports it). Timed per
-- iteration with os.clock() (this process' CPU time, microsecond resolution; the work is
-- CPU-bound, single-threaded) and the loop as a whole with vigil.now() (wall, ms resolution
-- over the whole loop). Garbage collection is left to run as it would in a policy. Prints
-- RESULT lines.
-- luacheck: allow_defined_top, read_globals vigil BODY ITER
convert = require("vigil.prom").convert

function median(t)
  table.sort(t)
  return t[math.ceil(#t / 2)]
end

-- sanity: the shape and the point count
m = convert(vigil.json.decode(BODY).data)
npoints = 0
for _, s in ipairs(m) do npoints = npoints + #s.values; assert(#s.ts == #s.values) end
assert(type(m[1].values[1]) == "number" and type(m[1].ts[1]) == "number")

function bench()
  local both, dec, conv = {}, {}, {}
  local w0 = vigil.now()
  for it = 1, ITER do
    local c0 = os.clock()
    local doc = vigil.json.decode(BODY)
    local c1 = os.clock()
    local out = convert(doc.data)
    local c2 = os.clock()
    assert(#out == #m)
    both[it], dec[it], conv[it] = c2 - c0, c1 - c0, c2 - c1
  end
  local wall = (vigil.now() - w0) / ITER
  return median(both), median(dec), median(conv), wall
end

b, d, c, w = bench()
print(("RESULT client=vigil phase=matrix points=%d bytes=%d both=%.6f decode=%.6f "
  .. "convert=%.6f wall_per_iter=%.6f iter=%d"):format(npoints, #BODY, b, d, c, w, ITER))
