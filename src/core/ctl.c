/* Operator commands over the daemon's HTTP API (see ctl.h). Blocking libcurl calls: this runs
 * in the `vigil` command, never in the daemon. */
#include "core/ctl.h"

#include <getopt.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/report_md.h"
#include "engine/curlload.h"

static const vg_curl_t *C; /* libcurl, loaded when a command runs */

typedef struct {
  const char *url;
  const char *config;
  const char *status, *severity, *who, *comment, *policy, *outcome;
  const char *filters[16];
  int nfilters;
  long limit, offset;
  bool json;
} ctl_opts_t;

typedef struct {
  char *buf;
  size_t len;
} body_t;

static size_t on_data(char *p, size_t size, size_t n, void *ud)
{
  body_t *b = ud;
  size_t add = size * n;
  char *nb = realloc(b->buf, b->len + add + 1);
  if (nb == NULL) {
    return 0;
  }
  memcpy(nb + b->len, p, add);
  b->len += add;
  nb[b->len] = '\0';
  b->buf = nb;
  return add;
}

/* Sends the request; returns the HTTP status (0 when the daemon could not be reached) and the
 * body in *out (malloc'd). */
static long http(
    const char *method, const char *url, const char *token, const char *payload, char **out)
{
  CURL *c = C->easy_init();
  body_t b = { 0 };
  long status = 0;
  if (c == NULL) {
    return 0;
  }
  struct curl_slist *h = NULL;
  char auth[1200];
  if (token != NULL) {
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
    h = C->slist_append(h, auth);
  }
  if (payload != NULL) {
    h = C->slist_append(h, "Content-Type: application/json");
    C->easy_setopt(c, CURLOPT_POSTFIELDS, payload);
  }
  C->easy_setopt(c, CURLOPT_URL, url);
  C->easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
  C->easy_setopt(c, CURLOPT_HTTPHEADER, h);
  C->easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  C->easy_setopt(c, CURLOPT_WRITEDATA, &b);
  C->easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  C->easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = C->easy_perform(c);
  if (rc == CURLE_OK) {
    C->easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  } else {
    fprintf(stderr, "vigil: cannot reach the daemon at %s: %s\n", url, C->easy_strerror(rc));
  }
  C->slist_free_all(h);
  C->easy_cleanup(c);
  if (token != NULL) {
    memset(auth, 0, sizeof(auth));
  }
  *out = b.buf != NULL ? b.buf : strdup("");
  return status;
}

static void append_param(char *url, size_t cap, const char *name, const char *value)
{
  CURL *c = C->easy_init();
  char *esc = c != NULL ? C->easy_escape(c, value, 0) : NULL;
  size_t len = strlen(url);
  snprintf(url + len, cap - len, "%c%s=%s", strchr(url, '?') ? '&' : '?', name,
           esc != NULL ? esc : "");
  C->free(esc);
  C->easy_cleanup(c);
}

/* ---- tables ---- */

static const char *str(json_t *o, const char *k)
{
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : "-";
}

static void print_labels(json_t *labels, size_t width)
{
  char line[4096] = "";
  size_t len = 0;
  const char *k;
  json_t *v;
  json_object_foreach(labels, k, v)
  {
    if (strcmp(k, "alertname") == 0 || strcmp(k, "severity") == 0) {
      continue;
    }
    len += (size_t)snprintf(line + len, len < sizeof(line) ? sizeof(line) - len : 0, "%s%s=%s",
                            len ? "," : "", k, json_is_string(v) ? json_string_value(v) : "?");
    if (len >= sizeof(line)) {
      break;
    }
  }
  if (strlen(line) > width) {
    line[width - 3] = '\0';
    strcat(line, "...");
  }
  printf("%s\n", line);
}

static int show_alerts(json_t *doc)
{
  if (!json_is_array(doc)) {
    return -1;
  }
  printf("%-16s  %-8s  %-8s  %-24s  %-24s  %s\n", "FINGERPRINT", "STATUS", "SEVERITY", "NAME",
         "STARTED", "LABELS");
  size_t i;
  json_t *a;
  json_array_foreach(doc, i, a)
  {
    printf("%-16s  %-8s  %-8s  %-24.24s  %-24.24s  ", str(a, "fingerprint"), str(a, "status"),
           str(a, "severity"), str(a, "name"), str(a, "startsAt"));
    print_labels(json_object_get(a, "labels"), 60);
  }
  return 0;
}

