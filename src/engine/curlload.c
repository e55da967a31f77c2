/* See curlload.h. */
#include "engine/curlload.h"

#include <dlfcn.h>
#include <stdio.h>

static vg_curl_t api;
static int state; /* 0: not tried, 1: loaded, -1: failed */
static char failure[256];

#define SYM(field, name)                                                  \
  do {                                                                    \
    *(void **)&api.field = dlsym(lib, name);                              \
    if (api.field == NULL) {                                              \
      snprintf(failure, sizeof(failure), "libcurl.so.4 has no %s", name); \
      return -1;                                                          \
    }                                                                     \
  } while (0)

static int load(void)
{
  void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    snprintf(failure, sizeof(failure), "cannot load libcurl: %s", dlerror());
    return -1;
  }
  SYM(global_init, "curl_global_init");
  SYM(global_cleanup, "curl_global_cleanup");
  SYM(multi_init, "curl_multi_init");
  SYM(multi_setopt, "curl_multi_setopt");
  SYM(multi_socket_action, "curl_multi_socket_action");
  SYM(multi_info_read, "curl_multi_info_read");
  SYM(multi_assign, "curl_multi_assign");
  SYM(multi_add_handle, "curl_multi_add_handle");
  SYM(multi_remove_handle, "curl_multi_remove_handle");
  SYM(multi_cleanup, "curl_multi_cleanup");
  SYM(easy_init, "curl_easy_init");
  SYM(easy_setopt, "curl_easy_setopt");
  SYM(easy_getinfo, "curl_easy_getinfo");
  SYM(easy_perform, "curl_easy_perform");
  SYM(easy_cleanup, "curl_easy_cleanup");
  SYM(easy_strerror, "curl_easy_strerror");
  SYM(easy_escape, "curl_easy_escape");
  SYM(free, "curl_free");
  SYM(slist_append, "curl_slist_append");
  SYM(slist_free_all, "curl_slist_free_all");
  if (api.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(failure, sizeof(failure), "curl_global_init failed");
    return -1;
  }
  return 0; /* the library stays loaded for the life of the process */
}

const vg_curl_t *vg_curl(char *err, size_t errlen)
{
  if (state == 0) {
    state = load() == 0 ? 1 : -1;
  }
  if (state < 0) {
    snprintf(err, errlen, "%s", failure);
    return NULL;
  }
  return &api;
}
