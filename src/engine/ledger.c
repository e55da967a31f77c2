/* The action ledger's statements (see ledger.h): writes run on the store's writer thread in
 * the group transaction, reads on the thread pool; results come back on the loop. */
#include "engine/ledger.h"

#include <errno.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define OUTPUT_EXCERPT 4096 /* bytes of output kept per action */
#define LIST_DEFAULT 100
#define LIST_MAX 1000

typedef enum {
  OP_RECORD,
  OP_CLAIM,
  OP_FINISH,
  OP_DECIDE,
  OP_RECOVER,
  OP_SET,
  OP_HEAL_BEGIN,
  OP_HEAL_END,
  OP_SUPPRESS,
} op_kind_t;

typedef struct {
  op_kind_t kind;
  /* the action (OP_RECORD, OP_CLAIM) */
  char *key, *policy, *policy_version, *subject, *type, *target, *scope, *mode, *why, *command,
      *who;
  int64_t incident_id;
  char *state, *detail; /* OP_RECORD, OP_CLAIM; OP_DECIDE: `state` is where to */
  int64_t expires_at;
  /* OP_FINISH, OP_DECIDE */
  int64_t id;
  vg_ledger_outcome_t outcome; /* its strings are the owned copies below */
  char *o_output, *o_error, *o_detail;
  /* OP_SET */
  char *name, *value;
  vg_ledger_entry_t *entries;
  size_t nentries;

  vg_ledger_done_fn done;
  void *ud;
  vg_ledger_result_t res;
  char *dup_output, *dup_error;
} op_t;

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *sdup(const char *s)
{
  return s != NULL ? strdup(s) : NULL;
}

/* True when every non-NULL source was copied. */
static bool dups(char **dst[], const char *const src[], size_t n)
{
  bool ok = true;
  for (size_t i = 0; i < n; i++) {
    *dst[i] = sdup(src[i]);
    ok = ok && (src[i] == NULL || *dst[i] != NULL);
  }
  return ok;
}

static void op_free(op_t *op)
{
  char *owned[] = { op->key,      op->policy, op->policy_version, op->subject,    op->type,
                    op->target,   op->scope,  op->mode,           op->why,        op->command,
                    op->who,      op->state,  op->detail,         op->o_output,   op->o_error,
                    op->o_detail, op->name,   op->value,          op->dup_output, op->dup_error };
  for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) {
    free(owned[i]);
  }
  for (size_t i = 0; i < op->nentries; i++) {
    free((char *)op->entries[i].name); /* our copy (op_entries) */
  }
  free(op->entries);
  free(op);
}

static op_t *op_new(op_kind_t kind, vg_ledger_done_fn done, void *ud)
{
  op_t *op = calloc(1, sizeof *op);
  if (op != NULL) {
    op->kind = kind;
    op->done = done;
    op->ud = ud;
  }
  return op;
}

static bool op_action(op_t *op, const vg_ledger_action_t *a)
{
  char **dst[] = { &op->key,    &op->policy, &op->policy_version, &op->subject, &op->type,
                   &op->target, &op->scope,  &op->mode,           &op->why,     &op->command,
                   &op->who };
  const char *const src[] = { a->key,
                              a->policy,
                              a->policy_version,
                              a->subject,
                              a->type,
                              a->target,
                              a->scope,
                              a->mode,
                              a->why,
                              a->command,
                              a->who != NULL ? a->who : "vigil" };
  op->incident_id = a->incident_id;
  return a->key != NULL && a->policy != NULL && a->type != NULL && a->target != NULL &&
         a->mode != NULL && a->command != NULL && dups(dst, src, sizeof src / sizeof src[0]);
}

static bool op_entries(op_t *op, const vg_ledger_entry_t *e, size_t n)
{
  if (n == 0) {
    return true;
  }
  op->entries = calloc(n, sizeof *e);
  if (op->entries == NULL) {
    return false;
  }
  for (size_t i = 0; i < n; i++, op->nentries++) {
    op->entries[i] = e[i];
    if ((op->entries[i].name = strdup(e[i].name)) == NULL) {
      return false;
    }
  }
  return true;
}

/* ---- statements (writer thread) ---- */

static void bind_opt(sqlite3_stmt *st, int i, const char *v)
{
  if (v != NULL) {
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  } else {
    sqlite3_bind_null(st, i);
  }
}