static void incident_row(json_t *in)
{
  json_int_t id = json_integer_value(json_object_get(in, "id"));
  printf("%-6lld  %-13s  %-8s  %6lld  %6lld  %-24.24s  %s\n", (long long)id, str(in, "status"),
         str(in, "severity"), (long long)json_integer_value(json_object_get(in, "alerts")),
         (long long)json_integer_value(json_object_get(in, "firing")), str(in, "openedAt"),
         str(in, "title"));
}

static void incident_head(void)
{
  printf("%-6s  %-13s  %-8s  %6s  %6s  %-24s  %s\n", "ID", "STATUS", "SEVERITY", "ALERTS", "FIRING",
         "OPENED", "TITLE");
}

static int show_incidents(json_t *doc)
{
  json_t *list = json_object_get(doc, "incidents");
  if (!json_is_array(list)) {
    return -1;
  }
  incident_head();
  size_t i;
  json_t *in;
  json_array_foreach(list, i, in)
  {
    incident_row(in);
  }
  json_t *total = json_object_get(doc, "total");
  if (json_is_integer(total) && (size_t)json_integer_value(total) > json_array_size(list)) {
    printf("(%zu of %lld; --limit and --offset page through)\n", json_array_size(list),
           (long long)json_integer_value(total));
  }
  return 0;
}

static int show_incident(json_t *doc)
{
  if (!json_is_object(doc)) {
    return -1;
  }
  incident_head();
  incident_row(doc);
  json_t *alerts = json_object_get(doc, "alerts");
  if (json_is_array(alerts) && json_array_size(alerts) > 0) {
    printf("\nalerts:\n");
    show_alerts(alerts);
  }
  json_t *tl = json_object_get(doc, "timeline");
  if (json_is_array(tl)) {
    printf("\ntimeline:\n");
    size_t i;
    json_t *e;
    json_array_foreach(tl, i, e)
    {
      json_t *c = json_object_get(e, "comment");
      printf("  %-24.24s  %-10.10s  %-12s  %s -> %s%s%s\n", str(e, "at"), str(e, "who"),
             str(e, "event"), str(e, "from"), str(e, "to"), json_is_string(c) ? "  " : "",
             json_is_string(c) ? json_string_value(c) : "");
    }
  }
  return 0;
}

/* ---- the commands ---- */

static const char *const COMMANDS[] = { "alerts",  "incidents", "incident",  "ack",
                                        "resolve", "close",     "actions",   "action",
                                        "approve", "deny",      "reconcile", "kill-switch",
                                        "report",  NULL };

static bool is(const char *cmd, const char *name)
{
  return strcmp(cmd, name) == 0;
}

static void action_head(void)
{
  printf("%-6s  %-17s  %-7s  %-10s  %-20s  %-32s  %s\n", "ID", "STATE", "MODE", "TYPE", "POLICY",
         "TARGET", "ERROR");
}

static void action_row(json_t *a)
{
  printf("%-6lld  %-17s  %-7s  %-10.10s  %-20.20s  %-32.32s  %s\n",
         (long long)json_integer_value(json_object_get(a, "id")), str(a, "state"), str(a, "mode"),
         str(a, "type"), str(a, "policy"), str(a, "target"),
         json_is_string(json_object_get(a, "error")) ? str(a, "error") : "");
}

static int show_actions(json_t *doc)
{
  json_t *list = json_object_get(doc, "actions");
  if (!json_is_array(list)) {
    return -1;
  }
  action_head();
  size_t i;
  json_t *a;
  json_array_foreach(list, i, a)
  {
    action_row(a);
  }
  return 0;
}

static int show_action(json_t *doc)
{
  if (!json_is_object(doc) || json_object_get(doc, "audit") == NULL) {
    return -1;
  }
  action_head();
  action_row(doc);
  char *command = json_dumps(json_object_get(doc, "command"), JSON_COMPACT);
  printf("\nkey:      %s\nwhy:      %s\ncommand:  %s\n", str(doc, "key"), str(doc, "why"),
         command != NULL ? command : "-");
  free(command);
  if (json_is_string(json_object_get(doc, "output"))) {
    printf("output:   %s\n", str(doc, "output"));
  }
  printf("\naudit:\n");
  size_t i;
  json_t *e;
  json_array_foreach(json_object_get(doc, "audit"), i, e)
  {
    printf("  %-24.24s  %-18.18s  %-18s  %s\n", str(e, "at"), str(e, "who"), str(e, "event"),
           json_is_string(json_object_get(e, "detail")) ? str(e, "detail") : "");
  }
  return 0;
}

