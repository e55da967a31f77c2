/* vigil.crypto: SHA-256 and HMAC-SHA256 for Lua (webhook signatures in lua/vigil/notify.lua,
 * content hashes). Digests come back as lowercase hex, so they print, log and compare as text. */
#include <lauxlib.h>

#include "engine/sha256.h"
#include "lua/lvigil.h"

/* crypto.sha256(msg) [-1, +1, e]: hex digest of the bytes of `msg` (a string; raises otherwise). */
static int l_sha256(lua_State *L)
{
  size_t len;
  const char *msg = luaL_checklstring(L, 1, &len);
  uint8_t digest[VG_SHA256_DIGEST_LEN];
  char hex[VG_SHA256_HEX_LEN + 1];
  vg_sha256(msg, len, digest);
  vg_hex_lower(digest, sizeof digest, hex);
  lua_pushlstring(L, hex, VG_SHA256_HEX_LEN);
  return 1;
}

/* crypto.hmac_sha256(key, msg) [-2, +1, e]: hex HMAC-SHA256 of `msg` under `key`. Both must be
 * strings; the error for a wrong type names the argument, never its value (a key is a secret). */
static int l_hmac_sha256(lua_State *L)
{
  size_t key_len, msg_len;
  if (lua_type(L, 1) != LUA_TSTRING) {
    return luaL_typeerror(L, 1, "string");
  }
  const char *key = lua_tolstring(L, 1, &key_len);
  const char *msg = luaL_checklstring(L, 2, &msg_len);
  uint8_t digest[VG_SHA256_DIGEST_LEN];
  char hex[VG_SHA256_HEX_LEN + 1];
  vg_hmac_sha256(key, key_len, msg, msg_len, digest);
  vg_hex_lower(digest, sizeof digest, hex);
  lua_pushlstring(L, hex, VG_SHA256_HEX_LEN);
  return 1;
}

int vg_open_vigil_crypto(lua_State *L)
{
  static const luaL_Reg funcs[] = {
    { "sha256", l_sha256 },
    { "hmac_sha256", l_hmac_sha256 },
    { NULL, NULL },
  };
  luaL_newlib(L, funcs);
  return 1;
}