static int step_done(sqlite3_stmt *st)
{
  int rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int audit(
    sqlite3 *db, int64_t at, int64_t id, const char *event, const char *who, const char *detail)
{
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(
      db, "INSERT INTO audit (at, action_id, event, who, detail) VALUES (?, ?, ?, ?, ?)", -1, &st,
      NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_int64(st, 1, at);
  if (id > 0) {
    sqlite3_bind_int64(st, 2, id);
  }
  sqlite3_bind_text(st, 3, event, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, who != NULL ? who : "vigil", -1, SQLITE_STATIC);
  bind_opt(st, 5, detail);
  return step_done(st);
}

static int write_entries(sqlite3 *db, const op_t *op)
{
  for (size_t i = 0; i < op->nentries; i++) {
    const vg_ledger_entry_t *e = &op->entries[i];
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db,
                                e->value < 0 ? "DELETE FROM guard_state WHERE name = ?1"
                                             : "INSERT INTO guard_state (name, value, at)"
                                               " VALUES (?1, ?2, ?3) ON CONFLICT (name) DO"
                                               " UPDATE SET value = ?2, at = ?3",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
      return rc;
    }
    sqlite3_bind_text(st, 1, e->name, -1, SQLITE_STATIC);
    if (e->value >= 0) {
      sqlite3_bind_double(st, 2, e->value);
      sqlite3_bind_int64(st, 3, e->at);
    }
    if ((rc = step_done(st)) != SQLITE_OK) {
      return rc;
    }
  }
  return SQLITE_OK;
}

static int insert_action(sqlite3 *db, op_t *op, bool claim, int64_t at)
{
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(
      db,
      "INSERT INTO actions (key, claim_key, policy, policy_version, subject, incident_id, type,"
      " target, scope, mode, state, why, command, created_at, expires_at)"
      " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
      -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC);
  bind_opt(st, 2, claim ? op->key : NULL);
  sqlite3_bind_text(st, 3, op->policy, -1, SQLITE_STATIC);
  bind_opt(st, 4, op->policy_version);
  bind_opt(st, 5, op->subject);
  if (op->incident_id > 0) {
    sqlite3_bind_int64(st, 6, op->incident_id);
  }
  sqlite3_bind_text(st, 7, op->type, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 8, op->target, -1, SQLITE_STATIC);
  bind_opt(st, 9, op->scope);
  sqlite3_bind_text(st, 10, op->mode, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 11, op->state, -1, SQLITE_STATIC);
  bind_opt(st, 12, op->why);
  sqlite3_bind_text(st, 13, op->command, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 14, at);
  if (op->expires_at > 0) {
    sqlite3_bind_int64(st, 15, op->expires_at);
  }
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    return rc;
  }
  op->res.id = sqlite3_last_insert_rowid(db);
  snprintf(op->res.state, sizeof op->res.state, "%s", op->state);
  return SQLITE_OK;
}

static char *col_dup(sqlite3_stmt *st, int i)
{
  const unsigned char *t = sqlite3_column_text(st, i);
  return t != NULL ? strdup((const char *)t) : NULL;
}

/* The row holding op->key, if any: fills res with it. SQLITE_ROW when found. */
static int find_claim(sqlite3 *db, op_t *op)
{
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT id, state, exit_code, signal, http_status, output, error"
                              " FROM actions WHERE claim_key = ?",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    op->res.id = sqlite3_column_int64(st, 0);
    snprintf(op->res.state, sizeof op->res.state, "%s", (const char *)sqlite3_column_text(st, 1));
    op->res.exit_code = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 2);
    op->res.signal = sqlite3_column_int(st, 3);
    op->res.http_status = sqlite3_column_int(st, 4);
    op->dup_output = col_dup(st, 5);
    op->dup_error = col_dup(st, 6);
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Moves row `id` from one of `from` (NULL-terminated) to `to`. SQLITE_OK with res filled, or
 * SQLITE_CONSTRAINT with a message for a refused transition (status -EINVAL). */