int vg_ctl_is_command(const char *name)
{
  for (int i = 0; COMMANDS[i] != NULL; i++) {
    if (strcmp(name, COMMANDS[i]) == 0) {
      return 1;
    }
  }
  return 0;
}

static void help(FILE *out, const char *cmd)
{
  fprintf(out,
          "usage: vigil %s%s [options]\n"
          "\n"
          "Talks to a running daemon's HTTP API (docs/intake.md).\n"
          "  --url URL          the daemon (default: $VIGIL_URL, else the config's listen,\n"
          "                     else http://127.0.0.1:9095)\n"
          "  -c, --config FILE  read listen and token from this config\n"
          "  --json             print the JSON answer as it came\n",
          cmd,
          is(cmd, "alerts") || is(cmd, "incidents") || is(cmd, "actions") ? ""
          : is(cmd, "kill-switch")                                        ? " [on|off]"
                                                                          : " ID");
  if (strcmp(cmd, "alerts") == 0) {
    fputs(
        "  --status S         firing or resolved\n"
        "  --filter M         a matcher, e.g. 'alertname=\"HighCPU\"' (repeatable)\n"
        "  --limit N          at most N alerts (default 1000)\n",
        out);
  } else if (strcmp(cmd, "incidents") == 0) {
    fputs(
        "  --status S         open, investigating, identified, monitoring, resolved,\n"
        "                     closed, or active (any not resolved or closed)\n"
        "  --severity S       critical, high, medium, low, info\n"
        "  --limit N, --offset N\n",
        out);
  } else if (is(cmd, "actions")) {
    fputs(
        "  --state S          observed, dry-run, refused, awaiting_approval, approved, denied,\n"
        "                     expired, claimed, done, failed, unknown\n"
        "  --policy NAME      one policy's actions\n"
        "  --limit N          at most N (default 100)\n",
        out);
  } else if (is(cmd, "reconcile")) {
    fputs(
        "  --outcome O        done or failed: what the target shows really happened\n"
        "  --who NAME, --comment TEXT   recorded in the audit log\n",
        out);
  } else if (is(cmd, "approve") || is(cmd, "deny") || is(cmd, "kill-switch")) {
    fputs("  --who NAME, --comment TEXT   recorded in the audit log\n", out);
  } else if (is(cmd, "report")) {
    fputs("Prints the incident report as Markdown (--json: as the API answers it).\n", out);
  } else if (strcmp(cmd, "incident") != 0 && strcmp(cmd, "action") != 0) {
    fputs(
        "  --who NAME         who does it (default: $USER)\n"
        "  --comment TEXT     recorded on the incident's timeline\n",
        out);
  }
  fputs("The token comes from $VIGIL_TOKEN or the config's token.\n", out);
}

