/* The durable store's reads: alert and incident queries run on the libuv thread pool, each
 * through a read-only connection from a small pool (WAL lets them run beside the writer), and
 * answer with JSON rendered by jansson. Also the JSON helpers the writer shares. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/labelmatch.h"
#include "engine/store.h"
#include "engine/store_int.h"

#define ALERTS_DEFAULT_LIMIT 1000
#define INCIDENTS_DEFAULT_LIMIT 100

/* ---- JSON helpers ---- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 when it is not valid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
  unsigned c = p[0];
  size_t len;
  unsigned min;
  if (c < 0x80) {
    return 1;
  } else if (c >= 0xc2 && c <= 0xdf) {
    len = 2, min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len) {
    return 0;
  }
  unsigned cp = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80) {
      return 0;
    }
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return len;
}

/* A copy of the bytes with every byte outside valid UTF-8 replaced by U+FFFD, or NULL when they
 * are valid already (*out_len is then untouched) or on OOM (*oom set). */
static char *utf8_fix(const char *s, size_t len, size_t *out_len, bool *oom)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, bad = 0;
  while (i < len) {
    size_t l = utf8_len(p + i, len - i);
    bad += l == 0;
    i += l == 0 ? 1 : l;
  }
  *oom = false;
  if (bad == 0) {
    return NULL;
  }
  char *out = malloc(len + bad * 2 + 1);
  if (out == NULL) {
    *oom = true;
    return NULL;
  }
  size_t o = 0;
  for (i = 0; i < len;) {
    size_t l = utf8_len(p + i, len - i);
    if (l == 0) {
      memcpy(out + o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    } else {
      memcpy(out + o, s + i, l);
      o += l;
      i += l;
    }
  }
  out[o] = '\0';
  *out_len = o;
  return out;
}

json_t *store_string_json(const char *s, size_t len)
{
  bool oom;
  size_t flen = len;
  char *fixed = utf8_fix(s, len, &flen, &oom);
  if (oom) {
    return NULL;
  }
  json_t *v = json_stringn(fixed != NULL ? fixed : (len > 0 ? s : ""), flen);
  free(fixed);
  return v;
}

json_t *store_labels_json(const vg_label_t *labels, size_t n)
{
  json_t *o = json_object();
  for (size_t i = 0; o != NULL && i < n; i++) {
    bool oom;
    size_t klen = labels[i].name_len;
    char *key = utf8_fix(labels[i].name, klen, &klen, &oom);
    const char *k = key != NULL ? key : (labels[i].name_len > 0 ? labels[i].name : "");
    json_t *v = oom ? NULL : store_string_json(labels[i].value, labels[i].value_len);
    /* the first label of a name counts, as in labelmatch_eval */
    if (v == NULL || (json_object_getn(o, k, klen) == NULL &&
                      json_object_setn_new_nocheck(o, k, klen, json_incref(v)) != 0)) {
      json_decref(o);
      o = NULL;
    }
    json_decref(v);
    free(key);
  }
  return o;
}

json_t *store_time_json(int64_t ms)
{
  time_t secs = (time_t)(ms / 1000);
  int frac = (int)(ms % 1000);
  if (frac < 0) {
    frac += 1000;
    secs--;
  }
  struct tm tm;
  if (gmtime_r(&secs, &tm) == NULL) {
    return json_null();
  }
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
  return json_string(buf);
}

/* A time column: null when NULL or 0. */
static json_t *time_col(sqlite3_stmt *st, int i)
{
  if (sqlite3_column_type(st, i) == SQLITE_NULL || sqlite3_column_int64(st, i) == 0) {
    return json_null();
  }
  return store_time_json(sqlite3_column_int64(st, i));
}

static json_t *text_col(sqlite3_stmt *st, int i)
{
  if (sqlite3_column_type(st, i) == SQLITE_NULL) {
    return json_null();
  }
  const char *t = (const char *)sqlite3_column_text(st, i);
  return store_string_json(t != NULL ? t : "", (size_t)sqlite3_column_bytes(st, i));
}

static json_t *id_col(sqlite3_stmt *st, int i)
{
  if (sqlite3_column_type(st, i) == SQLITE_NULL) {
    return json_null();
  }
  return json_integer(sqlite3_column_int64(st, i));
}

