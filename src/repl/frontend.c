/* The REPL front end (frontend.h). On a terminal, libedit runs in callback mode: a uv_poll on
 * stdin feeds it one key at a time, so timers and tasks keep running while the user types,
 * and the prompt is removed while a chunk runs and reinstalled when it ends. Otherwise stdin
 * is read whole and run chunk by chunk, in order, stopping at the first error. */
#include "repl/frontend.h"

#include <editline/readline.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "core/vm.h"

#define PROMPT "vigil> "
#define PROMPT_CONT "    >> "
#define HISTORY_MAX 1000

typedef struct {
  char *buf;
  size_t len, cap;
} text_t;

struct vg_repl_fe {
  vg_runtime_t *rt;
  vg_repl_backend_t be;
  vg_vm_t *checker; /* compiles what was typed so far, to tell an unfinished chunk */
  bool interactive;
  bool finished;
  int status;
  volatile sig_atomic_t busy;      /* a chunk runs (read by the SIGINT handler) */
  volatile sig_atomic_t hit_chunk; /* the last Ctrl-C was for a running chunk */
  text_t pending;                  /* the lines of the chunk being entered */

  /* script mode */
  char *input;
  size_t input_len, pos;
  size_t line_no; /* lines read so far */

  /* terminal mode */
  bool at_prompt;
  bool term_on;
  uv_poll_t poll;
  uv_async_t async;
  uv_signal_t winch;
  int open_handles;
  bool freeing;
  struct sigaction old_sigint;
  char *history;
};

/* libedit's callbacks and the SIGINT handler carry no user data: one front end at a time. */
static vg_repl_fe_t *current_fe;

static void show_prompt(vg_repl_fe_t *fe);

static int text_append(text_t *t, const char *s, size_t n)
{
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 256;
    while (cap < t->len + n + 1) {
      cap *= 2;
    }
    char *nb = realloc(t->buf, cap);
    if (nb == NULL) {
      return -1;
    }
    t->buf = nb;
    t->cap = cap;
  }
  memcpy(t->buf + t->len, s, n);
  t->len += n;
  t->buf[t->len] = '\0';
  return 0;
}

static bool is_blank(const char *s, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
      return false;
    }
  }
  return true;
}

/* True when src only lacks its end: it compiles neither as an expression nor as statements,
 * and the statements' error is at <eof> (an open block, call, table or long string). */
static bool incomplete(vg_repl_fe_t *fe, const char *src, size_t len)
{
  lua_State *L = fe->checker->L;
  static const char ret[] = "return ";
  size_t rlen = sizeof(ret) - 1;
  char *buf = malloc(rlen + len);
  if (buf != NULL) {
    memcpy(buf, ret, rlen);
    memcpy(buf + rlen, src, len);
    int status = vg_vm_load_text(L, buf, rlen + len, "=stdin");
    free(buf);
    lua_pop(L, 1);
    if (status == LUA_OK) {
      return false;
    }
  }
  bool more = false;
  if (vg_vm_load_text(L, src, len, "=stdin") != LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
    size_t mlen;
    const char *msg = lua_tolstring(L, -1, &mlen);
    static const char eof[] = "<eof>";
    more = mlen >= sizeof(eof) - 1 && strcmp(msg + mlen - (sizeof(eof) - 1), eof) == 0;
  }
  lua_pop(L, 1);
  return more;
}

/* Ends the run: vg_repl_fe_run returns once the loop notices. */
static void finish(vg_repl_fe_t *fe)
{
  if (fe->finished) {
    return;
  }
  fe->finished = true;
  if (fe->at_prompt) {
    rl_callback_handler_remove();
    fe->at_prompt = false;
  }
  if (fe->term_on) {
    uv_poll_stop(&fe->poll);
  }
  fflush(stdout);
  uv_stop(fe->rt->loop);
}

/* Hands the pending chunk to the backend. */
static void run_chunk(vg_repl_fe_t *fe, bool show_results)
{
  fe->busy = 1;
  int rc = fe->be.eval(fe->be.ud, fe->pending.buf, fe->pending.len, show_results);
  fe->pending.len = 0;
  if (rc != 0) {
    fe->busy = 0;
    fputs("vigil repl: cannot run the chunk\n", stderr);
    if (!fe->interactive) {
      fe->status = 1;
      finish(fe);
    } else {
      show_prompt(fe);
    }
  }
}

/* ---- output (the prompt is redrawn under text that arrives while it is shown) ---- */

