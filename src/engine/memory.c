/* What vigil remembers about incidents (see memory.h): one table of operations, each a function
 * over a store connection taking JSON arguments (checked against the operation's argument
 * specs first) and building a JSON result. Writes run in the store's writer (vg_store_call),
 * reads on the thread pool (vg_store_read); the answer comes back on the loop as JSON text. */
#include "engine/memory.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/alertdec.h"

#define ARGS_MAX (1u << 20)        /* bytes of argument JSON accepted at all */
#define NAME_MAX_BYTES 256         /* policy, key, who, event, class, fix and other names */
#define TEXT_MAX_BYTES (64u << 10) /* kb text, comments, state values, plans, details */
#define LABELS_MAX 128             /* labels per label set */
#define LABEL_VALUE_MAX 4096       /* bytes of one label value */
#define TERMS_MAX 64               /* distinct terms of a similarity query */
#define TERM_MAX_BYTES 64          /* longer words (hashes, ids) are left out of the query */
#define CANDIDATES_MAX 500         /* full-text matches rescored with the label overlap */
#define DUE_LEASE_MS 60000         /* a timer handed out as due is not handed out again before */
#define DUE_ROUNDS 8               /* escalations_due: queries to fill `limit` past cancellations */
#define STATE_SWEEP 100            /* expired state entries deleted per state_set */

/* An operation: checks done, it reads or writes through `db` and sets *result to a new JSON
 * object. Returns 0, or -EINVAL/-ENOENT/-EIO/-ENOMEM with a message in err. */
typedef int (*memory_fn)(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen);

typedef enum {
  A_INT,    /* an integer in [min, max] (an integral JSON real is taken too) */
  A_NUM,    /* a number in [min, max] */
  A_BOOL,   /* true or false */
  A_STR,    /* a string of min..max bytes, one of `choices` when given */
  A_LABELS, /* an object of strings (an empty array counts as {}: Lua's empty table) */
  A_JSON,   /* any JSON value of at most max bytes as compact text */
} arg_kind_t;

typedef struct {
  const char *name;
  arg_kind_t kind;
  bool required;
  int64_t min, max;
  const char *const *choices; /* NULL-terminated; NULL: any */
} arg_spec_t;

#define ARG_SPECS 11

typedef struct {
  const char *name;
  bool read;
  memory_fn fn;
  arg_spec_t args[ARG_SPECS]; /* ends at the first one without a name */
} memory_op_t;

/* ---- small helpers ---- */

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The argument `name`, NULL when absent or null. */
static json_t *arg(json_t *args, const char *name)
{
  json_t *v = json_object_get(args, name);
  return json_is_null(v) ? NULL : v;
}

/* An integer argument already checked (A_INT); `dflt` when absent. */
static int64_t arg_int(json_t *args, const char *name, int64_t dflt)
{
  json_t *v = arg(args, name);
  if (json_is_integer(v)) {
    return json_integer_value(v);
  }
  return json_is_real(v) ? (int64_t)json_real_value(v) : dflt;
}

static const char *arg_str(json_t *args, const char *name)
{
  return json_string_value(arg(args, name));
}

static int db_error(sqlite3 *db, char *err, size_t errlen)
{
  snprintf(err, errlen, "%s", sqlite3_errmsg(db));
  return -EIO;
}

static int oom(char *err, size_t errlen)
{
  snprintf(err, errlen, "out of memory");
  return -ENOMEM;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
  return sqlite3_prepare_v2(db, sql, -1, st, NULL);
}

static void bind_str(sqlite3_stmt *st, int i, const char *v)
{
  if (v != NULL) {
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
  } else {
    sqlite3_bind_null(st, i);
  }
}

/* Runs a statement to its end and finalizes it: SQLITE_OK or the error. */
static int step_done(sqlite3_stmt *st)
{
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Compact JSON text of an argument value (NULL when absent, or on OOM with *ok cleared). */
static char *dump_arg(json_t *args, const char *name, bool *ok)
{
  json_t *v = arg(args, name);
  if (v == NULL) {
    return NULL;
  }
  char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  *ok = *ok && text != NULL;
  return text;
}

/* A label set as stored: compact JSON with sorted keys ("{}" for an empty array). */
static char *dump_labels(json_t *labels, bool *ok)
{
  if (labels == NULL) {
    return NULL;
  }
  char *text =
      json_is_array(labels) ? strdup("{}") : json_dumps(labels, JSON_COMPACT | JSON_SORT_KEYS);
  *ok = *ok && text != NULL;
  return text;
}

/* A JSON string of the column's text; bytes that are not valid UTF-8 (never written by this
 * module) become '?' rather than failing the answer. */
static json_t *text_json(const char *t, size_t len)
{
  json_t *v = json_stringn(t, len);
  if (v != NULL || t == NULL) {
    return v;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < len; i++) {
    copy[i] = (unsigned char)t[i] < 0x80 && t[i] != '\0' ? t[i] : '?';
  }
  v = json_stringn(copy, len);
  free(copy);
  return v;
}

/* Keys whose column holds JSON text, decoded into the answer. */
static bool json_key(const char *key)
{
  static const char *const keys[] = { "labels", "annotations", "plan", "value", "detail", "steps" };
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (strcmp(key, keys[i]) == 0) {
      return true;
    }
  }
  return false;
}

/* The row as an object keyed by names[0..n): NULL columns (and NULL names) are left out, so
 * that a Lua caller finds nil rather than a null sentinel. NULL on OOM. */
static json_t *row_json(sqlite3_stmt *st, const char *const names[], int n)
{
  json_t *o = json_object();
  for (int i = 0; o != NULL && i < n; i++) {
    int type = sqlite3_column_type(st, i);
    if (names[i] == NULL || type == SQLITE_NULL) {
      continue;
    }
    json_t *v;
    if (type == SQLITE_INTEGER) {
      v = json_integer(sqlite3_column_int64(st, i));
    } else if (type == SQLITE_FLOAT) {
      v = json_real(sqlite3_column_double(st, i));
    } else {
      const char *t = (const char *)sqlite3_column_text(st, i);
      size_t len = (size_t)sqlite3_column_bytes(st, i);
      v = json_key(names[i]) && t != NULL ? json_loadb(t, len, JSON_DECODE_ANY, NULL) : NULL;
      v = v != NULL ? v : text_json(t != NULL ? t : "", len);
    }
    if (v == NULL || json_object_set_new(o, names[i], v) != 0) {
      json_decref(o);
      o = NULL;
    }
  }
  return o;
}