/* A stored label object; an unreadable one reads as empty. */
static json_t *labels_col(sqlite3_stmt *st, int i)
{
  const char *t = (const char *)sqlite3_column_text(st, i);
  json_t *o =
      t != NULL ? json_loadb(t, (size_t)sqlite3_column_bytes(st, i), JSON_ALLOW_NUL, NULL) : NULL;
  if (!json_is_object(o)) {
    json_decref(o);
    o = json_object();
  }
  return o;
}

/* A column holding JSON text, decoded; text that does not parse comes back as a string. */
static json_t *json_col(sqlite3_stmt *st, int i)
{
  const char *t = (const char *)sqlite3_column_text(st, i);
  json_t *v =
      t != NULL ? json_loadb(t, (size_t)sqlite3_column_bytes(st, i), JSON_DECODE_ANY, NULL) : NULL;
  return v != NULL ? v : text_col(st, i);
}

/* Sets key to value, tracking failure (value NULL or set failing) in *ok. */
static void put(json_t *o, const char *key, json_t *value, bool *ok)
{
  if (value == NULL || json_object_set_new(o, key, value) != 0) {
    *ok = false;
  }
}

#define ALERT_COLUMNS                                                                  \
  "a.fingerprint, a.name, a.severity, a.status, a.labels, a.annotations, a.starts_at," \
  " a.ends_at, a.source, a.generator_url, a.incident_id, a.first_seen, a.last_seen"

/* The alert in the row (ALERT_COLUMNS); `labels` is the decoded label object (reference
 * stolen). NULL on OOM. */
static json_t *alert_json(sqlite3_stmt *st, json_t *labels)
{
  json_t *o = json_object();
  bool ok = o != NULL;
  if (ok) {
    put(o, "fingerprint", text_col(st, 0), &ok);
    put(o, "name", text_col(st, 1), &ok);
    put(o, "severity", text_col(st, 2), &ok);
    put(o, "status", text_col(st, 3), &ok);
    put(o, "labels", labels, &ok);
    labels = NULL;
    put(o, "annotations", labels_col(st, 5), &ok);
    put(o, "startsAt", time_col(st, 6), &ok);
    put(o, "endsAt", time_col(st, 7), &ok);
    put(o, "source", text_col(st, 8), &ok);
    put(o, "generatorURL", text_col(st, 9), &ok);
    put(o, "incidentId", id_col(st, 10), &ok);
    put(o, "firstSeen", time_col(st, 11), &ok);
    put(o, "lastSeen", time_col(st, 12), &ok);
  }
  json_decref(labels);
  if (!ok) {
    json_decref(o);
    return NULL;
  }
  return o;
}

#define INCIDENT_COLUMNS                                                                        \
  "i.id, i.title, i.group_key, i.severity, i.status, i.opened_at, i.updated_at, i.resolved_at," \
  " (SELECT count(*) FROM incident_alerts ia WHERE ia.incident_id = i.id),"                     \
  " (SELECT count(*) FROM alerts a WHERE a.incident_id = i.id AND a.status = 'firing')"

static json_t *incident_json(sqlite3_stmt *st, bool *ok)
{
  json_t *o = json_object();
  if (o == NULL) {
    *ok = false;
    return NULL;
  }
  put(o, "id", json_integer(sqlite3_column_int64(st, 0)), ok);
  put(o, "title", text_col(st, 1), ok);
  put(o, "groupKey", text_col(st, 2), ok);
  put(o, "severity", text_col(st, 3), ok);
  put(o, "status", text_col(st, 4), ok);
  put(o, "openedAt", time_col(st, 5), ok);
  put(o, "updatedAt", time_col(st, 6), ok);
  put(o, "resolvedAt", time_col(st, 7), ok);
  put(o, "alerts", json_integer(sqlite3_column_int64(st, 8)), ok);
  put(o, "firing", json_integer(sqlite3_column_int64(st, 9)), ok);
  return o;
}