static void write_out(vg_repl_fe_t *fe, FILE *f, const char *text, size_t len, bool newline)
{
  if (fe->at_prompt) {
    fputs("\r\033[K", stdout);
    fflush(stdout);
  }
  fwrite(text, 1, len, f);
  if (newline && (len == 0 || text[len - 1] != '\n')) {
    fputc('\n', f);
  }
  fflush(f);
  if (fe->at_prompt) {
    rl_forced_update_display();
  }
}

void vg_repl_fe_output(vg_repl_fe_t *fe, const char *text, size_t len)
{
  write_out(fe, stdout, text, len, false);
}

void vg_repl_fe_result(vg_repl_fe_t *fe, const char *text, size_t len)
{
  write_out(fe, stdout, text, len, true);
}

void vg_repl_fe_error(vg_repl_fe_t *fe, const char *text, size_t len)
{
  fflush(stdout);
  write_out(fe, stderr, text, len, true);
}

static void log_sink(const char *line, void *ud)
{
  write_out(ud, stderr, line, strlen(line), true);
}

/* ---- script mode ---- */

static void script_next(vg_repl_fe_t *fe)
{
  while (fe->pos < fe->input_len) {
    const char *start = fe->input + fe->pos;
    const char *nl = memchr(start, '\n', fe->input_len - fe->pos);
    size_t n = nl != NULL ? (size_t)(nl - start) + 1 : fe->input_len - fe->pos;
    fe->pos += n;
    fe->line_no++; /* the number of the line just read */
    /* A chunk starts with as many empty lines as precede it in the script, so that errors
     * name the script's own line numbers. */
    int rc = 0;
    if (fe->pending.len == 0) {
      for (size_t i = 1; i < fe->line_no && rc == 0; i++) {
        rc = text_append(&fe->pending, "\n", 1);
      }
    }
    if (rc != 0 || text_append(&fe->pending, start, n) != 0) {
      fputs("vigil repl: out of memory\n", stderr);
      fe->status = 1;
      finish(fe);
      return;
    }
    if (is_blank(fe->pending.buf, fe->pending.len)) {
      fe->pending.len = 0;
      continue;
    }
    if (fe->pos < fe->input_len && incomplete(fe, fe->pending.buf, fe->pending.len)) {
      continue;
    }
    run_chunk(fe, false);
    return;
  }
  if (fe->pending.len > 0 && !is_blank(fe->pending.buf, fe->pending.len)) {
    run_chunk(fe, false); /* an unfinished last chunk: its syntax error ends the script */
    return;
  }
  finish(fe);
}

static int script_start(vg_repl_fe_t *fe)
{
  text_t in = { 0 };
  char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
    if (text_append(&in, chunk, n) != 0) {
      free(in.buf);
      fputs("vigil repl: out of memory reading stdin\n", stderr);
      return -1;
    }
  }
  if (ferror(stdin)) {
    fprintf(stderr, "vigil repl: cannot read stdin: %s\n", strerror(errno));
    free(in.buf);
    return -1;
  }
  fe->input = in.buf;
  fe->input_len = in.len;
  if (fe->input_len > 1 && fe->input[0] == '#' && fe->input[1] == '!') {
    const char *nl = memchr(fe->input, '\n', fe->input_len); /* skip a #! line */
    fe->pos = nl != NULL ? (size_t)(nl - fe->input) + 1 : fe->input_len;
    fe->line_no = 1;
  }
  script_next(fe);
  return 0;
}

/* ---- terminal mode ---- */

static void on_line(char *line)
{
  vg_repl_fe_t *fe = current_fe;
  if (fe == NULL || fe->finished) {
    free(line);
    return;
  }
  if (line == NULL) { /* Ctrl-D */
    rl_callback_handler_remove();
    fe->at_prompt = false;
    fputc('\n', stdout);
    finish(fe);
    return;
  }
  size_t n = strlen(line);
  if (!is_blank(line, n)) {
    add_history(line);
  }
  int rc = text_append(&fe->pending, line, n);
  free(line);
  if (rc != 0 || text_append(&fe->pending, "\n", 1) != 0) {
    fputs("vigil repl: out of memory\n", stderr);
    fe->pending.len = 0;
    show_prompt(fe);
    return;
  }
  if (is_blank(fe->pending.buf, fe->pending.len)) {
    fe->pending.len = 0;
    show_prompt(fe);
    return;
  }
  if (incomplete(fe, fe->pending.buf, fe->pending.len)) {
    show_prompt(fe); /* the continuation prompt */
    return;
  }
  rl_callback_handler_remove();
  fe->at_prompt = false;
  uv_poll_stop(&fe->poll);
  run_chunk(fe, true);
}