int vg_ctl_main(int argc, char **argv)
{
  const char *cmd = argv[0];
  ctl_opts_t o = { .limit = -1, .offset = -1 };
  static const struct option longopts[] = {
    { "url", required_argument, NULL, 'u' },
    { "config", required_argument, NULL, 'c' },
    { "status", required_argument, NULL, 's' },
    { "severity", required_argument, NULL, 'S' },
    { "filter", required_argument, NULL, 'f' },
    { "limit", required_argument, NULL, 'l' },
    { "offset", required_argument, NULL, 'o' },
    { "who", required_argument, NULL, 'w' },
    { "comment", required_argument, NULL, 'm' },
    { "json", no_argument, NULL, 'j' },
    { "state", required_argument, NULL, 's' },
    { "policy", required_argument, NULL, 'p' },
    { "outcome", required_argument, NULL, 'O' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  optind = 1;
  int ch;
  while ((ch = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'u':
        o.url = optarg;
        break;
      case 'c':
        o.config = optarg;
        break;
      case 's':
        o.status = optarg;
        break;
      case 'S':
        o.severity = optarg;
        break;
      case 'f':
        if (o.nfilters == 16) {
          fputs("vigil: at most 16 --filter\n", stderr);
          return 2;
        }
        o.filters[o.nfilters++] = optarg;
        break;
      case 'l':
        o.limit = strtol(optarg, NULL, 10);
        break;
      case 'o':
        o.offset = strtol(optarg, NULL, 10);
        break;
      case 'w':
        o.who = optarg;
        break;
      case 'm':
        o.comment = optarg;
        break;
      case 'p':
        o.policy = optarg;
        break;
      case 'O':
        o.outcome = optarg;
        break;
      case 'j':
        o.json = true;
        break;
      case 'h':
        help(stdout, cmd);
        return 0;
      default:
        help(stderr, cmd);
        return 2;
    }
  }
  const char *switch_to = NULL; /* kill-switch on|off */
  if (is(cmd, "kill-switch") && optind < argc) {
    switch_to = argv[optind++];
    if (!is(switch_to, "on") && !is(switch_to, "off")) {
      fprintf(stderr, "vigil kill-switch: say on or off (or nothing, to read it)\n");
      return 2;
    }
  }
  if (is(cmd, "reconcile") &&
      (o.outcome == NULL || (!is(o.outcome, "done") && !is(o.outcome, "failed")))) {
    fprintf(stderr, "vigil reconcile: --outcome done|failed is required\n");
    return 2;
  }
  bool needs_id =
      !is(cmd, "alerts") && !is(cmd, "incidents") && !is(cmd, "actions") && !is(cmd, "kill-switch");
  char *end = NULL;
  long long id = needs_id && optind < argc ? strtoll(argv[optind], &end, 10) : 0;
  if (needs_id && (optind + 1 != argc || end == argv[optind] || *end != '\0' || id <= 0)) {
    fprintf(stderr, "vigil %s: give one %s id (a positive number)\n", cmd,
            is(cmd, "action") || is(cmd, "approve") || is(cmd, "deny") || is(cmd, "reconcile")
                ? "action"
                : "incident");
    return 2;
  }
  if (!needs_id && optind != argc) {
    fprintf(stderr, "vigil %s: unexpected argument '%s'\n", cmd, argv[optind]);
    return 2;
  }

  char why[256];
  if ((C = vg_curl(why, sizeof(why))) == NULL) {
    fprintf(stderr, "vigil: %s\n", why);
    return 1;
  }
  vg_config_t cfg;
  vg_config_defaults(&cfg);
  if (o.config != NULL) {
    char err[1024];
    if (vg_config_load(&cfg, o.config, err, sizeof(err)) != 0) {
      fprintf(stderr, "%s\n", err);
      vg_config_free(&cfg);
      return 2;
    }
  }
  char base[512];
  const char *env_url = getenv("VIGIL_URL");
  if (o.url != NULL || env_url != NULL) {
    snprintf(base, sizeof(base), "%s", o.url != NULL ? o.url : env_url);
  } else {
    snprintf(base, sizeof(base), "http://%s", cfg.listen);
  }
  size_t blen = strlen(base);
  while (blen > 0 && base[blen - 1] == '/') {
    base[--blen] = '\0';
  }
  const char *token = getenv("VIGIL_TOKEN");
  if (token == NULL || *token == '\0') {
    token = cfg.token;
  }

  char url[8192];
  const char *method = "GET";
  char *payload = NULL;
  if (strcmp(cmd, "alerts") == 0) {
    snprintf(url, sizeof(url), "%s/api/v1/alerts", base);
    if (o.status != NULL) {
      append_param(url, sizeof(url), "status", o.status);
    }
    for (int i = 0; i < o.nfilters; i++) {
      append_param(url, sizeof(url), "filter", o.filters[i]);
    }
  } else if (strcmp(cmd, "incidents") == 0) {
    snprintf(url, sizeof(url), "%s/api/v1/incidents", base);
    if (o.status != NULL) {
      append_param(url, sizeof(url), "status", o.status);
    }
    if (o.severity != NULL) {
      append_param(url, sizeof(url), "severity", o.severity);
    }
  } else if (strcmp(cmd, "incident") == 0) {
    snprintf(url, sizeof(url), "%s/api/v1/incidents/%lld", base, id);
  } else if (is(cmd, "report")) {
    snprintf(url, sizeof(url), "%s/api/v1/incidents/%lld/report", base, id);
  } else if (is(cmd, "actions")) {
    snprintf(url, sizeof(url), "%s/api/v1/actions", base);
    if (o.status != NULL) {
      append_param(url, sizeof(url), "state", o.status);
    }
    if (o.policy != NULL) {
      append_param(url, sizeof(url), "policy", o.policy);
    }
  } else if (is(cmd, "action")) {
    snprintf(url, sizeof(url), "%s/api/v1/actions/%lld", base, id);
  } else if (is(cmd, "kill-switch") && switch_to == NULL) {
    snprintf(url, sizeof(url), "%s/api/v1/kill-switch", base);
  } else if (is(cmd, "kill-switch") || is(cmd, "approve") || is(cmd, "deny") ||
             is(cmd, "reconcile")) {
    if (is(cmd, "kill-switch")) {
      snprintf(url, sizeof(url), "%s/api/v1/kill-switch", base);
    } else {
      snprintf(url, sizeof(url), "%s/api/v1/actions/%lld/%s", base, id, cmd);
    }
    method = "POST";
    const char *who = o.who != NULL ? o.who : getenv("USER");
    json_t *body = json_object();
    json_object_set_new(body, "who", json_string(who != NULL && *who ? who : "vigil-cli"));
    if (o.comment != NULL) {
      json_object_set_new(body, "comment", json_string(o.comment));
    }
    if (switch_to != NULL) {
      json_object_set_new(body, "on", json_boolean(is(switch_to, "on")));
    }
    if (o.outcome != NULL) {
      json_object_set_new(body, "outcome", json_string(o.outcome));
    }
    payload = json_dumps(body, JSON_COMPACT);
    json_decref(body);
  } else {
    snprintf(url, sizeof(url), "%s/api/v1/incidents/%lld/%s", base, id, cmd);
    method = "POST";
    const char *who = o.who != NULL ? o.who : getenv("USER");
    json_t *body = json_object();
    json_object_set_new(body, "who", json_string(who != NULL && *who ? who : "vigil-cli"));
    if (o.comment != NULL) {
      json_object_set_new(body, "comment", json_string(o.comment));
    }
    payload = json_dumps(body, JSON_COMPACT);
    json_decref(body);
  }
  char num[32];
  if (o.limit >= 0) {
    snprintf(num, sizeof(num), "%ld", o.limit);
    append_param(url, sizeof(url), "limit", num);
  }
  if (o.offset >= 0) {
    snprintf(num, sizeof(num), "%ld", o.offset);
    append_param(url, sizeof(url), "offset", num);
  }

  char *answer = NULL;
  long status = http(method, url, token, payload, &answer);
  free(payload);
  int rc = 0;
  if (status == 0) {
    rc = 1;
  } else {
    json_error_t je;
    json_t *doc = json_loads(answer, 0, &je);
    if (status < 200 || status > 299) {
      json_t *e = json_object_get(doc, "error");
      fprintf(stderr, "vigil %s: %ld: %s\n", cmd, status,
              json_is_string(e) ? json_string_value(e) : answer);
      rc = 1;
    } else if (o.json || doc == NULL) {
      printf("%s%s", answer, answer[0] && answer[strlen(answer) - 1] == '\n' ? "" : "\n");
    } else {
      json_t *msg = json_object_get(doc, "message");
      json_t *on = json_object_get(doc, "on");
      int shown = 0;
      if (is(cmd, "alerts")) {
        shown = show_alerts(doc);
      } else if (is(cmd, "incidents")) {
        shown = show_incidents(doc);
      } else if (is(cmd, "actions")) {
        shown = show_actions(doc);
      } else if (is(cmd, "action")) {
        shown = show_action(doc);
      } else if (is(cmd, "report")) {
        shown = vg_report_markdown(doc, stdout);
      } else if (json_is_string(msg)) {
        printf("%s\n", json_string_value(msg));
      } else if (json_is_boolean(on)) {
        printf("kill switch %s\n", json_is_true(on) ? "on" : "off");
      } else {
        shown = show_incident(doc);
      }
      if (shown != 0) {
        printf("%s\n", answer); /* an answer of a shape this vigil does not know */
      }
    }
    json_decref(doc);
  }
  free(answer);
  vg_config_free(&cfg);
  return rc;
}