static int transition(sqlite3 *db,
                      op_t *op,
                      const char *const *from,
                      const char *to,
                      bool free_key,
                      char *err,
                      size_t errlen)
{
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, "SELECT state FROM actions WHERE id = ?", -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_int64(st, 1, op->id);
  rc = sqlite3_step(st);
  char state[24] = "";
  if (rc == SQLITE_ROW) {
    snprintf(state, sizeof state, "%s", (const char *)sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE) {
    snprintf(err, errlen, "no action %lld", (long long)op->id);
    op->res.status = -ENOENT;
    return SQLITE_NOTFOUND;
  }
  if (rc != SQLITE_ROW) {
    return rc;
  }
  bool allowed = false;
  for (const char *const *f = from; *f != NULL; f++) {
    allowed = allowed || strcmp(state, *f) == 0;
  }
  if (!allowed) {
    snprintf(err, errlen, "action %lld is %s", (long long)op->id, state);
    op->res.status = -EINVAL;
    return SQLITE_CONSTRAINT;
  }
  rc = sqlite3_prepare_v2(db,
                          free_key ? "UPDATE actions SET state = ?2, claim_key = NULL,"
                                     " decided_by = ?3, decided_at = ?4 WHERE id = ?1"
                                   : "UPDATE actions SET state = ?2, decided_by = ?3,"
                                     " decided_at = ?4 WHERE id = ?1",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_int64(st, 1, op->id);
  sqlite3_bind_text(st, 2, to, -1, SQLITE_STATIC);
  bind_opt(st, 3, op->who);
  sqlite3_bind_int64(st, 4, now_ms());
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  op->res.id = op->id;
  snprintf(op->res.state, sizeof op->res.state, "%s", to);
  return SQLITE_OK;
}

static int do_claim(sqlite3 *db, op_t *op, int64_t at, char *err, size_t errlen)
{
  int rc = find_claim(db, op);
  if (rc == SQLITE_ROW) {
    if (strcmp(op->state, "claimed") == 0 && strcmp(op->res.state, "approved") == 0) {
      op->id = op->res.id;
      static const char *const from[] = { "approved", NULL };
      if ((rc = transition(db, op, from, "claimed", false, err, errlen)) != SQLITE_OK ||
          (rc = audit(db, at, op->id, "claimed", op->who, "approved earlier")) != SQLITE_OK) {
        return rc;
      }
      return write_entries(db, op);
    }
    op->res.duplicate = true;
    return SQLITE_OK; /* nothing written: the earlier row answers */
  }
  if (rc != SQLITE_OK) {
    return rc;
  }
  if ((rc = insert_action(db, op, true, at)) != SQLITE_OK ||
      (rc = audit(db, at, op->res.id,
                  strcmp(op->state, "claimed") == 0 ? "claimed" : "approval-requested", op->who,
                  op->why)) != SQLITE_OK) {
    return rc;
  }
  return write_entries(db, op);
}

static int do_finish(sqlite3 *db, op_t *op, int64_t at, char *err, size_t errlen)
{
  const vg_ledger_outcome_t *o = &op->outcome;
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "UPDATE actions SET state = ?2, attempts = ?3, exit_code = ?4,"
                              " signal = ?5, http_status = ?6, output = ?7, error = ?8,"
                              " finished_at = ?9, duration_ms = ?10"
                              " WHERE id = ?1 AND state = 'claimed'",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  const char *state = o->ok ? "done" : "failed";
  sqlite3_bind_int64(st, 1, op->id);
  sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 3, o->attempts);
  if (o->exit_code >= 0) {
    sqlite3_bind_int(st, 4, o->exit_code);
  }
  if (o->signal > 0) {
    sqlite3_bind_int(st, 5, o->signal);
  }
  if (o->http_status > 0) {
    sqlite3_bind_int(st, 6, o->http_status);
  }
  if (o->output != NULL) {
    size_t len = strlen(o->output);
    sqlite3_bind_text(st, 7, o->output, (int)(len > OUTPUT_EXCERPT ? OUTPUT_EXCERPT : len),
                      SQLITE_STATIC);
  }
  bind_opt(st, 8, o->error);
  sqlite3_bind_int64(st, 9, at);
  sqlite3_bind_int64(st, 10, o->duration_ms);
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  if (sqlite3_changes(db) != 1) {
    snprintf(err, errlen, "action %lld is not claimed", (long long)op->id);
    op->res.status = -EINVAL;
    return SQLITE_CONSTRAINT;
  }
  char detail[512];
  snprintf(detail, sizeof detail, "%s%s%s", o->error != NULL ? o->error : "",
           o->error != NULL && o->detail != NULL ? "; " : "", o->detail != NULL ? o->detail : "");
  if ((rc = audit(db, at, op->id, state, op->who, detail[0] != '\0' ? detail : NULL)) !=
      SQLITE_OK) {
    return rc;
  }
  op->res.id = op->id;
  snprintf(op->res.state, sizeof op->res.state, "%s", state);
  return write_entries(db, op);
}

static int do_decide(sqlite3 *db, op_t *op, int64_t at, char *err, size_t errlen)
{
  static const char *const awaiting[] = { "awaiting_approval", NULL };
  static const char *const unknown[] = { "unknown", NULL };
  static const char *const approved[] = { "approved", NULL };
  const char *to = op->state;
  int rc;
  if (strcmp(to, "approved") == 0 || strcmp(to, "denied") == 0) {
    rc = transition(db, op, awaiting, to, false, err, errlen);
  } else if (strcmp(to, "expired") == 0) {
    rc = transition(db, op, awaiting, to, true, err, errlen);
  } else if (strcmp(to, "done") == 0 || strcmp(to, "failed") == 0) {
    rc = transition(db, op, unknown, to, false, err, errlen);
  } else if (strcmp(to, "refused") == 0) {
    rc = transition(db, op, approved, to, true, err, errlen);
  } else {
    snprintf(err, errlen, "no such decision: %s", to);
    op->res.status = -EINVAL;
    return SQLITE_CONSTRAINT;
  }
  if (rc != SQLITE_OK) {
    return rc;
  }
  const char *event = strcmp(to, "done") == 0 || strcmp(to, "failed") == 0 ? "reconciled" : to;
  char detail[600];
  snprintf(detail, sizeof detail, "%s%s%s", event == to ? "" : to,
           event == to || op->detail == NULL ? "" : ": ", op->detail != NULL ? op->detail : "");
  return audit(db, at, op->id, event, op->who, detail[0] != '\0' ? detail : NULL);
}

static int64_t changes(sqlite3 *db, const char *sql, int *rc)
{
  *rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  return *rc == SQLITE_OK ? sqlite3_changes(db) : 0;
}

static int do_recover(sqlite3 *db, op_t *op, int64_t at)
{
  int rc;
  /* audit first, while the rows are still told apart by their state */
  char sql[256];
  snprintf(sql, sizeof sql,
           "INSERT INTO audit (at, action_id, event, who, detail) SELECT %lld, id, 'unknown',"
           " 'vigil', 'vigil restarted while it was claimed: it may have run' FROM actions"
           " WHERE state = 'claimed'",
           (long long)at);
  if ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK) {
    return rc;
  }
  op->res.unknown =
      changes(db, "UPDATE actions SET state = 'unknown' WHERE state = 'claimed'", &rc);
  if (rc != SQLITE_OK) {
    return rc;
  }
  snprintf(sql, sizeof sql,
           "INSERT INTO audit (at, action_id, event, who, detail) SELECT %lld, id, 'expired',"
           " 'vigil', 'vigil restarted while it waited for approval' FROM actions"
           " WHERE state IN ('awaiting_approval', 'approved')",
           (long long)at);
  if ((rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) != SQLITE_OK) {
    return rc;
  }
  op->res.expired = changes(db,
                            "UPDATE actions SET state = 'expired', claim_key = NULL"
                            " WHERE state IN ('awaiting_approval', 'approved')",
                            &rc);
  if (rc != SQLITE_OK) {
    return rc;
  }
  changes(db,
          "UPDATE healings SET status = 'interrupted', error = 'vigil restarted during the run'"
          " WHERE status = 'running'",
          &rc);
  return rc;
}

