-- Spec of vigil.json: decoding and encoding on the VM's private lua-cjson, EJSON failures
-- returned (never raised) for bad input, and json.null.
local json = vigil.json

describe("vigil.json.decode", function()
  it("decodes objects, arrays, strings, numbers, booleans", function()
    local v = json.decode('{"status":"success","data":{"result":[1,2.5,-3e2]},"ok":true,' ..
      '"no":false,"s":"a\\"b\\\\c\\n\\u00e9\\u20ac"}')
    expect(v.status):to_be("success")
    expect(v.data.result):to_equal({ 1, 2.5, -300 })
    expect(v.ok):to_be(true)
    expect(v.no):to_be(false)
    expect(v.s):to_be('a"b\\c\n\u{e9}\u{20ac}')
    expect(json.decode("[]")):to_equal({})
    expect(json.decode("{}")):to_equal({})
    expect(json.decode('"text"')):to_be("text")
    expect(json.decode("42")):to_be(42)
    expect(json.decode(" [ 1 , 2 ] ")):to_equal({ 1, 2 })
  end)

  it("decodes null as json.null, a value distinct from nil", function()
    expect(json.null).never:to_be_nil()
    expect(json.decode("null")):to_be(json.null)
    local v = json.decode('{"a":null,"b":[null,1]}')
    expect(v.a):to_be(json.null)
    expect(v.b[1]):to_be(json.null)
    expect(v.b[2]):to_be(1)
  end)

  it("returns nil, 'EJSON: ...' for malformed input", function()
    for _, text in ipairs({ "{oops", "", "[1,", "1 2", "{'a':1}", "[1,]", "nul", '"unterminated',
                            "{\"a\" 1}", "\1" }) do
      local v, err = json.decode(text)
      expect(v):to_be_nil()
      expect(err):to_match("^EJSON: ")
    end
  end)

  it("refuses hostile nesting with EJSON instead of running out of stack", function()
    local deep = string.rep("[", 100000) .. string.rep("]", 100000)
    local v, err = json.decode(deep)
    expect(v):to_be_nil()
    expect(err):to_match("^EJSON: ")
  end)

  it("raises when given something other than a string", function()
    local ok, err = pcall(json.decode, 42)
    expect(ok):to_be(false)
    expect(err):to_contain("bad argument #1 to 'decode' (string expected, got number)")
    ok, err = pcall(json.decode)
    expect(ok):to_be(false)
    expect(err):to_contain("got nil")
  end)
end)

describe("vigil.json.encode", function()
  it("encodes values", function()
    expect(json.encode({ a = 1 })):to_be('{"a":1}')
    expect(json.encode({ 1, 2, 3 })):to_be("[1,2,3]")
    expect(json.encode("x\"y\n")):to_be('"x\\"y\\n"')
    expect(json.encode(true)):to_be("true")
    expect(json.encode(1.5)):to_be("1.5")
    expect(json.encode(json.null)):to_be("null")
    expect(json.encode({ a = json.null })):to_be('{"a":null}')
    expect(json.encode({ nested = { list = { "x" } } })):to_be('{"nested":{"list":["x"]}}')
  end)

  it("round-trips through decode", function()
    local value = { name = "api", replicas = 3, labels = { "a", "b" }, paused = false,
                    ratio = 0.25, unicode = "\u{e9}" }
    local text = assert(json.encode(value))
    expect(json.decode(text)):to_equal(value)
  end)

  it("returns nil, 'EJSON: ...' for values JSON cannot hold", function()
    local cycle = {}
    cycle.self = cycle
    local cases = { function() end, cycle, 0 / 0, 1 / 0, { [true] = 1 },
                    { [1] = 1, [1000000] = 2 } }
    for i, value in ipairs(cases) do
      local text, err = json.encode(value)
      if text ~= nil then error(("case %d encoded as %s"):format(i, text)) end
      expect(err):to_match("^EJSON: ")
    end
  end)
end)