/* Dumps and frees `doc` into *out. */
static int finish(json_t *doc, bool ok, char **out, size_t *len, char *err, size_t errlen)
{
  char *text = ok && doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  if (text == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  *out = text;
  *len = strlen(text);
  return 0;
}

static int db_error(sqlite3 *db, int rc, char *err, size_t errlen)
{
  snprintf(err, errlen, "%s", sqlite3_errmsg(db));
  int e = store_errno(rc);
  return e != 0 ? e : -EIO;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st)
{
  return sqlite3_prepare_v2(db, sql, -1, st, NULL);
}

int store_render_incident(
    sqlite3 *db, int64_t id, char **json, size_t *len, char *err, size_t errlen)
{
  sqlite3_stmt *st = NULL;
  json_t *doc = NULL, *alerts = NULL, *tl = NULL;
  bool ok = true;
  int status;
  int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    return db_error(db, rc, err, errlen);
  }
  rc = prepare(db,
               "SELECT " INCIDENT_COLUMNS
               ", i.closed_at, i.acked_by, i.acked_at"
               " FROM incidents i WHERE i.id = ?1",
               &st);
  if (rc != SQLITE_OK) {
    goto db_fail;
  }
  sqlite3_bind_int64(st, 1, id);
  rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    snprintf(err, errlen, "no incident %" PRId64, id);
    status = -ENOENT;
    goto out;
  }
  if (rc != SQLITE_ROW) {
    goto db_fail;
  }
  doc = incident_json(st, &ok);
  if (doc == NULL) {
    goto oom;
  }
  put(doc, "closedAt", time_col(st, 10), &ok);
  put(doc, "ackedBy", text_col(st, 11), &ok);
  put(doc, "ackedAt", time_col(st, 12), &ok);
  sqlite3_finalize(st);
  st = NULL;

  alerts = json_array();
  rc = prepare(db,
               "SELECT " ALERT_COLUMNS
               " FROM incident_alerts ia"
               " JOIN alerts a ON a.fingerprint = ia.fingerprint"
               " WHERE ia.incident_id = ?1 ORDER BY ia.attached_at, a.fingerprint",
               &st);
  if (rc != SQLITE_OK) {
    goto db_fail;
  }
  sqlite3_bind_int64(st, 1, id);
  while (ok && alerts != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *a = alert_json(st, labels_col(st, 4));
    ok = a != NULL && json_array_append_new(alerts, a) == 0;
  }
  if (ok && alerts != NULL && rc != SQLITE_DONE) {
    goto db_fail;
  }
  sqlite3_finalize(st);
  st = NULL;

  tl = json_array();
  rc = prepare(db,
               "SELECT at, who, event, from_status, to_status, comment, detail FROM timeline"
               " WHERE incident_id = ?1 ORDER BY id",
               &st);
  if (rc != SQLITE_OK) {
    goto db_fail;
  }
  sqlite3_bind_int64(st, 1, id);
  while (ok && tl != NULL && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *e = json_object();
    if (e == NULL) {
      ok = false;
      break;
    }
    put(e, "at", time_col(st, 0), &ok);
    put(e, "who", text_col(st, 1), &ok);
    put(e, "event", text_col(st, 2), &ok);
    put(e, "from", text_col(st, 3), &ok);
    put(e, "to", text_col(st, 4), &ok);
    put(e, "comment", text_col(st, 5), &ok);
    if (sqlite3_column_type(st, 6) != SQLITE_NULL) {
      put(e, "detail", json_col(st, 6), &ok);
    }
    ok = json_array_append_new(tl, e) == 0 && ok;
  }
  if (ok && tl != NULL && rc != SQLITE_DONE) {
    goto db_fail;
  }
  if (alerts == NULL || tl == NULL) {
    goto oom;
  }
  put(doc, "alerts", alerts, &ok);
  put(doc, "timeline", tl, &ok);
  alerts = tl = NULL;
  status = finish(doc, ok, json, len, err, errlen);
  doc = NULL;
  goto out;
oom:
  snprintf(err, errlen, "out of memory");
  status = -ENOMEM;
  goto out;
db_fail:
  status = db_error(db, rc, err, errlen);
out:
  sqlite3_finalize(st);
  sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  json_decref(doc);
  json_decref(alerts);
  json_decref(tl);
  return status;
}

/* ---- the read-only connection pool ---- */

static sqlite3 *reader_get(vg_store_t *s, char *err, size_t errlen)
{
  sqlite3 *db = NULL;
  uv_mutex_lock(&s->mu);
  if (s->nreaders > 0) {
    db = s->readers[--s->nreaders];
  }
  uv_mutex_unlock(&s->mu);
  if (db != NULL) {
    return db;
  }
  int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s: %s", s->path, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 5000);
  return db;
}