static int do_set(sqlite3 *db, op_t *op, int64_t at)
{
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT INTO settings (name, value, updated_at, updated_by)"
                              " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name) DO UPDATE SET"
                              " value = ?2, updated_at = ?3, updated_by = ?4",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_text(st, 1, op->name, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, op->value, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, at);
  bind_opt(st, 4, op->who);
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  char detail[600];
  snprintf(detail, sizeof detail, "%s = %s%s%s", op->name, op->value,
           op->detail != NULL ? ": " : "", op->detail != NULL ? op->detail : "");
  return audit(db, at, 0, "setting", op->who, detail);
}

static int do_heal(sqlite3 *db, op_t *op, int64_t at)
{
  sqlite3_stmt *st;
  int rc;
  if (op->kind == OP_HEAL_BEGIN) {
    rc = sqlite3_prepare_v2(db,
                            "INSERT INTO healings (policy, name, subject, incident_id, status,"
                            " started_at) VALUES (?, ?, ?, ?, 'running', ?)",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
      return rc;
    }
    sqlite3_bind_text(st, 1, op->policy, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, op->name, -1, SQLITE_STATIC);
    bind_opt(st, 3, op->subject);
    if (op->incident_id > 0) {
      sqlite3_bind_int64(st, 4, op->incident_id);
    }
    sqlite3_bind_int64(st, 5, at);
  } else {
    rc = sqlite3_prepare_v2(db,
                            "UPDATE healings SET status = ?2, steps = ?3, error = ?4,"
                            " finished_at = ?5, duration_ms = ?5 - started_at"
                            " WHERE id = ?1 AND status = 'running'",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
      return rc;
    }
    sqlite3_bind_int64(st, 1, op->id);
    sqlite3_bind_text(st, 2, op->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, op->command != NULL ? op->command : "[]", -1, SQLITE_STATIC);
    bind_opt(st, 4, op->detail);
    sqlite3_bind_int64(st, 5, at);
  }
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  op->res.id = op->kind == OP_HEAL_BEGIN ? sqlite3_last_insert_rowid(db) : op->id;
  snprintf(op->res.state, sizeof op->res.state, "%s",
           op->kind == OP_HEAL_BEGIN ? "running" : op->state);
  return SQLITE_OK;
}

static int do_suppress(sqlite3 *db, op_t *op, int64_t at)
{
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "INSERT INTO suppressions (matchers, reason, created_by, created_at,"
                              " until) VALUES (?, ?, ?, ?, ?)",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) {
    return rc;
  }
  sqlite3_bind_text(st, 1, op->name, -1, SQLITE_STATIC);
  bind_opt(st, 2, op->detail);
  sqlite3_bind_text(st, 3, op->who, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 4, at);
  sqlite3_bind_int64(st, 5, op->expires_at);
  if ((rc = step_done(st)) != SQLITE_OK) {
    return rc;
  }
  op->res.id = sqlite3_last_insert_rowid(db);
  char detail[700];
  snprintf(detail, sizeof detail, "suppressed %s until %lld%s%s", op->name,
           (long long)op->expires_at, op->detail != NULL ? ": " : "",
           op->detail != NULL ? op->detail : "");
  return audit(db, at, 0, "suppression", op->who, detail);
}

static int op_work(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  op_t *op = ud;
  int64_t at = now_ms();
  switch (op->kind) {
    case OP_RECORD: {
      int rc = insert_action(db, op, false, at);
      return rc != SQLITE_OK ? rc : audit(db, at, op->res.id, op->state, op->who, op->detail);
    }
    case OP_CLAIM:
      return do_claim(db, op, at, err, errlen);
    case OP_FINISH:
      return do_finish(db, op, at, err, errlen);
    case OP_DECIDE:
      return do_decide(db, op, at, err, errlen);
    case OP_RECOVER:
      return do_recover(db, op, at);
    case OP_SET:
      return do_set(db, op, at);
    case OP_HEAL_BEGIN:
    case OP_HEAL_END:
      return do_heal(db, op, at);
    case OP_SUPPRESS:
      return do_suppress(db, op, at);
  }
  return SQLITE_MISUSE;
}