/* Every row of `sql` (?1 bound to id) as an array of row_json objects in *out. */
static int rows_json(sqlite3 *db,
                     const char *sql,
                     int64_t id,
                     const char *const names[],
                     int n,
                     json_t **out,
                     char *err,
                     size_t errlen)
{
  sqlite3_stmt *st;
  if (prepare(db, sql, &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  json_t *arr = json_array();
  int rc = SQLITE_OK;
  bool ok = arr != NULL;
  while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *o = row_json(st, names, n);
    ok = o != NULL && json_array_append_new(arr, o) == 0;
  }
  sqlite3_finalize(st);
  if (!ok) {
    json_decref(arr);
    return oom(err, errlen);
  }
  if (rc != SQLITE_DONE) {
    json_decref(arr);
    return db_error(db, err, errlen);
  }
  *out = arr;
  return 0;
}

/* The incident's status into status[16]: 0, -ENOENT ("no incident 7") or -EIO. */
static int incident_status(sqlite3 *db, int64_t id, char status[16], char *err, size_t errlen)
{
  sqlite3_stmt *st;
  if (prepare(db, "SELECT status FROM incidents WHERE id = ?1", &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    snprintf(status, 16, "%s", (const char *)sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE) {
    snprintf(err, errlen, "no incident %" PRId64, id);
    return -ENOENT;
  }
  return rc == SQLITE_ROW ? 0 : db_error(db, err, errlen);
}

static int insert_timeline(sqlite3 *db,
                           int64_t inc,
                           const char *who,
                           const char *event,
                           const char *comment,
                           const char *detail,
                           int64_t *id)
{
  sqlite3_stmt *st;
  int rc = prepare(db,
                   "INSERT INTO timeline (incident_id, at, who, event, comment, detail)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                   &st);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_int64(st, 1, inc);
  sqlite3_bind_int64(st, 2, now_ms());
  bind_str(st, 3, who);
  bind_str(st, 4, event);
  bind_str(st, 5, comment);
  bind_str(st, 6, detail);
  rc = step_done(st);
  if (rc == SQLITE_OK && id != NULL) {
    *id = sqlite3_last_insert_rowid(db);
  }
  return rc;
}

/* ---- argument checks ---- */

static bool one_of(const char *s, const char *const *choices)
{
  for (; *choices != NULL; choices++) {
    if (strcmp(s, *choices) == 0) {
      return true;
    }
  }
  return false;
}

static int check_labels(const arg_spec_t *a, json_t *v, char *err, size_t errlen)
{
  if (json_is_array(v) && json_array_size(v) == 0) {
    return 0;
  }
  if (!json_is_object(v)) {
    snprintf(err, errlen, "'%s' must be an object of strings", a->name);
    return -EINVAL;
  }
  if (json_object_size(v) > LABELS_MAX) {
    snprintf(err, errlen, "'%s' has more than %d labels", a->name, LABELS_MAX);
    return -EINVAL;
  }
  const char *k;
  json_t *lv;
  json_object_foreach(v, k, lv)
  {
    if (!json_is_string(lv)) {
      snprintf(err, errlen, "'%s' must be an object of strings ('%.64s' is not a string)", a->name,
               k);
      return -EINVAL;
    }
    if (strlen(k) > NAME_MAX_BYTES || json_string_length(lv) > LABEL_VALUE_MAX) {
      snprintf(err, errlen, "'%s': label '%.64s' is longer than %d bytes", a->name, k,
               strlen(k) > NAME_MAX_BYTES ? NAME_MAX_BYTES : LABEL_VALUE_MAX);
      return -EINVAL;
    }
  }
  return 0;
}

static int check_arg(const arg_spec_t *a, json_t *v, char *err, size_t errlen)
{
  switch (a->kind) {
    case A_INT: {
      double d = json_is_real(v) ? json_real_value(v) : 0;
      bool integral = json_is_integer(v) || (json_is_real(v) && d == floor(d) && fabs(d) < 9e15);
      if (!integral) {
        snprintf(err, errlen, "'%s' must be an integer", a->name);
        return -EINVAL;
      }
      int64_t n = json_is_integer(v) ? json_integer_value(v) : (int64_t)d;
      if (n < a->min || n > a->max) {
        if (a->max == INT64_MAX) {
          snprintf(err, errlen, "'%s' must be at least %" PRId64, a->name, a->min);
        } else {
          snprintf(err, errlen, "'%s' must be between %" PRId64 " and %" PRId64, a->name, a->min,
                   a->max);
        }
        return -EINVAL;
      }
      return 0;
    }
    case A_NUM:
      if (!json_is_number(v) || !isfinite(json_number_value(v))) {
        snprintf(err, errlen, "'%s' must be a number", a->name);
        return -EINVAL;
      }
      if (json_number_value(v) < (double)a->min || json_number_value(v) > (double)a->max) {
        snprintf(err, errlen, "'%s' must be between %" PRId64 " and %" PRId64, a->name, a->min,
                 a->max);
        return -EINVAL;
      }
      return 0;
    case A_BOOL:
      if (!json_is_boolean(v)) {
        snprintf(err, errlen, "'%s' must be a boolean", a->name);
        return -EINVAL;
      }
      return 0;
    case A_STR:
      if (!json_is_string(v)) {
        snprintf(err, errlen, "'%s' must be a string", a->name);
        return -EINVAL;
      }
      if ((int64_t)json_string_length(v) < a->min) {
        snprintf(err, errlen, "'%s' must not be empty", a->name);
        return -EINVAL;
      }
      if ((int64_t)json_string_length(v) > a->max) {
        snprintf(err, errlen, "'%s' is longer than %" PRId64 " bytes", a->name, a->max);
        return -EINVAL;
      }
      if (a->choices != NULL && !one_of(json_string_value(v), a->choices)) {
        int n = snprintf(err, errlen, "'%s' must be one of", a->name);
        for (const char *const *c = a->choices; *c != NULL && n > 0 && (size_t)n < errlen; c++) {
          n += snprintf(err + n, errlen - (size_t)n, "%s \"%s\"", c == a->choices ? "" : ",", *c);
        }
        return -EINVAL;
      }
      return 0;
    case A_LABELS:
      return check_labels(a, v, err, errlen);
    case A_JSON: {
      size_t size = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_ENCODE_ANY);
      if (size == 0 || (int64_t)size > a->max) {
        snprintf(err, errlen, "'%s' is larger than %" PRId64 " bytes as JSON", a->name, a->max);
        return -EINVAL;
      }
      return 0;
    }
  }
  return -EINVAL;
}

/* Every argument known to `op`, of the right kind and size, every required one present. */
static int check_args(const memory_op_t *op, json_t *args, char *err, size_t errlen)
{
  const char *key;
  json_t *v;
  json_object_foreach(args, key, v)
  {
    bool known = false;
    for (const arg_spec_t *a = op->args; a->name != NULL && !known; a++) {
      known = strcmp(a->name, key) == 0;
    }
    if (!known) {
      snprintf(err, errlen, "unknown argument '%.64s'", key);
      return -EINVAL;
    }
  }
  for (const arg_spec_t *a = op->args; a->name != NULL; a++) {
    json_t *given = arg(args, a->name);
    if (given == NULL) {
      if (a->required) {
        snprintf(err, errlen, "'%s' is required", a->name);
        return -EINVAL;
      }
      continue;
    }
    int rc = check_arg(a, given, err, errlen);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

/* ---- timeline notes ---- */

static int op_note(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t inc = arg_int(args, "incident", 0), id = 0;
  char status[16];
  int rc = incident_status(db, inc, status, err, errlen);
  if (rc != 0) {
    return rc;
  }
  bool ok = true;
  char *detail = dump_arg(args, "detail", &ok);
  if (!ok) {
    return oom(err, errlen);
  }
  rc = insert_timeline(db, inc, arg_str(args, "who"), arg_str(args, "event"),
                       arg_str(args, "comment"), detail, &id);
  free(detail);
  if (rc != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  *result = json_pack("{s:I}", "id", (json_int_t)id);
  return *result != NULL ? 0 : oom(err, errlen);
}

/* ---- policy state ---- */

static int op_state_get(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT value FROM policy_state WHERE policy = ?1 AND key = ?2"
              " AND (expires_at IS NULL OR expires_at > ?3)",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  bind_str(st, 1, arg_str(args, "policy"));
  bind_str(st, 2, arg_str(args, "key"));
  sqlite3_bind_int64(st, 3, now_ms());
  int rc = sqlite3_step(st);
  static const char *const names[] = { "value" };
  *result = rc == SQLITE_ROW ? row_json(st, names, 1) : rc == SQLITE_DONE ? json_object() : NULL;
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return db_error(db, err, errlen);
  }
  return *result != NULL ? 0 : oom(err, errlen);
}

/* Sets or deletes one entry; also deletes a few expired entries (of any policy), so that keys
 * set with a ttl and never read again do not pile up. */
static int op_state_set(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  bool ok = true;
  char *value = dump_arg(args, "value", &ok);
  if (!ok) {
    return oom(err, errlen);
  }
  if (value == NULL && arg(args, "ttl_ms") != NULL) {
    snprintf(err, errlen, "'ttl_ms' needs a 'value'");
    return -EINVAL;
  }
  int64_t now = now_ms(), ttl = arg_int(args, "ttl_ms", 0);
  sqlite3_stmt *st;
  int rc = prepare(db,
                   value == NULL ? "DELETE FROM policy_state WHERE policy = ?1 AND key = ?2"
                                 : "INSERT INTO policy_state (policy, key, value, updated_at,"
                                   " expires_at) VALUES (?1, ?2, ?3, ?4, ?5)"
                                   " ON CONFLICT (policy, key) DO UPDATE SET value = ?3,"
                                   " updated_at = ?4, expires_at = ?5",
                   &st);
  if (rc == SQLITE_OK) {
    bind_str(st, 1, arg_str(args, "policy"));
    bind_str(st, 2, arg_str(args, "key"));
    if (value != NULL) {
      bind_str(st, 3, value);
      sqlite3_bind_int64(st, 4, now);
      if (ttl > 0) {
        sqlite3_bind_int64(st, 5, now + ttl);
      }
    }
    rc = step_done(st);
  }
  free(value);
  if (rc == SQLITE_OK && (rc = prepare(db,
                                       "DELETE FROM policy_state WHERE (policy, key) IN"
                                       " (SELECT policy, key FROM policy_state"
                                       " WHERE expires_at <= ?1 LIMIT ?2)",
                                       &st)) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int(st, 2, STATE_SWEEP);
    rc = step_done(st);
  }
  if (rc != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  *result = json_object();
  return *result != NULL ? 0 : oom(err, errlen);
}

/* ---- the knowledge base ---- */

static int op_kb_learn(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t inc = arg_int(args, "incident", 0);
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT i.opened_at, i.resolved_at,"
              " EXISTS (SELECT 1 FROM kb_incidents k WHERE k.incident_id = i.id)"
              " FROM incidents i WHERE i.id = ?1",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, inc);
  int rc = sqlite3_step(st);
  int64_t opened_at = 0, resolved_at = 0;
  bool known = false;
  if (rc == SQLITE_ROW) {
    opened_at = sqlite3_column_int64(st, 0);
    resolved_at = sqlite3_column_int64(st, 1); /* 0 when NULL: not resolved */
    known = sqlite3_column_int(st, 2) != 0;
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE) {
    snprintf(err, errlen, "no incident %" PRId64, inc);
    return -ENOENT;
  }
  if (rc != SQLITE_ROW) {
    return db_error(db, err, errlen);
  }
  if (!known && arg(args, "text") == NULL) {
    snprintf(err, errlen, "'text' is required for an incident not yet learnt");
    return -EINVAL;
  }
  bool ok = true;
  char *labels = dump_labels(arg(args, "labels"), &ok);
  if (!ok) {
    return oom(err, errlen);
  }
  /* given fields replace those stored, absent ones keep them */
  rc = prepare(db,
               "INSERT INTO kb_incidents (incident_id, policy, alertname, class, confidence,"
               " labels, fix, outcome, text, learned_at)"
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, coalesce(?9, ''), ?10)"
               " ON CONFLICT (incident_id) DO UPDATE SET"
               " policy = coalesce(?2, policy), alertname = coalesce(?3, alertname),"
               " class = coalesce(?4, class), confidence = coalesce(?5, confidence),"
               " labels = coalesce(?6, labels), fix = coalesce(?7, fix),"
               " outcome = coalesce(?8, outcome), text = coalesce(?9, text), learned_at = ?10",
               &st);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, inc);
    bind_str(st, 2, arg_str(args, "policy"));
    bind_str(st, 3, arg_str(args, "alertname"));
    bind_str(st, 4, arg_str(args, "class"));
    if (arg(args, "confidence") != NULL) {
      sqlite3_bind_double(st, 5, json_number_value(arg(args, "confidence")));
    }
    bind_str(st, 6, labels);
    bind_str(st, 7, arg_str(args, "fix"));
    bind_str(st, 8, arg_str(args, "outcome"));
    bind_str(st, 9, arg_str(args, "text"));
    sqlite3_bind_int64(st, 10, now_ms());
    rc = step_done(st);
  }
  free(labels);
  if (rc == SQLITE_OK && json_is_true(arg(args, "resolved")) &&
      (rc = prepare(db,
                    "UPDATE kb_incidents SET resolved_at = ?2, ttr_ms = max(0, ?2 - ?3)"
                    " WHERE incident_id = ?1",
                    &st)) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, inc);
    sqlite3_bind_int64(st, 2, resolved_at > 0 ? resolved_at : now_ms());
    sqlite3_bind_int64(st, 3, opened_at);
    rc = step_done(st);
  }
  if (rc != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  *result = json_object();
  return *result != NULL ? 0 : oom(err, errlen);
}

/* The distinct words of a query, pointing into the caller's strings. */
typedef struct {
  const char *p[TERMS_MAX];
  size_t len[TERMS_MAX];
  size_t n;
} terms_t;

/* Mirrors kb_text's tokenizer (unicode61, '_' a token character): ASCII letters and digits,
 * '_', and every byte of a non-ASCII character (unicode61 splits those further itself). */
static bool term_char(unsigned char c)
{
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
         c >= 0x80;
}

static bool same_term(const char *a, size_t alen, const char *b, size_t blen)
{
  if (alen != blen) {
    return false;
  }
  for (size_t i = 0; i < alen; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    x = x >= 'A' && x <= 'Z' ? (unsigned char)(x + 32) : x;
    y = y >= 'A' && y <= 'Z' ? (unsigned char)(y + 32) : y;
    if (x != y) {
      return false;
    }
  }
  return true;
}

/* Adds the words of s[0..len) until TERMS_MAX are held; words longer than TERM_MAX_BYTES are
 * skipped (a truncated word would match nothing: FTS5 matches whole tokens). */
static void terms_add(terms_t *t, const char *s, size_t len)
{
  size_t i = 0;
  while (i < len && t->n < TERMS_MAX) {
    while (i < len && !term_char((unsigned char)s[i])) {
      i++;
    }
    size_t start = i;
    while (i < len && term_char((unsigned char)s[i])) {
      i++;
    }
    size_t n = i - start;
    bool dup = n == 0 || n > TERM_MAX_BYTES;
    for (size_t k = 0; k < t->n && !dup; k++) {
      dup = same_term(t->p[k], t->len[k], s + start, n);
    }
    if (!dup) {
      t->p[t->n] = s + start;
      t->len[t->n++] = n;
    }
  }
}

/* The FTS5 query for untrusted text: never the text itself (its quotes, NEAR, *, ^, column
 * filters and parentheses are FTS5 syntax), but its words, each quoted as an FTS5 string with
 * embedded quotes doubled, joined with OR. The label pairs' words come first, so that a long
 * text cannot crowd them out. NULL with *none set when there is no word; NULL alone on OOM. */
static char *fts_query(const char *text, json_t *labels, bool *none)
{
  terms_t t = { .n = 0 };
  const char *k;
  json_t *v;
  if (json_is_object(labels)) {
    json_object_foreach(labels, k, v)
    {
      terms_add(&t, k, strlen(k));
      terms_add(&t, json_string_value(v), json_string_length(v));
    }
  }
  terms_add(&t, text, strlen(text));
  *none = t.n == 0;
  if (t.n == 0) {
    return NULL;
  }
  char *q = malloc(t.n * (2 * TERM_MAX_BYTES + 6) + 1), *o = q;
  for (size_t i = 0; q != NULL && i < t.n; i++) {
    if (i > 0) {
      memcpy(o, " OR ", 4);
      o += 4;
    }
    *o++ = '"';
    for (size_t j = 0; j < t.len[i]; j++) {
      if (t.p[i][j] == '"') {
        *o++ = '"';
      }
      *o++ = t.p[i][j];
    }
    *o++ = '"';
  }
  if (q != NULL) {
    *o = '\0';
  }
  return q;
}

/* |Q ∩ S| / |Q ∪ S| over the name=value pairs of two label objects; 0 when both are empty. */
static double jaccard(json_t *q, json_t *s)
{
  size_t nq = json_is_object(q) ? json_object_size(q) : 0;
  size_t ns = json_is_object(s) ? json_object_size(s) : 0, inter = 0;
  const char *k;
  json_t *v;
  if (nq > 0 && ns > 0) {
    json_object_foreach(q, k, v)
    {
      json_t *sv = json_object_get(s, k);
      inter += json_is_string(sv) && json_equal(sv, v);
    }
  }
  size_t uni = nq + ns - inter;
  return uni > 0 ? (double)inter / (double)uni : 0;
}

static int by_score(const void *a, const void *b)
{
  json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
  double sx = json_real_value(json_object_get(x, "score"));
  double sy = json_real_value(json_object_get(y, "score"));
  if (sx != sy) {
    return sx < sy ? 1 : -1;
  }
  json_int_t ix = json_integer_value(json_object_get(x, "incident"));
  json_int_t iy = json_integer_value(json_object_get(y, "incident"));
  return ix < iy ? 1 : ix > iy ? -1 : 0; /* the more recent first */
}

/* The incidents most similar to `text` and `labels`, best first, as an array in *out.
 *
 * Candidates are the best full-text matches (at most CANDIDATES_MAX, by FTS5's rank), then
 * rescored with the label sets:
 *   r       = -bm25()                FTS5's BM25 is negative, more negative better; r >= 0
 *   text    = r / (r + 1)            in [0, 1); saturating, so one very long match cannot
 *                                    outweigh the labels
 *   overlap = |Q ∩ S| / |Q ∪ S|      Jaccard over the name=value pairs of the query's labels Q
 *                                    and the stored labels S
 *   score   = 0.6 * text + 0.4 * overlap   when the query has labels; text alone otherwise.
 * The label words join the query (first, so a long text cannot crowd them out): an incident
 * whose text holds them (kb.text_of puts an alert's label pairs in its text) is a candidate
 * even when the query text says nothing. Each entry: incident, score, bm25 (= r), label_overlap,
 * and the stored class, alertname, fix, outcome, ttr_ms and the incident's title where known. */
static int similar(sqlite3 *db,
                   const char *text,
                   json_t *labels,
                   int64_t exclude,
                   size_t limit,
                   json_t **out,
                   char *err,
                   size_t errlen)
{
  bool none;
  char *q = fts_query(text, labels, &none);
  if (q == NULL) {
    *out = none ? json_array() : NULL;
    return *out != NULL ? 0 : oom(err, errlen);
  }
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT k.incident_id, -bm25(kb_text), k.class, k.alertname, k.fix, k.outcome,"
              " k.ttr_ms, i.title, k.labels"
              " FROM kb_text JOIN kb_incidents k ON k.incident_id = kb_text.rowid"
              " LEFT JOIN incidents i ON i.id = k.incident_id"
              " WHERE kb_text MATCH ?1 AND kb_text.rowid <> ?2 ORDER BY rank LIMIT ?3",
              &st) != SQLITE_OK) {
    free(q);
    return db_error(db, err, errlen);
  }
  size_t pool = limit * 10 < 50 ? 50 : limit * 10;
  sqlite3_bind_text(st, 1, q, -1, SQLITE_TRANSIENT);
  sqlite3_bind_int64(st, 2, exclude);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)(pool > CANDIDATES_MAX ? CANDIDATES_MAX : pool));
  free(q);
  static const char *const names[] = { "incident", "bm25",    "class",  "alertname",
                                       "fix",      "outcome", "ttr_ms", "title" };
  bool with_labels = json_is_object(labels) && json_object_size(labels) > 0;
  json_t *arr = json_array();
  bool ok = arr != NULL;
  int rc = SQLITE_OK;
  while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *o = row_json(st, names, 8);
    double r = sqlite3_column_double(st, 1);
    r = r > 0 ? r : 0;
    const char *stored = (const char *)sqlite3_column_text(st, 8);
    json_t *s = stored != NULL ? json_loads(stored, 0, NULL) : NULL;
    double overlap = jaccard(labels, s), rel = r / (r + 1);
    json_decref(s);
    double score = with_labels ? 0.6 * rel + 0.4 * overlap : rel;
    ok = o != NULL && json_object_set_new(o, "bm25", json_real(r)) == 0 &&
         json_object_set_new(o, "label_overlap", json_real(overlap)) == 0 &&
         json_object_set_new(o, "score", json_real(score)) == 0;
    ok = ok && json_array_append_new(arr, o) == 0;
    if (!ok) {
      json_decref(o);
    }
  }
  sqlite3_finalize(st);
  if (!ok || rc != SQLITE_DONE) {
    json_decref(arr);
    return ok ? db_error(db, err, errlen) : oom(err, errlen);
  }
  /* rescore: sort a copy of the references, keep the first `limit` */
  size_t n = json_array_size(arr);
  json_t **items = malloc((n > 0 ? n : 1) * sizeof *items);
  json_t *best = json_array();
  ok = items != NULL && best != NULL;
  for (size_t i = 0; ok && i < n; i++) {
    items[i] = json_array_get(arr, i);
  }
  if (ok) {
    qsort(items, n, sizeof *items, by_score);
  }
  for (size_t i = 0; ok && i < n && i < limit; i++) {
    ok = json_array_append(best, items[i]) == 0;
  }
  free(items);
  json_decref(arr);
  if (!ok) {
    json_decref(best);
    return oom(err, errlen);
  }
  *out = best;
  return 0;
}

