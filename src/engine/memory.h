/* What vigil remembers about incidents for the AIOps pipeline (lua/vigil/pipeline.lua), in the
 * store (schema version 5):
 *
 *   timeline      steps the pipeline took on an incident (enrich, classify, plan, act, ...)
 *                 with timings, beside the status changes the store writes itself;
 *   policy_state  a small key/value store per policy (JSON values, optional expiry);
 *   kb_incidents  the knowledge base: per incident its text (alert names, labels,
 *   + kb_text       annotations, log templates), class, the fix applied, its outcome and time
 *                 to resolve; kb_text is an FTS5 index over that text for similar incidents;
 *   kb_fixes      known fixes per key (an alert name or a class) with their success counts;
 *   escalations   persisted escalation timers (DESIGN.md G4): pending -> due -> fired, or
 *                 cancelled (acknowledged, resolved or closed incidents cancel theirs in the
 *                 same transaction as the status change, in store.c).
 *
 * One entry point: an operation by name with JSON arguments and a JSON result, so the Lua
 * binding stays a thin bridge. Writes go through the store's writer (vg_store_call) and are
 * committed before `done` runs; reads run on the thread pool (vg_store_read). Pure C on the
 * store; no Lua. Times are ms since the epoch.
 *
 * Arguments are checked strictly: an unknown argument, a missing required one or one of the
 * wrong kind is refused (-EINVAL, "kb_learn: 'incident' must be an integer"); a JSON null
 * counts as absent, an integral real (3.0) as an integer, an empty array as an empty label
 * object (Lua's empty table). Bounds: names (policy, key, who, event, class, fix, ...) 1..256
 * bytes; texts, comments and notes up to 64 KiB; values, plans and details up to 64 KiB as
 * JSON; labels at most 128, string values. In answers, fields without a value are left out
 * (never null), so that Lua finds nil.
 *
 * Operations (arguments -> result; every id is an integer):
 *
 *   note            {incident, who, event, comment?, detail?(any JSON)} -> {id}
 *   state_get       {policy, key} -> {value?}              (absent or expired: no value)
 *   state_set       {policy, key, value?(any JSON), ttl_ms?} -> {}   (no value: delete)
 *   kb_learn        {incident, policy?, alertname?, class?, confidence?(0..1), labels?{...},
 *                    text, fix?, outcome?("success"|"failure"), resolved?(bool)}
 *                   -> {}   (upsert by incident; fields given replace those stored, so text
 *                            is needed only the first time; resolved stamps resolved_at (the
 *                            incident's, else now) and ttr_ms from the incident's opened_at)
 *   kb_similar      {text, labels?{...}, exclude?(incident id), limit?(5, at most 100)}
 *                   -> {similar = [{incident, score, bm25, label_overlap, class, alertname,
 *                                   fix, outcome, ttr_ms, title}]}   best first
 *                   (the query is the first 64 distinct words of the labels and the text,
 *                   each quoted, never FTS5 syntax; bm25 is the text relevance -bm25(),
 *                   higher better; label_overlap the Jaccard index of the name=value pairs;
 *                   score = 0.6 * bm25/(bm25+1) + 0.4 * label_overlap with labels, the text
 *                   part alone without: see memory.c)
 *   fix_add         {key, name, plan(any JSON), who} -> {id}   (an existing key+name keeps
 *                                                               its counts, plan replaced)
 *   fixes           {key, limit?(5)} -> {fixes = [{id, key, name, plan, uses, successes,
 *                    failures, success_rate, last_used_at}]}  best success rate first
 *                   (Laplace-smoothed: (s + 1) / (uses + 2), so one success is not 100%;
 *                   an empty key, an alert without a name, lists none)
 *   fix_outcome     {id, ok(bool)} -> {uses, successes, failures}
 *   escalate        {incident, policy, level(0..1000), name?, due_at}
 *                   -> {id, created(bool), state, due_at}
 *                   (one timer per incident+policy+level: scheduling again adds none and
 *                   changes nothing, except that an earlier due_at brings a pending timer
 *                   forward; a timer cancelled because its incident left 'open' is armed
 *                   again (created) once the incident is open again; one scheduled for an
 *                   incident not open is recorded as state "cancelled")
 *   escalations_due {now, limit?(100, at most 1000)} -> {due = [{id, incident, policy, level,
 *                    name, due_at, late_ms}]}   pending timers whose time has come, marked
 *                   "due" in the same transaction, plus timers left "due" by a run that
 *                   stopped before they fired (the executor's idempotency key makes the
 *                   second try safe): a "due" timer is handed out again only 60 s (by `now`)
 *                   after it last was, not on every poll while it is being fired; timers of
 *                   incidents no longer open are cancelled instead (with a timeline entry)
 *   escalation_done {id, state("fired"|"failed"), action?(id), note?} -> {}   (a timer handed
 *                    out as due; also one cancelled since, so that what happened is kept)
 *   escalations     {incident} -> {escalations = [...]}   every timer of the incident
 *   report          {incident} -> the incident report: {incident{id, title, group_key,
 *                    severity, status, opened_at, updated_at, resolved_at, closed_at,
 *                    acked_by, acked_at}, alerts, timeline (with detail), actions,
 *                    healings, escalations, kb{...} (absent when not learnt), similar (from
 *                    the kb text, else the alerts' names and labels), duration_ms}
 */
#pragma once

#include <stddef.h>

#include "engine/store.h"

/* On the loop: status 0 with the result object as JSON text, or < 0 with a message in err
 * ("<op>: ...") and json NULL (-EINVAL bad arguments or a refused transition, -ENOENT no such
 * incident/fix/escalation, -EIO store, -ENOMEM). */
typedef void (*vg_memory_done_fn)(
    void *ud, int status, const char *err, const char *json, size_t len);

/* Starts operation `op` with `args` (a JSON object as text). Returns 0 (then `done` runs
 * exactly once, never from inside this call) or a negative errno for a request it refuses
 * before starting (unknown op, malformed JSON, store closing). */
int vg_memory_call(
    vg_store_t *s, const char *op, const char *args, vg_memory_done_fn done, void *ud);

/* True when `op` only reads (it runs on the thread pool, not the writer). */
int vg_memory_is_read(const char *op);
