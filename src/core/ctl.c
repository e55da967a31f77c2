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
#include "engine/curlload.h"

static const vg_curl_t *C; /* libcurl, loaded when a command runs */

typedef struct {
  const char *url;
  const char *config;
  const char *status, *severity, *who, *comment;
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

static const char *const COMMANDS[] = { "alerts",  "incidents", "incident", "ack",
                                        "resolve", "close",     NULL };

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
          strcmp(cmd, "alerts") == 0      ? ""
          : strcmp(cmd, "incidents") == 0 ? ""
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
  } else if (strcmp(cmd, "incident") != 0) {
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
    { "url", required_argument, NULL, 'u' },     { "config", required_argument, NULL, 'c' },
    { "status", required_argument, NULL, 's' },  { "severity", required_argument, NULL, 'S' },
    { "filter", required_argument, NULL, 'f' },  { "limit", required_argument, NULL, 'l' },
    { "offset", required_argument, NULL, 'o' },  { "who", required_argument, NULL, 'w' },
    { "comment", required_argument, NULL, 'm' }, { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
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
  bool needs_id = strcmp(cmd, "alerts") != 0 && strcmp(cmd, "incidents") != 0;
  char *end = NULL;
  long long id = needs_id && optind < argc ? strtoll(argv[optind], &end, 10) : 0;
  if (needs_id && (optind + 1 != argc || end == argv[optind] || *end != '\0' || id <= 0)) {
    fprintf(stderr, "vigil %s: give one incident id (a positive number)\n", cmd);
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
      int shown = strcmp(cmd, "alerts") == 0      ? show_alerts(doc)
                  : strcmp(cmd, "incidents") == 0 ? show_incidents(doc)
                                                  : show_incident(doc);
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