static int op_kb_similar(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  json_t *list = NULL;
  int rc = similar(db, arg_str(args, "text"), arg(args, "labels"), arg_int(args, "exclude", 0),
                   (size_t)arg_int(args, "limit", 5), &list, err, errlen);
  if (rc != 0) {
    return rc;
  }
  *result = json_pack("{s:o}", "similar", list);
  return *result != NULL ? 0 : oom(err, errlen);
}

/* ---- known fixes ---- */

static int op_fix_add(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  bool ok = true;
  char *plan = dump_arg(args, "plan", &ok);
  if (!ok) {
    return oom(err, errlen);
  }
  sqlite3_stmt *st;
  int rc = prepare(db,
                   "INSERT INTO kb_fixes (key, name, plan, created_by, created_at)"
                   " VALUES (?1, ?2, ?3, ?4, ?5)"
                   " ON CONFLICT (key, name) DO UPDATE SET plan = ?3 RETURNING id",
                   &st);
  int64_t id = 0;
  if (rc == SQLITE_OK) {
    bind_str(st, 1, arg_str(args, "key"));
    bind_str(st, 2, arg_str(args, "name"));
    bind_str(st, 3, plan);
    bind_str(st, 4, arg_str(args, "who"));
    sqlite3_bind_int64(st, 5, now_ms());
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      id = sqlite3_column_int64(st, 0);
      rc = step_done(st);
    } else {
      sqlite3_finalize(st);
    }
  }
  free(plan);
  if (rc != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  *result = json_pack("{s:I}", "id", (json_int_t)id);
  return *result != NULL ? 0 : oom(err, errlen);
}