static void reader_put(vg_store_t *s, sqlite3 *db)
{
  uv_mutex_lock(&s->mu);
  if (s->nreaders < STORE_READER_POOL) {
    s->readers[s->nreaders++] = db;
    db = NULL;
  }
  uv_mutex_unlock(&s->mu);
  sqlite3_close(db);
}

/* ---- queries ---- */

typedef enum { READ_ALERTS, READ_INCIDENTS, READ_INCIDENT, READ_CALL } read_kind_t;

typedef struct {
  uv_work_t req;
  vg_store_t *s;
  read_kind_t kind;
  char *status, *severity;
  vg_matchers_t *matchers;
  size_t limit, offset;
  int64_t id;
  vg_store_json_fn done;
  vg_store_read_fn work; /* READ_CALL: another engine's query (vg_store_read) */
  vg_store_done_fn call_done;
  void *ud;
  int rc;
  char *json;
  size_t len;
  char err[256];
} read_t;

static void read_free(read_t *r)
{
  free(r->status);
  free(r->severity);
  labelmatch_free(r->matchers);
  free(r->json);
  free(r);
}

/* The stored labels as vg_label_t views into `o` (valid while o lives); NULL on OOM. */
static vg_label_t *label_view(json_t *o, size_t *n)
{
  *n = json_object_size(o);
  vg_label_t *ls = malloc((*n > 0 ? *n : 1) * sizeof *ls);
  if (ls == NULL) {
    return NULL;
  }
  const char *key;
  size_t key_len, i = 0;
  json_t *v;
  json_object_keylen_foreach(o, key, key_len, v)
  {
    ls[i].name = key;
    ls[i].name_len = key_len;
    ls[i].value = json_is_string(v) ? json_string_value(v) : "";
    ls[i].value_len = json_is_string(v) ? json_string_length(v) : 0;
    i++;
  }
  return ls;
}

static int query_alerts(read_t *r, sqlite3 *db)
{
  sqlite3_stmt *st = NULL;
  int rc = prepare(db,
                   r->status != NULL ? "SELECT " ALERT_COLUMNS
                                       " FROM alerts a WHERE a.status = ?1"
                                       " ORDER BY a.starts_at DESC, a.fingerprint"
                                     : "SELECT " ALERT_COLUMNS
                                       " FROM alerts a"
                                       " ORDER BY a.starts_at DESC, a.fingerprint",
                   &st);
  if (rc != SQLITE_OK) {
    return db_error(db, rc, r->err, sizeof r->err);
  }
  if (r->status != NULL) {
    sqlite3_bind_text(st, 1, r->status, -1, SQLITE_STATIC);
  }
  json_t *arr = json_array();
  bool ok = arr != NULL;
  size_t count = 0;
  while (ok && count < r->limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *labels = labels_col(st, 4);
    if (labels == NULL) {
      ok = false;
      break;
    }
    if (r->matchers != NULL) {
      size_t n;
      vg_label_t *view = label_view(labels, &n);
      bool match = view != NULL && labelmatch_eval(r->matchers, view, n);
      ok = view != NULL;
      free(view);
      if (!match) {
        json_decref(labels);
        continue;
      }
    }
    json_t *a = alert_json(st, labels);
    ok = a != NULL && json_array_append_new(arr, a) == 0;
    count++;
  }
  int status;
  if (ok && count < r->limit && rc != SQLITE_DONE) {
    status = db_error(db, rc, r->err, sizeof r->err);
    json_decref(arr);
  } else {
    status = finish(arr, ok, &r->json, &r->len, r->err, sizeof r->err);
  }
  sqlite3_finalize(st);
  return status;
}

#define INCIDENT_FILTER                                                              \
  " WHERE (?1 IS NULL OR (?1 = 'active' AND i.status NOT IN ('resolved', 'closed'))" \
  " OR i.status = ?1) AND (?2 IS NULL OR i.severity = ?2)"