/* ---- the loop side ---- */

static void op_done(void *ud, int status, const char *err)
{
  op_t *op = ud;
  if (status != 0) {
    /* a refused transition keeps its own status; anything else is the store's failure */
    op->res.status = op->res.status < 0 ? op->res.status : status;
    op->res.err = err;
    op->res.duplicate = false;
  }
  op->res.output = op->dup_output;
  op->res.error = op->dup_error;
  op->done(op->ud, &op->res);
  op_free(op);
}

static int submit(vg_store_t *s, op_t *op, bool ok)
{
  if (!ok) {
    op_free(op);
    return -ENOMEM;
  }
  int rc = vg_store_call(s, op_work, op_done, op);
  if (rc != 0) {
    op_free(op);
  }
  return rc;
}

static bool state_in(const char *s, const char *const *set)
{
  for (; s != NULL && *set != NULL; set++) {
    if (strcmp(s, *set) == 0) {
      return true;
    }
  }
  return false;
}

int vg_ledger_record(vg_store_t *s,
                     const vg_ledger_action_t *a,
                     const char *state,
                     const char *detail,
                     vg_ledger_done_fn done,
                     void *ud)
{
  static const char *const states[] = { "observed", "dry-run", "refused", NULL };
  if (s == NULL || a == NULL || done == NULL || !state_in(state, states)) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_RECORD, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  if (!op_action(op, a)) {
    bool oom = a->key != NULL && a->policy != NULL && a->type != NULL && a->target != NULL &&
               a->mode != NULL && a->command != NULL;
    op_free(op);
    return oom ? -ENOMEM : -EINVAL;
  }
  op->state = strdup(state);
  op->detail = sdup(detail);
  return submit(s, op, op->state != NULL && (detail == NULL || op->detail != NULL));
}

int vg_ledger_claim(vg_store_t *s,
                    const vg_ledger_action_t *a,
                    const char *state,
                    int64_t expires_at,
                    const vg_ledger_entry_t *entries,
                    size_t nentries,
                    vg_ledger_done_fn done,
                    void *ud)
{
  static const char *const states[] = { "claimed", "awaiting_approval", NULL };
  if (s == NULL || a == NULL || done == NULL || !state_in(state, states) ||
      (nentries > 0 && entries == NULL)) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_CLAIM, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  if (!op_action(op, a)) {
    op_free(op);
    return -EINVAL;
  }
  op->state = strdup(state);
  op->expires_at = expires_at;
  return submit(s, op, op->state != NULL && op_entries(op, entries, nentries));
}

int vg_ledger_finish(vg_store_t *s,
                     int64_t id,
                     const vg_ledger_outcome_t *o,
                     const vg_ledger_entry_t *entries,
                     size_t nentries,
                     vg_ledger_done_fn done,
                     void *ud)
{
  if (s == NULL || o == NULL || done == NULL || id <= 0 || (nentries > 0 && entries == NULL)) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_FINISH, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  op->id = id;
  op->outcome = *o;
  char **dst[] = { &op->o_output, &op->o_error, &op->o_detail };
  const char *const src[] = { o->output, o->error, o->detail };
  bool ok = dups(dst, src, 3);
  op->outcome.output = op->o_output;
  op->outcome.error = op->o_error;
  op->outcome.detail = op->o_detail;
  return submit(s, op, ok && op_entries(op, entries, nentries));
}

int vg_ledger_decide(vg_store_t *s,
                     int64_t id,
                     const char *to,
                     const char *who,
                     const char *comment,
                     vg_ledger_done_fn done,
                     void *ud)
{
  if (s == NULL || to == NULL || done == NULL) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_DECIDE, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  op->id = id;
  op->state = strdup(to);
  op->who = strdup(who != NULL && who[0] != '\0' ? who : "operator");
  op->detail = sdup(comment);
  return submit(s, op,
                op->state != NULL && op->who != NULL && (comment == NULL || op->detail != NULL));
}

int vg_ledger_recover(vg_store_t *s, vg_ledger_done_fn done, void *ud)
{
  if (s == NULL || done == NULL) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_RECOVER, done, ud);
  return op == NULL ? -ENOMEM : submit(s, op, true);
}

int vg_ledger_set(vg_store_t *s,
                  const char *name,
                  const char *value,
                  const char *who,
                  const char *comment,
                  vg_ledger_done_fn done,
                  void *ud)
{
  if (s == NULL || name == NULL || value == NULL || done == NULL) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_SET, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  op->name = strdup(name);
  op->value = strdup(value);
  op->who = strdup(who != NULL && who[0] != '\0' ? who : "operator");
  op->detail = sdup(comment);
  return submit(s, op,
                op->name != NULL && op->value != NULL && op->who != NULL &&
                    (comment == NULL || op->detail != NULL));
}