static int op_fixes(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  sqlite3_stmt *st;
  /* Laplace's rule of succession: a fix never tried is at 1/2, one success is 2/3, not 1 */
  if (prepare(db,
              "SELECT id, key, name, plan, uses, successes, failures,"
              " (successes + 1.0) / (uses + 2.0) AS rate, last_used_at FROM kb_fixes"
              " WHERE key = ?1 ORDER BY rate DESC, uses DESC, id LIMIT ?2",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  bind_str(st, 1, arg_str(args, "key"));
  sqlite3_bind_int64(st, 2, arg_int(args, "limit", 5));
  static const char *const names[] = { "id",       "key",          "name",
                                       "plan",     "uses",         "successes",
                                       "failures", "success_rate", "last_used_at" };
  json_t *arr = json_array();
  bool ok = arr != NULL;
  int rc = SQLITE_OK;
  while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *o = row_json(st, names, 9);
    ok = o != NULL && json_array_append_new(arr, o) == 0;
  }
  sqlite3_finalize(st);
  if (!ok || rc != SQLITE_DONE) {
    json_decref(arr);
    return ok ? db_error(db, err, errlen) : oom(err, errlen);
  }
  *result = json_pack("{s:o}", "fixes", arr);
  return *result != NULL ? 0 : oom(err, errlen);
}

static int op_fix_outcome(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t id = arg_int(args, "id", 0);
  bool success = json_is_true(arg(args, "ok"));
  sqlite3_stmt *st;
  if (prepare(db,
              "UPDATE kb_fixes SET uses = uses + 1, successes = successes + ?2,"
              " failures = failures + ?3, last_used_at = ?4 WHERE id = ?1"
              " RETURNING uses, successes, failures",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int(st, 2, success);
  sqlite3_bind_int(st, 3, !success);
  sqlite3_bind_int64(st, 4, now_ms());
  static const char *const names[] = { "uses", "successes", "failures" };
  int rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) {
      snprintf(err, errlen, "no fix %" PRId64, id);
      return -ENOENT;
    }
    return db_error(db, err, errlen);
  }
  json_t *counts = row_json(st, names, 3);
  if (step_done(st) != SQLITE_OK) {
    json_decref(counts);
    return db_error(db, err, errlen);
  }
  *result = counts;
  return counts != NULL ? 0 : oom(err, errlen);
}

/* ---- escalation timers ---- */

/* Cancels the incident's pending and due timers because it is no longer open, with a timeline
 * entry when there were any (as store.c does on the status change itself). */
static int escalations_cancel(sqlite3 *db, int64_t inc, const char *status)
{
  char why[48];
  snprintf(why, sizeof why, "incident is %s", status);
  sqlite3_stmt *st;
  int rc = prepare(db,
                   "UPDATE escalations SET state = 'cancelled', note = ?2"
                   " WHERE incident_id = ?1 AND state IN ('pending', 'due')",
                   &st);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_int64(st, 1, inc);
  bind_str(st, 2, why);
  rc = step_done(st);
  int64_t n = rc == SQLITE_OK ? sqlite3_changes64(db) : 0;
  if (rc != SQLITE_OK || n == 0) {
    return rc;
  }
  char comment[128];
  snprintf(comment, sizeof comment, "%s: %" PRId64 " pending escalation%s cancelled", why, n,
           n == 1 ? "" : "s");
  return insert_timeline(db, inc, "vigil", "escalation cancelled", comment, NULL, NULL);
}

/* One timer per incident+policy+level: a second call finds the first, and moves it only to
 * bring a pending timer forward (an earlier due_at: the pipeline's "on doubt, escalate now"),
 * so repeating a call changes nothing and the timer still fires once. A timer cancelled
 * because its incident left 'open' is armed again when the incident is open again (it
 * reopened); one scheduled for an incident that is not open is recorded as cancelled. */
static int op_escalate(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t inc = arg_int(args, "incident", 0), level = arg_int(args, "level", 0);
  int64_t due_at = arg_int(args, "due_at", 0);
  const char *policy = arg_str(args, "policy"), *name = arg_str(args, "name");
  char status[16];
  int rc = incident_status(db, inc, status, err, errlen);
  if (rc != 0) {
    return rc;
  }
  bool open = strcmp(status, "open") == 0;
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT id, state, due_at FROM escalations WHERE incident_id = ?1"
              " AND policy = ?2 AND level = ?3",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, inc);
  bind_str(st, 2, policy);
  sqlite3_bind_int64(st, 3, level);
  int64_t id = 0, stored_due = 0;
  char state[16] = "";
  if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    id = sqlite3_column_int64(st, 0);
    snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 1));
    stored_due = sqlite3_column_int64(st, 2);
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return db_error(db, err, errlen);
  }
  bool created = id == 0 || (open && strcmp(state, "cancelled") == 0);
  if (!created && strcmp(state, "pending") == 0 && due_at < stored_due) {
    if (prepare(db, "UPDATE escalations SET due_at = ?2 WHERE id = ?1", &st) != SQLITE_OK) {
      return db_error(db, err, errlen);
    }
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, due_at);
    if (step_done(st) != SQLITE_OK) {
      return db_error(db, err, errlen);
    }
    stored_due = due_at;
  }
  if (id == 0) {
    rc = prepare(db,
                 "INSERT INTO escalations (incident_id, policy, level, name, due_at, state,"
                 " created_at, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                 &st);
  } else if (created) {
    rc = prepare(db,
                 "UPDATE escalations SET name = coalesce(?4, name), due_at = ?5, state = ?6,"
                 " created_at = ?7, note = ?8, marked_at = NULL, fired_at = NULL,"
                 " action_id = NULL WHERE incident_id = ?1 AND policy = ?2 AND level = ?3",
                 &st);
  }
  if (created) {
    if (rc != SQLITE_OK) {
      return db_error(db, err, errlen);
    }
    char note[48];
    snprintf(note, sizeof note, "incident is %s", status);
    snprintf(state, sizeof state, "%s", open ? "pending" : "cancelled");
    sqlite3_bind_int64(st, 1, inc);
    bind_str(st, 2, policy);
    sqlite3_bind_int64(st, 3, level);
    bind_str(st, 4, name);
    sqlite3_bind_int64(st, 5, due_at);
    bind_str(st, 6, state);
    sqlite3_bind_int64(st, 7, now_ms());
    bind_str(st, 8, open ? NULL : note);
    if ((rc = step_done(st)) != SQLITE_OK) {
      return db_error(db, err, errlen);
    }
    id = id == 0 ? sqlite3_last_insert_rowid(db) : id;
    stored_due = due_at;
  }
  *result = json_pack("{s:I,s:b,s:s,s:I}", "id", (json_int_t)id, "created", created, "state", state,
                      "due_at", (json_int_t)stored_due);
  return *result != NULL ? 0 : oom(err, errlen);
}