static int query_incidents(read_t *r, sqlite3 *db)
{
  sqlite3_stmt *st = NULL;
  json_t *doc = json_object(), *arr = json_array();
  bool ok = doc != NULL && arr != NULL;
  int status = 0;
  int rc = prepare(db, "SELECT count(*) FROM incidents i" INCIDENT_FILTER, &st);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, r->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->severity, -1, SQLITE_STATIC);
    if ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      put(doc, "total", json_integer(sqlite3_column_int64(st, 0)), &ok);
      rc = SQLITE_OK;
    }
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc == SQLITE_OK) {
    rc = prepare(db,
                 "SELECT " INCIDENT_COLUMNS " FROM incidents i" INCIDENT_FILTER
                 " ORDER BY i.id DESC LIMIT ?3 OFFSET ?4",
                 &st);
  }
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, r->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->severity, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, r->limit > INT64_MAX ? INT64_MAX : (int64_t)r->limit);
    sqlite3_bind_int64(st, 4, r->offset > INT64_MAX ? INT64_MAX : (int64_t)r->offset);
    while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      json_t *o = incident_json(st, &ok);
      ok = o != NULL && json_array_append_new(arr, o) == 0 && ok;
    }
    rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  if (ok && rc != SQLITE_OK) {
    status = db_error(db, rc, r->err, sizeof r->err);
    json_decref(doc);
    json_decref(arr);
  } else {
    if (doc != NULL && arr != NULL) {
      ok = json_object_set_new(doc, "incidents", arr) == 0 && ok;
    } else {
      json_decref(arr);
    }
    status = finish(doc, ok, &r->json, &r->len, r->err, sizeof r->err);
  }
  sqlite3_finalize(st);
  return status;
}

static void read_work(uv_work_t *req)
{
  read_t *r = req->data;
  sqlite3 *db = reader_get(r->s, r->err, sizeof r->err);
  if (db == NULL) {
    r->rc = -EIO;
    return;
  }
  if (r->kind == READ_INCIDENT) {
    r->rc = store_render_incident(db, r->id, &r->json, &r->len, r->err, sizeof r->err);
  } else {
    int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
      r->rc = db_error(db, rc, r->err, sizeof r->err);
    } else {
      r->rc = r->kind == READ_CALL     ? r->work(db, r->ud, r->err, sizeof r->err)
              : r->kind == READ_ALERTS ? query_alerts(r, db)
                                       : query_incidents(r, db);
      sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    }
  }
  reader_put(r->s, db);
}

static void read_after(uv_work_t *req, int status)
{
  read_t *r = req->data;
  vg_store_t *s = r->s;
  if (status != 0 && r->rc == 0) {
    r->rc = status;
    snprintf(r->err, sizeof r->err, "%s", uv_strerror(status));
  }
  if (r->kind == READ_CALL) {
    r->call_done(r->ud, r->rc, r->rc == 0 ? NULL : r->err);
  } else if (r->rc == 0) {
    r->done(r->ud, 0, r->json, r->len);
  } else {
    r->done(r->ud, r->rc, r->err, strlen(r->err));
  }
  read_free(r);
  s->reads_inflight--;
  store_maybe_finish(s);
}

static int read_start(vg_store_t *s, read_t *r)
{
  if (s->closing) {
    read_free(r);
    return -EBUSY;
  }
  r->s = s;
  r->req.data = r;
  int rc = uv_queue_work(s->loop, &r->req, read_work, read_after);
  if (rc != 0) {
    read_free(r);
    return rc;
  }
  s->reads_inflight++;
  return 0;
}

static read_t *read_new(read_kind_t kind, vg_store_json_fn done, void *ud)
{
  read_t *r = calloc(1, sizeof *r);
  if (r != NULL) {
    r->kind = kind;
    r->done = done;
    r->ud = ud;
  }
  return r;
}

/* A private copy of the caller's matchers: the query runs later, on another thread. */
static vg_matchers_t *matchers_copy(const vg_matchers_t *m)
{
  size_t len = labelmatch_format(m, NULL, 0);
  char *text = malloc(len + 1);
  vg_matchers_t *c = labelmatch_new();
  if (text == NULL || c == NULL) {
    free(text);
    labelmatch_free(c);
    return NULL;
  }
  labelmatch_format(m, text, len + 1);
  if (labelmatch_parse(c, text, len, NULL, 0) != 0) {
    labelmatch_free(c);
    c = NULL;
  }
  free(text);
  return c;
}