int vg_ledger_heal_begin(vg_store_t *s,
                         const char *policy,
                         const char *name,
                         const char *subject,
                         int64_t incident_id,
                         vg_ledger_done_fn done,
                         void *ud)
{
  if (s == NULL || policy == NULL || name == NULL || done == NULL) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_HEAL_BEGIN, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  op->policy = strdup(policy);
  op->name = strdup(name);
  op->subject = sdup(subject);
  op->incident_id = incident_id;
  return submit(s, op,
                op->policy != NULL && op->name != NULL && (subject == NULL || op->subject != NULL));
}

int vg_ledger_heal_end(vg_store_t *s,
                       int64_t id,
                       const char *status,
                       const char *steps_json,
                       const char *error,
                       vg_ledger_done_fn done,
                       void *ud)
{
  if (s == NULL || status == NULL || done == NULL ||
      (strcmp(status, "succeeded") != 0 && strcmp(status, "failed") != 0)) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_HEAL_END, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  op->id = id;
  op->state = strdup(status);
  op->command = sdup(steps_json);
  op->detail = sdup(error);
  return submit(s, op,
                op->state != NULL && (steps_json == NULL || op->command != NULL) &&
                    (error == NULL || op->detail != NULL));
}

int vg_ledger_suppress(vg_store_t *s,
                       const char *matchers,
                       int64_t until,
                       const char *reason,
                       const char *who,
                       vg_ledger_done_fn done,
                       void *ud)
{
  if (s == NULL || matchers == NULL || done == NULL) {
    return -EINVAL;
  }
  op_t *op = op_new(OP_SUPPRESS, done, ud);
  if (op == NULL) {
    return -ENOMEM;
  }
  op->name = strdup(matchers);
  op->detail = sdup(reason);
  op->who = strdup(who != NULL ? who : "vigil");
  op->expires_at = until;
  return submit(s, op,
                op->name != NULL && op->who != NULL && (reason == NULL || op->detail != NULL));
}

/* ---- reading ---- */

typedef struct load_item {
  struct load_item *next;
  vg_ledger_item_t kind;
  double value;
  int64_t at;
  char *text;
  char name[];
} load_item_t;

typedef struct {
  vg_ledger_load_fn each;
  vg_ledger_done_fn done;
  void *ud;
  load_item_t *head, **tail;
} load_t;

static int load_push(
    load_t *l, vg_ledger_item_t kind, const char *name, const char *text, double value, int64_t at)
{
  size_t n = strlen(name) + 1;
  load_item_t *it = calloc(1, sizeof *it + n);
  if (it == NULL || (text != NULL && (it->text = strdup(text)) == NULL)) {
    free(it);
    return -ENOMEM;
  }
  memcpy(it->name, name, n);
  it->kind = kind;
  it->value = value;
  it->at = at;
  *l->tail = it;
  l->tail = &it->next;
  return 0;
}

static int load_work(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  load_t *l = ud;
  char sup[160];
  snprintf(sup, sizeof sup,
           "SELECT matchers, id, until, reason FROM suppressions WHERE until > %lld ORDER BY id",
           (long long)now_ms());
  const char *const sql[] = { "SELECT name, value, at, NULL FROM guard_state",
                              "SELECT name, 0, updated_at, value FROM settings", sup };
  const vg_ledger_item_t kinds[] = { VG_LEDGER_GUARD, VG_LEDGER_SETTING, VG_LEDGER_SUPPRESSION };
  for (int k = 0; k < 3; k++) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql[k], -1, &st, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *name = (const char *)sqlite3_column_text(st, 0);
      int r =
          load_push(l, kinds[k], name != NULL ? name : "", (const char *)sqlite3_column_text(st, 3),
                    sqlite3_column_double(st, 1), sqlite3_column_int64(st, 2));
      rc = r == 0 ? SQLITE_OK : SQLITE_NOMEM;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
      snprintf(err, errlen, "%s", sqlite3_errstr(rc));
      return -EIO;
    }
  }
  return 0;
}

static void load_done(void *ud, int status, const char *err)
{
  load_t *l = ud;
  for (load_item_t *it = l->head, *next; it != NULL; it = next) {
    next = it->next;
    if (status == 0) {
      l->each(l->ud, it->kind, it->name, it->text, it->value, it->at);
    }
    free(it->text);
    free(it);
  }
  vg_ledger_result_t r = { .status = status, .err = err };
  l->done(l->ud, &r);
  free(l);
}

int vg_ledger_load(vg_store_t *s, vg_ledger_load_fn each, vg_ledger_done_fn done, void *ud)
{
  if (s == NULL || each == NULL || done == NULL) {
    return -EINVAL;
  }
  load_t *l = calloc(1, sizeof *l);
  if (l == NULL) {
    return -ENOMEM;
  }
  l->each = each;
  l->done = done;
  l->ud = ud;
  l->tail = &l->head;
  int rc = vg_store_read(s, load_work, load_done, l);
  if (rc != 0) {
    free(l);
  }
  return rc;
}

typedef struct {
  vg_ledger_query_t q;
  char *state, *policy;
  int64_t id; /* vg_ledger_get */
  vg_store_json_fn done;
  void *ud;
  char *json;
  size_t len;
} read_t;

static void read_free(read_t *r)
{
  free(r->state);
  free(r->policy);
  free(r->json);
  free(r);
}