/* A timer found by escalations_due, to mark or, its incident no longer open, to cancel. */
typedef struct {
  int64_t id, incident;
  bool open;
  char status[16];
} due_row_t;

/* Hands out the timers whose time has come (G4). A timer fires once however late: it is
 * marked "due" and reported with how late it is; the caller fires it and reports with
 * escalation_done. One left "due" (its run stopped, or the caller lost it) is handed out
 * again once DUE_LEASE_MS have passed since, not on every poll while it is being fired.
 * Timers of incidents no longer open are cancelled instead; they take room in a round, and
 * further rounds fill the answer up to `limit`. */
static int op_escalations_due(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t now = arg_int(args, "now", 0), limit = arg_int(args, "limit", 100);
  static const char *const names[] = { "id",   "incident", "policy", "level",
                                       "name", "due_at",   "late_ms" };
  json_t *due = json_array();
  due_row_t *rows = malloc((size_t)limit * sizeof *rows);
  int status = due != NULL && rows != NULL ? 0 : oom(err, errlen);
  bool cancelled = true;
  for (int round = 0; round < DUE_ROUNDS && cancelled && status == 0; round++) {
    int64_t want = limit - (int64_t)json_array_size(due), n = 0;
    sqlite3_stmt *st;
    if (want <= 0) {
      break;
    }
    if (prepare(db,
                "SELECT e.id, e.incident_id, e.policy, e.level, e.name, e.due_at,"
                " ?1 - e.due_at, coalesce(i.status, 'gone')"
                " FROM escalations e LEFT JOIN incidents i ON i.id = e.incident_id"
                " WHERE e.state IN ('pending', 'due') AND e.due_at <= ?1"
                " AND (e.state = 'pending' OR e.marked_at IS NULL OR e.marked_at <= ?1 - ?2)"
                " ORDER BY e.due_at, e.id LIMIT ?3",
                &st) != SQLITE_OK) {
      status = db_error(db, err, errlen);
      break;
    }
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, DUE_LEASE_MS);
    sqlite3_bind_int64(st, 3, want);
    int rc = SQLITE_DONE;
    while (status == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      due_row_t *r = &rows[n++];
      r->id = sqlite3_column_int64(st, 0);
      r->incident = sqlite3_column_int64(st, 1);
      snprintf(r->status, sizeof r->status, "%s", (const char *)sqlite3_column_text(st, 7));
      r->open = strcmp(r->status, "open") == 0;
      json_t *o = r->open ? row_json(st, names, 7) : NULL;
      if (r->open && (o == NULL || json_array_append_new(due, o) != 0)) {
        status = oom(err, errlen);
      }
    }
    sqlite3_finalize(st);
    if (status == 0 && rc != SQLITE_DONE) {
      status = db_error(db, err, errlen);
    }
    /* the scan is over: now mark or cancel what it found */
    sqlite3_stmt *mark = NULL;
    if (status == 0 &&
        prepare(db, "UPDATE escalations SET state = 'due', marked_at = ?2 WHERE id = ?1", &mark) !=
            SQLITE_OK) {
      status = db_error(db, err, errlen);
    }
    cancelled = false;
    for (int64_t i = 0; i < n && status == 0; i++) {
      due_row_t *r = &rows[i];
      if (r->open) {
        sqlite3_reset(mark);
        sqlite3_bind_int64(mark, 1, r->id);
        sqlite3_bind_int64(mark, 2, now);
        rc = sqlite3_step(mark);
      } else {
        cancelled = true;
        rc = escalations_cancel(db, r->incident, r->status) == SQLITE_OK ? SQLITE_DONE
                                                                         : SQLITE_ERROR;
      }
      if (rc != SQLITE_DONE) {
        status = db_error(db, err, errlen);
      }
    }
    sqlite3_finalize(mark);
  }
  free(rows);
  if (status != 0) {
    json_decref(due);
    return status;
  }
  *result = json_pack("{s:o}", "due", due);
  return *result != NULL ? 0 : oom(err, errlen);
}