int vg_store_alerts(vg_store_t *s, const vg_store_alert_query_t *q, vg_store_json_fn done, void *ud)
{
  if (s == NULL || done == NULL ||
      (q != NULL && q->status != NULL && strcmp(q->status, "firing") != 0 &&
       strcmp(q->status, "resolved") != 0)) {
    return -EINVAL;
  }
  read_t *r = read_new(READ_ALERTS, done, ud);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->limit = q != NULL && q->limit > 0 ? q->limit : ALERTS_DEFAULT_LIMIT;
  if (q != NULL && ((q->status != NULL && (r->status = strdup(q->status)) == NULL) ||
                    (q->matchers != NULL && (r->matchers = matchers_copy(q->matchers)) == NULL))) {
    read_free(r);
    return -ENOMEM;
  }
  return read_start(s, r);
}

static bool incident_status_ok(const char *s)
{
  static const char *const ok[] = { "active",     "open",     "investigating", "identified",
                                    "monitoring", "resolved", "closed" };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    if (strcmp(s, ok[i]) == 0) {
      return true;
    }
  }
  return false;
}

int vg_store_incidents(vg_store_t *s,
                       const vg_store_incident_query_t *q,
                       vg_store_json_fn done,
                       void *ud)
{
  if (s == NULL || done == NULL ||
      (q != NULL && q->status != NULL && !incident_status_ok(q->status))) {
    return -EINVAL;
  }
  read_t *r = read_new(READ_INCIDENTS, done, ud);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->limit = q != NULL && q->limit > 0 ? q->limit : INCIDENTS_DEFAULT_LIMIT;
  r->offset = q != NULL ? q->offset : 0;
  if (q != NULL && ((q->status != NULL && (r->status = strdup(q->status)) == NULL) ||
                    (q->severity != NULL && (r->severity = strdup(q->severity)) == NULL))) {
    read_free(r);
    return -ENOMEM;
  }
  return read_start(s, r);
}

int vg_store_incident(vg_store_t *s, int64_t id, vg_store_json_fn done, void *ud)
{
  if (s == NULL || done == NULL) {
    return -EINVAL;
  }
  read_t *r = read_new(READ_INCIDENT, done, ud);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->id = id;
  return read_start(s, r);
}

int vg_store_read(vg_store_t *s, vg_store_read_fn work, vg_store_done_fn done, void *ud)
{
  if (s == NULL || work == NULL || done == NULL) {
    return -EINVAL;
  }
  read_t *r = read_new(READ_CALL, NULL, ud);
  if (r == NULL) {
    return -ENOMEM;
  }
  r->work = work;
  r->call_done = done;
  return read_start(s, r);
}

/* ---- undecided alerts (decision replay) ---- */

enum { U_FP, U_NAME, U_SEVERITY, U_STATUS, U_LABELS, U_ANNOTATIONS, U_SOURCE, U_URL, U_GROUP, U_N };

/* One undecided row: its text columns as offsets into the read's buffer (SIZE_MAX: NULL). */
typedef struct {
  size_t off[U_N];
  int64_t starts_ms, ends_ms, incident_id, change;
} urow_t;

typedef struct {
  vg_store_undecided_fn each;
  vg_store_done_fn done;
  void *ud;
  urow_t *rows;
  size_t n, cap;
  char *buf; /* every row's text, NUL-terminated, one after the other */
  size_t len, bufcap;
} undecided_t;

static void undecided_free(undecided_t *u)
{
  free(u->rows);
  free(u->buf);
  free(u);
}

/* Appends `len` bytes and a NUL to the buffer; its offset, or SIZE_MAX on OOM. */
static size_t buf_put(undecided_t *u, const char *p, size_t len)
{
  if (len > SIZE_MAX / 4 || u->len > SIZE_MAX / 4 - len - 1) {
    return SIZE_MAX;
  }
  if (u->len + len + 1 > u->bufcap) {
    size_t cap = u->bufcap > 0 ? u->bufcap : 4096;
    while (cap < u->len + len + 1) {
      cap *= 2;
    }
    char *b = realloc(u->buf, cap);
    if (b == NULL) {
      return SIZE_MAX;
    }
    u->buf = b;
    u->bufcap = cap;
  }
  size_t at = u->len;
  if (len > 0) {
    memcpy(u->buf + at, p, len);
  }
  u->buf[at + len] = '\0';
  u->len += len + 1;
  return at;
}

/* On the thread pool: copies the undecided rows, oldest change first (the partial index's
 * order). JSON is decoded on the loop, one row at a time, so only the text is held. */