static void on_stdin(uv_poll_t *h, int status, int events)
{
  (void)events;
  vg_repl_fe_t *fe = h->data;
  if (status < 0) {
    finish(fe);
    return;
  }
  rl_callback_read_char();
}

/* Installs the prompt afresh (an empty line) and listens to the keyboard again. Reinstalling
 * is also what makes libedit draw the prompt at once rather than on the next key. */
static void show_prompt(vg_repl_fe_t *fe)
{
  fflush(stdout);
  fflush(stderr);
  rl_callback_handler_remove();
  rl_callback_handler_install(fe->pending.len > 0 ? PROMPT_CONT : PROMPT, on_line);
  fe->at_prompt = true;
  uv_poll_start(&fe->poll, UV_READABLE, on_stdin);
}

static void on_sigint(int signo)
{
  (void)signo;
  int saved = errno;
  vg_repl_fe_t *fe = current_fe;
  if (fe != NULL) {
    fe->hit_chunk = fe->busy;
    if (fe->busy && fe->be.interrupt_signal != NULL) {
      fe->be.interrupt_signal(fe->be.ud);
    }
    uv_async_send(&fe->async);
  }
  errno = saved;
}

/* Ctrl-C, on the loop: interrupts the running chunk, or abandons the line being typed. */
static void on_async(uv_async_t *h)
{
  vg_repl_fe_t *fe = h->data;
  if (fe->finished) {
    return;
  }
  if (fe->busy) {
    fe->be.interrupt(fe->be.ud);
  } else if (fe->at_prompt && !fe->hit_chunk) {
    /* (a Ctrl-C that stopped a chunk has already brought the prompt back) */
    fe->pending.len = 0;
    fputc('\n', stdout);
    show_prompt(fe);
  }
}

static void on_winch(uv_signal_t *h, int signo)
{
  (void)signo;
  vg_repl_fe_t *fe = h->data;
  if (fe->at_prompt) {
    rl_resize_terminal();
  }
}

/* rl_completion_entry_function: never falls back to file names. */
static char *no_entry(const char *text, int state)
{
  (void)text;
  (void)state;
  return NULL;
}

/* rl_attempted_completion_function: the backend's candidates, in readline's shape (the
 * common prefix first, then the candidates; a single candidate alone). */
static char **complete_cb(const char *text, int start, int end)
{
  (void)start;
  (void)end;
  rl_attempted_completion_over = 1;
  vg_repl_fe_t *fe = current_fe;
  if (fe == NULL || fe->be.complete == NULL) {
    return NULL;
  }
  size_t n = 0;
  char **words = fe->be.complete(fe->be.ud, text, &n);
  if (words == NULL || n == 0) {
    free(words);
    return NULL;
  }
  char **m = malloc((n + 2) * sizeof(*m));
  if (m == NULL) {
    for (size_t i = 0; i < n; i++) {
      free(words[i]);
    }
    free(words);
    return NULL;
  }
  if (n == 1) {
    m[0] = words[0];
    m[1] = NULL;
    free(words);
    return m;
  }
  size_t common = strlen(words[0]);
  for (size_t i = 1; i < n; i++) {
    size_t j = 0;
    while (j < common && words[i][j] == words[0][j]) {
      j++;
    }
    common = j;
  }
  m[0] = strndup(words[0], common);
  for (size_t i = 0; i < n; i++) {
    m[i + 1] = words[i];
  }
  m[n + 1] = NULL;
  free(words);
  if (m[0] == NULL) {
    for (size_t i = 1; i <= n; i++) {
      free(m[i]);
    }
    free(m);
    return NULL;
  }
  return m;
}

static void load_history(vg_repl_fe_t *fe)
{
  using_history();
  stifle_history(HISTORY_MAX);
  const char *path = getenv("VIGIL_HISTORY");
  if (path == NULL) {
    const char *home = getenv("HOME");
    if (home == NULL || *home == '\0') {
      return;
    }
    size_t n = strlen(home) + sizeof("/.vigil_history");
    fe->history = malloc(n);
    if (fe->history != NULL) {
      snprintf(fe->history, n, "%s/.vigil_history", home);
    }
  } else if (*path != '\0') {
    fe->history = strdup(path);
  }
  if (fe->history != NULL) {
    read_history(fe->history);
  }
}

static void save_history(vg_repl_fe_t *fe)
{
  if (fe->history == NULL) {
    return;
  }
  mode_t old = umask(077); /* what was typed may include secrets */
  if (write_history(fe->history) == 0) {
    history_truncate_file(fe->history, HISTORY_MAX);
  }
  umask(old);
}