static int op_escalation_done(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t id = arg_int(args, "id", 0);
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT state, marked_at IS NOT NULL, incident_id, policy, level, name"
              " FROM escalations WHERE id = ?1",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  char state[16] = "", who[300] = "", event[300] = "";
  bool handed_out = false;
  int64_t inc = 0;
  if (rc == SQLITE_ROW) {
    snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 0));
    handed_out = sqlite3_column_int(st, 1) != 0;
    inc = sqlite3_column_int64(st, 2);
    snprintf(who, sizeof who, "policy:%s", (const char *)sqlite3_column_text(st, 3));
    const char *name = (const char *)sqlite3_column_text(st, 5);
    snprintf(event, sizeof event, "escalation %s: %s", arg_str(args, "state"),
             name != NULL ? name : "level");
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE) {
    snprintf(err, errlen, "no escalation %" PRId64, id);
    return -ENOENT;
  }
  if (rc != SQLITE_ROW) {
    return db_error(db, err, errlen);
  }
  /* a timer cancelled while it was being fired still records what happened */
  if (strcmp(state, "due") != 0 && !(strcmp(state, "cancelled") == 0 && handed_out)) {
    snprintf(err, errlen, "escalation %" PRId64 " is %s%s", id, state,
             strcmp(state, "pending") == 0 ? " (not due)" : "");
    return -EINVAL;
  }
  if (prepare(db,
              "UPDATE escalations SET state = ?2, fired_at = ?3, action_id = ?4,"
              " note = coalesce(?5, note) WHERE id = ?1",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  bind_str(st, 2, arg_str(args, "state"));
  sqlite3_bind_int64(st, 3, now_ms());
  if (arg(args, "action") != NULL) {
    sqlite3_bind_int64(st, 4, arg_int(args, "action", 0));
  }
  bind_str(st, 5, arg_str(args, "note"));
  if (step_done(st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  /* every escalation is on its incident's timeline */
  if (insert_timeline(db, inc, who, event, arg_str(args, "note"), NULL, NULL) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  *result = json_object();
  return *result != NULL ? 0 : oom(err, errlen);
}

#define ESCALATION_SQL                                                                \
  "SELECT id, incident_id, policy, level, name, due_at, state, created_at, fired_at," \
  " action_id, note FROM escalations WHERE incident_id = ?1 ORDER BY level, id"

static const char *const escalation_names[] = { "id",       "incident", "policy", "level",
                                                "name",     "due_at",   "state",  "created_at",
                                                "fired_at", "action",   "note" };

static int op_escalations(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t inc = arg_int(args, "incident", 0);
  char status[16];
  json_t *list = NULL;
  int rc = incident_status(db, inc, status, err, errlen);
  if (rc == 0) {
    rc = rows_json(db, ESCALATION_SQL, inc, escalation_names, 11, &list, err, errlen);
  }
  if (rc != 0) {
    return rc;
  }
  *result = json_pack("{s:o}", "escalations", list);
  return *result != NULL ? 0 : oom(err, errlen);
}

/* ---- the incident report ---- */

/* What the similar incidents of a report are searched with: the kb entry's text and labels,
 * or, for an incident not learnt, its title, alert names and label pairs and the labels of
 * its first alert. The text is malloc'd into *text; *labels is a new reference or NULL. */
static int report_query(
    sqlite3 *db, int64_t id, json_t *kb, char **text, json_t **labels, char *err, size_t errlen)
{
  const char *t = json_string_value(json_object_get(kb, "text"));
  if (t != NULL) {
    *text = strdup(t);
    *labels = json_incref(json_object_get(kb, "labels"));
    return *text != NULL ? 0 : oom(err, errlen);
  }
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT i.title || ' ' || coalesce(group_concat(a.name || ' ' || a.labels, ' '), ''),"
              " (SELECT a2.labels FROM incident_alerts ia2 JOIN alerts a2"
              "  ON a2.fingerprint = ia2.fingerprint WHERE ia2.incident_id = i.id"
              "  ORDER BY ia2.attached_at, a2.fingerprint LIMIT 1)"
              " FROM incidents i LEFT JOIN incident_alerts ia ON ia.incident_id = i.id"
              " LEFT JOIN alerts a ON a.fingerprint = ia.fingerprint WHERE i.id = ?1",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  int rc = sqlite3_step(st);
  const char *q = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
  const char *l = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 1) : NULL;
  *text = strdup(q != NULL ? q : "");
  *labels = l != NULL ? json_loads(l, 0, NULL) : NULL;
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) {
    free(*text);
    json_decref(*labels);
    return db_error(db, err, errlen);
  }
  if (*text != NULL && strlen(*text) > TEXT_MAX_BYTES) {
    (*text)[TEXT_MAX_BYTES] = '\0'; /* the words past it would be past TERMS_MAX anyway */
  }
  return *text != NULL ? 0 : oom(err, errlen);
}

/* Everything known about one incident in one document (one read transaction). */
/* The report is served as is by the HTTP API, so it reads like the rest of it: camelCase
 * keys, times (the `*_at` fields) as RFC 3339 text. What policies and alerts wrote (labels,
 * annotations, details, plans, evidence) is left exactly as written. */
static void api_style(json_t *v, int depth)
{
  static const char *const verbatim[] = { "labels", "annotations", "detail", "plan",
                                          "steps",  "evidence",    NULL };
  if (depth > 4) {
    return;
  }
  if (json_is_array(v)) {
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
      api_style(x, depth + 1);
    }
    return;
  }
  if (!json_is_object(v)) {
    return;
  }
  json_t *out = json_object();
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x)
  {
    bool keep = false;
    for (int i = 0; verbatim[i] != NULL; i++) {
      keep = keep || strcmp(k, verbatim[i]) == 0;
    }
    if (!keep) {
      api_style(x, depth + 1);
    }
    char name[64];
    size_t n = 0;
    for (const char *p = k; *p != '\0' && n + 1 < sizeof name; p++) {
      if (*p == '_' && p[1] != '\0') {
        name[n++] = (char)toupper((unsigned char)*++p);
      } else {
        name[n++] = *p;
      }
    }
    name[n] = '\0';
    size_t klen = strlen(k);
    if (((klen > 3 && strcmp(k + klen - 3, "_at") == 0) || strcmp(k, "at") == 0) &&
        json_is_integer(x)) {
      char t[32];
      vg_time_format((double)json_integer_value(x) / 1000.0, t);
      json_object_set_new(out, name, json_string(t));
    } else {
      json_object_set(out, name, x);
    }
  }
  json_object_clear(v);
  json_object_update(v, out);
  json_decref(out);
}