static json_t *text_or_null(sqlite3_stmt *st, int i)
{
  const unsigned char *t = sqlite3_column_text(st, i);
  return t != NULL ? json_string((const char *)t) : json_null();
}

static json_t *int_or_null(sqlite3_stmt *st, int i)
{
  return sqlite3_column_type(st, i) == SQLITE_NULL ? json_null()
                                                   : json_integer(sqlite3_column_int64(st, i));
}

static json_t *time_or_null(sqlite3_stmt *st, int i)
{
  if (sqlite3_column_type(st, i) == SQLITE_NULL) {
    return json_null();
  }
  int64_t ms = sqlite3_column_int64(st, i);
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
  return json_string(buf);
}

#define ACTION_COLUMNS                                                                       \
  "id, key, policy, policy_version, subject, incident_id, type, target, scope, mode, state," \
  " why, command, attempts, exit_code, signal, http_status, output, error, created_at,"      \
  " finished_at, duration_ms, expires_at, decided_by, decided_at"

static json_t *action_json(sqlite3_stmt *st)
{
  static const char *const names[] = {
    "id",         "key",       "policy",     "policyVersion", "subject", "incidentId", "type",
    "target",     "scope",     "mode",       "state",         "why",     "command",    "attempts",
    "exitCode",   "signal",    "httpStatus", "output",        "error",   "createdAt",  "finishedAt",
    "durationMs", "expiresAt", "decidedBy",  "decidedAt"
  };
  json_t *o = json_object();
  for (int i = 0; o != NULL && i < (int)(sizeof names / sizeof names[0]); i++) {
    json_t *v;
    int type = sqlite3_column_type(st, i);
    if (strcmp(names[i], "command") == 0 && type != SQLITE_NULL) {
      v = json_loads((const char *)sqlite3_column_text(st, i), JSON_DECODE_ANY, NULL);
      v = v != NULL ? v : text_or_null(st, i);
    } else if (strstr(names[i], "At") != NULL) {
      v = time_or_null(st, i);
    } else if (type == SQLITE_INTEGER || type == SQLITE_NULL) {
      v = type == SQLITE_NULL ? json_null() : int_or_null(st, i);
    } else {
      v = text_or_null(st, i);
    }
    if (v == NULL || json_object_set_new(o, names[i], v) != 0) {
      json_decref(o);
      return NULL;
    }
  }
  return o;
}

static int read_list(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  read_t *r = ud;
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT " ACTION_COLUMNS
                              " FROM actions"
                              " WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR policy = ?2)"
                              " AND (?3 = 0 OR incident_id = ?3) AND (?4 = 0 OR id < ?4)"
                              " ORDER BY id DESC LIMIT ?5",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    return -EIO;
  }
  bind_opt(st, 1, r->state);
  bind_opt(st, 2, r->policy);
  sqlite3_bind_int64(st, 3, r->q.incident_id);
  sqlite3_bind_int64(st, 4, r->q.before_id);
  sqlite3_bind_int64(st, 5, (sqlite3_int64)r->q.limit);
  json_t *arr = json_array();
  bool ok = arr != NULL;
  while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *o = action_json(st);
    ok = o != NULL && json_array_append_new(arr, o) == 0;
  }
  sqlite3_finalize(st);
  json_t *doc = ok ? json_pack("{s:o}", "actions", arr) : NULL;
  if (doc == NULL && ok) {
    ok = false;
  } else if (!ok) {
    json_decref(arr);
  }
  if (ok && rc != SQLITE_DONE) {
    json_decref(doc);
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    return -EIO;
  }
  if (!ok || (r->json = json_dumps(doc, JSON_COMPACT)) == NULL) {
    json_decref(doc);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  json_decref(doc);
  r->len = strlen(r->json);
  return 0;
}

static int read_one(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  read_t *r = ud;
  sqlite3_stmt *st;
  int rc =
      sqlite3_prepare_v2(db, "SELECT " ACTION_COLUMNS " FROM actions WHERE id = ?", -1, &st, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    return -EIO;
  }
  sqlite3_bind_int64(st, 1, r->id);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) {
      snprintf(err, errlen, "no action %lld", (long long)r->id);
      return -ENOENT;
    }
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    return -EIO;
  }
  json_t *doc = action_json(st);
  sqlite3_finalize(st);
  json_t *events = json_array();
  bool ok = doc != NULL && events != NULL;
  if (ok && sqlite3_prepare_v2(db,
                               "SELECT at, event, who, detail FROM audit WHERE action_id = ?"
                               " ORDER BY id",
                               -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, r->id);
    while (ok && sqlite3_step(st) == SQLITE_ROW) {
      json_t *e = json_object();
      ok = e != NULL && json_object_set_new(e, "at", time_or_null(st, 0)) == 0 &&
           json_object_set_new(e, "event", text_or_null(st, 1)) == 0 &&
           json_object_set_new(e, "who", text_or_null(st, 2)) == 0 &&
           json_object_set_new(e, "detail", text_or_null(st, 3)) == 0 &&
           json_array_append_new(events, e) == 0;
    }
    sqlite3_finalize(st);
  }
  ok = ok && json_object_set_new(doc, "audit", events) == 0;
  if (!ok) {
    json_decref(events);
  }
  if (!ok || (r->json = json_dumps(doc, JSON_COMPACT)) == NULL) {
    json_decref(doc);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  json_decref(doc);
  r->len = strlen(r->json);
  return 0;
}