static void handle_closed(uv_handle_t *h)
{
  vg_repl_fe_t *fe = h->data;
  if (--fe->open_handles == 0 && fe->freeing) {
    free(fe);
  }
}

static int term_start(vg_repl_fe_t *fe, const char *banner)
{
  uv_loop_t *loop = fe->rt->loop;
  if (uv_poll_init(loop, &fe->poll, STDIN_FILENO) != 0) {
    return -1;
  }
  /* uv_poll_init made stdin non-blocking, and with it the terminal's other descriptors
   * (stdout shares its open file): libedit reads and we write it blocking. */
  int fl = fcntl(STDIN_FILENO, F_GETFL);
  if (fl >= 0) {
    fcntl(STDIN_FILENO, F_SETFL, fl & ~O_NONBLOCK);
  }
  fe->poll.data = fe;
  uv_async_init(loop, &fe->async, on_async);
  fe->async.data = fe;
  uv_signal_init(loop, &fe->winch);
  fe->winch.data = fe;
  uv_signal_start(&fe->winch, on_winch, SIGWINCH);
  fe->open_handles = 3;
  fe->term_on = true;

  rl_readline_name = "vigil";
  rl_instream = stdin;
  rl_outstream = stdout;
  rl_catch_signals = 0; /* SIGINT is ours: it interrupts chunks */
  rl_initialize();
  load_history(fe); /* after rl_initialize, which starts libedit's history afresh */
  rl_attempted_completion_function = complete_cb;
  rl_completion_entry_function = no_entry;
  rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{(+-*/%^~#,[])}";
  rl_completion_append_character = '\0';

  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, &fe->old_sigint);
  vg_log_set_sink(log_sink, fe);

  if (banner != NULL) {
    fputs(banner, stdout);
  }
  show_prompt(fe);
  return 0;
}

/* ---- lifecycle ---- */

vg_repl_fe_t *vg_repl_fe_new(vg_runtime_t *rt)
{
  vg_repl_fe_t *fe = calloc(1, sizeof(*fe));
  if (fe == NULL) {
    return NULL;
  }
  fe->rt = rt;
  fe->checker = vg_vm_new(rt, "repl-syntax", NULL);
  if (fe->checker == NULL) {
    free(fe);
    return NULL;
  }
  return fe;
}

int vg_repl_fe_run(vg_repl_fe_t *fe, const vg_repl_backend_t *be, const char *banner)
{
  fe->be = *be;
  current_fe = fe;
  fe->interactive = isatty(STDIN_FILENO) == 1;
  int rc = fe->interactive ? term_start(fe, banner) : script_start(fe);
  if (rc != 0) {
    return 1;
  }
  if (!fe->finished) {
    vg_runtime_run(fe->rt, -1);
  }
  if (!fe->finished) {
    /* the loop ran dry: the chunk waits for something nothing can bring */
    fputs("vigil repl: the chunk never finished: it waits for something that cannot happen\n",
          stderr);
    fe->status = 1;
    finish(fe);
  }
  return fe->status;
}

void vg_repl_fe_free(vg_repl_fe_t *fe)
{
  if (fe == NULL) {
    return;
  }
  if (current_fe == fe) {
    current_fe = NULL;
  }
  vg_vm_free(fe->checker);
  free(fe->pending.buf);
  free(fe->input);
  if (!fe->term_on) {
    free(fe);
    return;
  }
  vg_log_set_sink(NULL, NULL);
  sigaction(SIGINT, &fe->old_sigint, NULL);
  save_history(fe);
  free(fe->history);
  fe->freeing = true;
  uv_close((uv_handle_t *)&fe->poll, handle_closed);
  uv_close((uv_handle_t *)&fe->async, handle_closed);
  uv_close((uv_handle_t *)&fe->winch, handle_closed);
}

void vg_repl_fe_done(vg_repl_fe_t *fe, bool ok)
{
  fe->busy = 0;
  if (fe->finished) {
    return;
  }
  fflush(stdout);
  if (fe->interactive) {
    show_prompt(fe);
    return;
  }
  if (!ok) {
    fe->status = 1;
    finish(fe);
    return;
  }
  script_next(fe);
}

void vg_repl_fe_lost(vg_repl_fe_t *fe, const char *why)
{
  if (fe->finished) {
    return;
  }
  if (fe->at_prompt) {
    fputc('\n', stdout);
  }
  fe->busy = 0;
  fe->status = 1;
  finish(fe);
  fprintf(stderr, "vigil repl: %s\n", why);
}

bool vg_repl_fe_interactive(const vg_repl_fe_t *fe)
{
  return fe->interactive;
}