static int op_report(sqlite3 *db, json_t *args, json_t **result, char *err, size_t errlen)
{
  int64_t id = arg_int(args, "incident", 0);
  sqlite3_stmt *st;
  if (prepare(db,
              "SELECT id, title, group_key, severity, status, opened_at, updated_at, resolved_at,"
              " closed_at, acked_by, acked_at, max(0, coalesce(resolved_at, ?2) - opened_at)"
              " FROM incidents WHERE id = ?1",
              &st) != SQLITE_OK) {
    return db_error(db, err, errlen);
  }
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int64(st, 2, now_ms());
  int rc = sqlite3_step(st);
  static const char *const inc_names[] = { "id",        "title",     "group_key",  "severity",
                                           "status",    "opened_at", "updated_at", "resolved_at",
                                           "closed_at", "acked_by",  "acked_at" };
  json_t *doc = json_object();
  json_t *inc = rc == SQLITE_ROW ? row_json(st, inc_names, 11) : NULL;
  int64_t duration = rc == SQLITE_ROW ? sqlite3_column_int64(st, 11) : 0;
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) {
    json_decref(doc);
    if (rc == SQLITE_DONE) {
      snprintf(err, errlen, "no incident %" PRId64, id);
      return -ENOENT;
    }
    return db_error(db, err, errlen);
  }
  bool ok = doc != NULL && inc != NULL && json_object_set_new(doc, "incident", inc) == 0;
  if (!ok) {
    json_decref(inc);
    json_decref(doc);
    return oom(err, errlen);
  }

  static const char *const alert_names[] = { "fingerprint",   "name",       "severity",
                                             "status",        "labels",     "annotations",
                                             "starts_at",     "ends_at",    "source",
                                             "generator_url", "first_seen", "last_seen" };
  static const char *const timeline_names[] = { "at", "who",     "event", "from",
                                                "to", "comment", "detail" };
  static const char *const action_names[] = { "id",          "type", "target",     "state",
                                              "mode",        "why",  "created_at", "finished_at",
                                              "duration_ms", "error" };
  static const char *const healing_names[] = { "id",          "policy",     "name",  "subject",
                                               "status",      "steps",      "error", "started_at",
                                               "finished_at", "duration_ms" };
  const struct {
    const char *key, *sql;
    const char *const *names;
    int n;
  } parts[] = {
    { "alerts",
      "SELECT a.fingerprint, a.name, a.severity, a.status, a.labels, a.annotations, a.starts_at,"
      " nullif(a.ends_at, 0), a.source, a.generator_url, a.first_seen, a.last_seen"
      " FROM incident_alerts ia JOIN alerts a ON a.fingerprint = ia.fingerprint"
      " WHERE ia.incident_id = ?1 ORDER BY ia.attached_at, a.fingerprint",
      alert_names, 12 },
    { "timeline",
      "SELECT at, who, event, from_status, to_status, comment, detail FROM timeline"
      " WHERE incident_id = ?1 ORDER BY id",
      timeline_names, 7 },
    { "actions",
      "SELECT id, type, target, state, mode, why, created_at, finished_at, duration_ms, error"
      " FROM actions WHERE incident_id = ?1 ORDER BY id",
      action_names, 10 },
    { "healings",
      "SELECT id, policy, name, subject, status, steps, error, started_at, finished_at,"
      " duration_ms FROM healings WHERE incident_id = ?1 ORDER BY id",
      healing_names, 10 },
    { "escalations", ESCALATION_SQL, escalation_names, 11 },
  };
  int status = 0;
  for (size_t i = 0; status == 0 && i < sizeof parts / sizeof parts[0]; i++) {
    json_t *arr = NULL;
    status = rows_json(db, parts[i].sql, id, parts[i].names, parts[i].n, &arr, err, errlen);
    if (status == 0 && json_object_set_new(doc, parts[i].key, arr) != 0) {
      status = oom(err, errlen);
    }
  }

  /* the kb entry (its text only serves to find the similar incidents) */
  static const char *const kb_names[] = { "policy",     "alertname",   "class",   "confidence",
                                          "labels",     "fix",         "outcome", "text",
                                          "learned_at", "resolved_at", "ttr_ms" };
  json_t *kb = NULL;
  if (status == 0) {
    json_t *rows = NULL;
    status = rows_json(db,
                       "SELECT policy, alertname, class, confidence, labels, fix, outcome, text,"
                       " learned_at, resolved_at, ttr_ms FROM kb_incidents WHERE incident_id = ?1",
                       id, kb_names, 11, &rows, err, errlen);
    kb = json_incref(json_array_get(rows, 0));
    json_decref(rows);
  }
  char *text = NULL;
  json_t *labels = NULL, *like = NULL;
  if (status == 0) {
    status = report_query(db, id, kb, &text, &labels, err, errlen);
  }
  if (status == 0) {
    status = similar(db, text, labels, id, 5, &like, err, errlen);
  }
  free(text);
  json_decref(labels);
  if (status == 0 && kb != NULL) {
    json_object_del(kb, "text");
    status = json_object_set(doc, "kb", kb) == 0 ? 0 : oom(err, errlen);
  }
  json_decref(kb);
  if (status == 0) {
    status = json_object_set_new(doc, "similar", like) == 0 &&
                     json_object_set_new(doc, "duration_ms", json_integer(duration)) == 0
                 ? 0
                 : oom(err, errlen);
  } else {
    json_decref(like);
  }
  if (status != 0) {
    json_decref(doc);
    return status;
  }
  api_style(doc, 0);
  *result = doc;
  return 0;
}