static int undecided_work(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  undecided_t *u = ud;
  sqlite3_stmt *st = NULL;
  int rc = prepare(db,
                   "SELECT fingerprint, name, severity, status, labels, annotations, source,"
                   " generator_url, group_key, starts_at, ends_at, incident_id, undecided"
                   " FROM alerts WHERE undecided > 0 ORDER BY undecided LIMIT ?1",
                   &st);
  if (rc != SQLITE_OK) {
    return db_error(db, rc, err, errlen);
  }
  sqlite3_bind_int(st, 1, VG_STORE_UNDECIDED_MAX);
  int status = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (u->n == u->cap) {
      size_t cap = u->cap > 0 ? u->cap * 2 : 64;
      urow_t *rows = realloc(u->rows, cap * sizeof *rows);
      if (rows == NULL) {
        break;
      }
      u->rows = rows;
      u->cap = cap;
    }
    urow_t *r = &u->rows[u->n];
    bool ok = true;
    for (int i = 0; i < U_N && ok; i++) {
      const char *t = (const char *)sqlite3_column_text(st, i);
      if (t == NULL && i == U_URL) {
        r->off[i] = SIZE_MAX;
        continue;
      }
      r->off[i] = buf_put(u, t != NULL ? t : "", (size_t)sqlite3_column_bytes(st, i));
      ok = r->off[i] != SIZE_MAX;
    }
    if (!ok) {
      break;
    }
    r->starts_ms = sqlite3_column_int64(st, 9);
    r->ends_ms = sqlite3_column_int64(st, 10);
    r->incident_id = sqlite3_column_int64(st, 11);
    r->change = sqlite3_column_int64(st, 12);
    u->n++;
  }
  if (rc == SQLITE_ROW) {
    snprintf(err, errlen, "out of memory");
    status = -ENOMEM;
  } else if (rc != SQLITE_DONE) {
    status = db_error(db, rc, err, errlen);
  }
  sqlite3_finalize(st);
  return status;
}

/* On the loop: each row decoded and handed out, then `done`. */
static void undecided_after(void *ud, int status, const char *err)
{
  undecided_t *u = ud;
  for (size_t i = 0; status == 0 && i < u->n; i++) {
    const urow_t *r = &u->rows[i];
    const char *t[U_N];
    for (int k = 0; k < U_N; k++) {
      t[k] = r->off[k] != SIZE_MAX ? u->buf + r->off[k] : NULL;
    }
    json_t *labels = json_loads(t[U_LABELS], JSON_ALLOW_NUL, NULL);
    json_t *annotations = json_loads(t[U_ANNOTATIONS], JSON_ALLOW_NUL, NULL);
    size_t nl = 0, na = 0;
    vg_label_t *lv = json_is_object(labels) ? label_view(labels, &nl) : NULL;
    vg_label_t *av = json_is_object(annotations) ? label_view(annotations, &na) : NULL;
    if (lv == NULL || (json_is_object(annotations) && av == NULL)) {
      /* unreadable labels (never written so) or OOM: left undecided, for the next start */
      nl = na = 0;
    } else {
      vg_store_alert_t a = {
        .fingerprint = t[U_FP],
        .name = t[U_NAME],
        .severity = t[U_SEVERITY],
        .status = t[U_STATUS],
        .labels = lv,
        .nlabels = nl,
        .annotations = av,
        .nannotations = av != NULL ? na : 0,
        .starts_at = (double)r->starts_ms / 1000.0,
        .ends_at = (double)r->ends_ms / 1000.0,
        .source = t[U_SOURCE],
        .generator_url = t[U_URL],
        .group_key = t[U_GROUP],
      };
      u->each(u->ud, &a, r->incident_id, r->change);
    }
    free(lv);
    free(av);
    json_decref(labels);
    json_decref(annotations);
  }
  vg_store_done_fn done = u->done;
  void *dud = u->ud;
  undecided_free(u);
  done(dud, status, status == 0 ? NULL : err);
}

int vg_store_undecided(vg_store_t *s, vg_store_undecided_fn each, vg_store_done_fn done, void *ud)
{
  if (s == NULL || each == NULL || done == NULL) {
    return -EINVAL;
  }
  undecided_t *u = calloc(1, sizeof *u);
  if (u == NULL) {
    return -ENOMEM;
  }
  u->each = each;
  u->done = done;
  u->ud = ud;
  int rc = vg_store_read(s, undecided_work, undecided_after, u);
  if (rc != 0) {
    undecided_free(u);
  }
  return rc;
}