static int read_healings(sqlite3 *db, void *ud, char *err, size_t errlen)
{
  read_t *r = ud;
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT id, policy, name, subject, incident_id, status, steps, error,"
                              " started_at, finished_at, duration_ms FROM healings"
                              " WHERE ?1 = 0 OR id = ?1 ORDER BY id DESC LIMIT ?2",
                              -1, &st, NULL);
  if (rc != SQLITE_OK) {
    snprintf(err, errlen, "%s", sqlite3_errmsg(db));
    return -EIO;
  }
  sqlite3_bind_int64(st, 1, r->id);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)r->q.limit);
  static const char *const names[] = { "id",         "policy",     "name",      "subject",
                                       "incidentId", "status",     "steps",     "error",
                                       "startedAt",  "finishedAt", "durationMs" };
  json_t *arr = json_array();
  bool ok = arr != NULL;
  while (ok && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    json_t *o = json_object();
    for (int i = 0; o != NULL && i < 11; i++) {
      json_t *v;
      if (i == 6) {
        v = json_loads((const char *)sqlite3_column_text(st, i), 0, NULL);
        v = v != NULL ? v : json_array();
      } else if (i == 8 || i == 9) {
        v = time_or_null(st, i);
      } else if (sqlite3_column_type(st, i) == SQLITE_INTEGER ||
                 sqlite3_column_type(st, i) == SQLITE_NULL) {
        v = int_or_null(st, i);
      } else {
        v = text_or_null(st, i);
      }
      ok = ok && v != NULL && json_object_set_new(o, names[i], v) == 0;
    }
    ok = ok && o != NULL && json_array_append_new(arr, o) == 0;
  }
  sqlite3_finalize(st);
  json_t *doc = NULL;
  if (ok && r->id != 0) {
    if (json_array_size(arr) == 0) {
      json_decref(arr);
      snprintf(err, errlen, "no healing run %lld", (long long)r->id);
      return -ENOENT;
    }
    doc = json_incref(json_array_get(arr, 0));
    json_decref(arr);
  } else if (ok) {
    doc = json_pack("{s:o}", "healings", arr);
  } else {
    json_decref(arr);
  }
  if (doc == NULL || (r->json = json_dumps(doc, JSON_COMPACT)) == NULL) {
    json_decref(doc);
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  json_decref(doc);
  r->len = strlen(r->json);
  return 0;
}

static void read_done(void *ud, int status, const char *err)
{
  read_t *r = ud;
  if (status == 0) {
    r->done(r->ud, 0, r->json, r->len);
  } else {
    r->done(r->ud, status, err, strlen(err));
  }
  read_free(r);
}

static size_t clamp_limit(size_t limit)
{
  return limit == 0 ? LIST_DEFAULT : limit > LIST_MAX ? LIST_MAX : limit;
}

static read_t *read_new(vg_store_json_fn done, void *ud)
{
  read_t *r = calloc(1, sizeof *r);
  if (r != NULL) {
    r->done = done;
    r->ud = ud;
  }
  return r;
}

/* Runs `work` for r on the thread pool; r is freed when it cannot start. */
static int read_submit(vg_store_t *s, read_t *r, vg_store_read_fn work)
{
  int rc = vg_store_read(s, work, read_done, r);
  if (rc != 0) {
    read_free(r);
  }
  return rc;
}

int vg_ledger_list(vg_store_t *s, const vg_ledger_query_t *q, vg_store_json_fn done, void *ud)
{
  read_t *r = s != NULL && done != NULL ? read_new(done, ud) : NULL;
  if (r == NULL) {
    return s == NULL || done == NULL ? -EINVAL : -ENOMEM;
  }
  if (q != NULL) {
    r->q = *q;
    r->state = sdup(q->state);
    r->policy = sdup(q->policy);
    if ((q->state != NULL && r->state == NULL) || (q->policy != NULL && r->policy == NULL)) {
      read_free(r);
      return -ENOMEM;
    }
  }
  r->q.limit = clamp_limit(r->q.limit);
  return read_submit(s, r, read_list);
}

int vg_ledger_get(vg_store_t *s, int64_t id, vg_store_json_fn done, void *ud)
{
  read_t *r = s != NULL && done != NULL ? read_new(done, ud) : NULL;
  if (r == NULL) {
    return s == NULL || done == NULL ? -EINVAL : -ENOMEM;
  }
  r->id = id;
  return read_submit(s, r, read_one);
}

int vg_ledger_healings(vg_store_t *s, int64_t id, size_t limit, vg_store_json_fn done, void *ud)
{
  read_t *r = s != NULL && done != NULL ? read_new(done, ud) : NULL;
  if (r == NULL) {
    return s == NULL || done == NULL ? -EINVAL : -ENOMEM;
  }
  r->id = id;
  r->q.limit = clamp_limit(limit);
  return read_submit(s, r, read_healings);
}