/* ---- the table of operations ---- */

#define ID(n)                          \
  {                                    \
    n, A_INT, true, 1, INT64_MAX, NULL \
  }
#define OPT_ID(n)                       \
  {                                     \
    n, A_INT, false, 1, INT64_MAX, NULL \
  }
#define TIME(n)                            \
  {                                        \
    n, A_INT, true, 0, INT64_MAX / 4, NULL \
  }
#define LIMIT(n, max)             \
  {                               \
    n, A_INT, false, 1, max, NULL \
  }
#define NAME(n)                             \
  {                                         \
    n, A_STR, true, 1, NAME_MAX_BYTES, NULL \
  }
#define OPT_NAME(n)                          \
  {                                          \
    n, A_STR, false, 1, NAME_MAX_BYTES, NULL \
  }
#define TEXT(n, req)                       \
  {                                        \
    n, A_STR, req, 0, TEXT_MAX_BYTES, NULL \
  }
#define ONE_OF(n, req, set)               \
  {                                       \
    n, A_STR, req, 1, NAME_MAX_BYTES, set \
  }
#define JSON(n, req)                        \
  {                                         \
    n, A_JSON, req, 0, TEXT_MAX_BYTES, NULL \
  }
#define LABELS(n)                  \
  {                                \
    n, A_LABELS, false, 0, 0, NULL \
  }

static const char *const outcomes[] = { "success", "failure", NULL };
static const char *const fired_states[] = { "fired", "failed", NULL };

static const memory_op_t ops[] = {
  { "note",
    false,
    op_note,
    { ID("incident"), NAME("who"), NAME("event"), TEXT("comment", false), JSON("detail", false) } },
  { "state_get", true, op_state_get, { NAME("policy"), NAME("key") } },
  { "state_set",
    false,
    op_state_set,
    { NAME("policy"), NAME("key"), JSON("value", false), OPT_ID("ttl_ms") } },
  { "kb_learn",
    false,
    op_kb_learn,
    { ID("incident"),
      OPT_NAME("policy"),
      OPT_NAME("alertname"),
      OPT_NAME("class"),
      { "confidence", A_NUM, false, 0, 1, NULL },
      LABELS("labels"),
      TEXT("text", false),
      OPT_NAME("fix"),
      ONE_OF("outcome", false, outcomes),
      { "resolved", A_BOOL, false, 0, 0, NULL } } },
  { "kb_similar",
    true,
    op_kb_similar,
    { TEXT("text", true), LABELS("labels"), OPT_ID("exclude"), LIMIT("limit", 100) } },
  { "fix_add", false, op_fix_add, { NAME("key"), NAME("name"), JSON("plan", true), NAME("who") } },
  /* an empty key (an alert without a name) lists nothing rather than failing */
  { "fixes",
    true,
    op_fixes,
    { { "key", A_STR, true, 0, NAME_MAX_BYTES, NULL }, LIMIT("limit", 100) } },
  { "fix_outcome", false, op_fix_outcome, { ID("id"), { "ok", A_BOOL, true, 0, 0, NULL } } },
  { "escalate",
    false,
    op_escalate,
    { ID("incident"),
      NAME("policy"),
      { "level", A_INT, true, 0, 1000, NULL },
      OPT_NAME("name"),
      TIME("due_at") } },
  { "escalations_due", false, op_escalations_due, { TIME("now"), LIMIT("limit", 1000) } },
  { "escalation_done",
    false,
    op_escalation_done,
    { ID("id"), ONE_OF("state", true, fired_states), OPT_ID("action"), TEXT("note", false) } },
  { "escalations", true, op_escalations, { ID("incident") } },
  { "report", true, op_report, { ID("incident") } },
};

static const memory_op_t *op_find(const char *name)
{
  for (size_t i = 0; name != NULL && i < sizeof ops / sizeof ops[0]; i++) {
    if (strcmp(ops[i].name, name) == 0) {
      return &ops[i];
    }
  }
  return NULL;
}

int vg_memory_is_read(const char *op)
{
  const memory_op_t *o = op_find(op);
  return o != NULL && o->read;
}

/* ---- running an operation ---- */

typedef struct {
  const memory_op_t *op;
  json_t *args;
  vg_memory_done_fn done;
  void *ud;
  int status; /* the operation's own: 0, or < 0 with err */
  char *json;
  size_t len;
  char err[256];
} call_t;

static void call_free(call_t *c)
{
  json_decref(c->args);
  free(c->json);
  free(c);
}

/* Checks the arguments, runs the operation and renders its result (writer or pool thread). */
static void call_run(call_t *c, sqlite3 *db)
{
  char msg[224] = "";
  json_t *result = NULL;
  int rc = check_args(c->op, c->args, msg, sizeof msg);
  if (rc == 0) {
    rc = c->op->fn(db, c->args, &result, msg, sizeof msg);
  }
  if (rc == 0 && (c->json = json_dumps(result, JSON_COMPACT)) == NULL) {
    rc = oom(msg, sizeof msg);
  }
  json_decref(result);
  if (rc != 0) {
    snprintf(c->err, sizeof c->err, "%s: %s", c->op->name, msg[0] != '\0' ? msg : "failed");
  } else {
    c->len = strlen(c->json);
  }
  c->status = rc;
}

/* The store's writer: a refusal rolls the operation's own statements back (its savepoint). */
static int call_write(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  call_t *c = ud;
  call_run(c, db);
  if (c->status == 0) {
    return SQLITE_OK;
  }
  snprintf(err, errlen, "%s", c->err);
  return SQLITE_ABORT;
}

static int call_read(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  call_t *c = ud;
  call_run(c, db);
  if (c->status != 0) {
    snprintf(err, errlen, "%s", c->err);
  }
  return c->status;
}

/* On the loop: the operation's own failure, else the store's (-EIO), else the answer. */
static void call_done(void *ud, int status, const char *err)
{
  call_t *c = ud;
  if (c->status < 0) {
    c->done(c->ud, c->status, c->err, NULL, 0);
  } else if (status < 0) {
    c->done(c->ud, -EIO, err != NULL ? err : "store failure", NULL, 0);
  } else {
    c->done(c->ud, 0, NULL, c->json, c->len);
  }
  call_free(c);
}

int vg_memory_call(
    vg_store_t *s, const char *op, const char *args, vg_memory_done_fn done, void *ud)
{
  const memory_op_t *o = op_find(op);
  if (s == NULL || o == NULL || args == NULL || done == NULL || strlen(args) > ARGS_MAX) {
    return -EINVAL;
  }
  json_t *a = json_loads(args, JSON_REJECT_DUPLICATES, NULL);
  if (!json_is_object(a)) {
    json_decref(a);
    return -EINVAL;
  }
  call_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    json_decref(a);
    return -ENOMEM;
  }
  c->op = o;
  c->args = a;
  c->done = done;
  c->ud = ud;
  int rc = o->read ? vg_store_read(s, call_read, call_done, c)
                   : vg_store_call(s, call_write, call_done, c);
  if (rc != 0) {
    call_free(c);
  }
  return rc;
}
