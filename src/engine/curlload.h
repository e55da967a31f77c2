/* libcurl, loaded on first use. Linking it pulls in some forty libraries (TLS stacks, LDAP,
 * Kerberos) whose pages would cost an idle daemon about 6 MB resident for HTTP it may never
 * do; loading it with dlopen when the first request starts keeps that off until then. */
#pragma once

#include <curl/curl.h>

typedef struct {
  CURLcode (*global_init)(long flags);
  void (*global_cleanup)(void);
  CURLM *(*multi_init)(void);
  CURLMcode (*multi_setopt)(CURLM *m, CURLMoption option, ...);
  CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev_bitmask, int *running);
  CURLMsg *(*multi_info_read)(CURLM *m, int *msgs_in_queue);
  CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *sockp);
  CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
  CURLMcode (*multi_cleanup)(CURLM *m);
  CURL *(*easy_init)(void);
  CURLcode (*easy_setopt)(CURL *e, CURLoption option, ...);
  CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
  CURLcode (*easy_perform)(CURL *e);
  void (*easy_cleanup)(CURL *e);
  const char *(*easy_strerror)(CURLcode code);
  char *(*easy_escape)(CURL *e, const char *s, int len);
  void (*free)(void *p);
  struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
  void (*slist_free_all)(struct curl_slist *l);
} vg_curl_t;

/* The loaded library (and curl_global_init done), or NULL with the reason in err when
 * libcurl.so.4 cannot be loaded. Not thread-safe: call from the loop thread (or main). */
const vg_curl_t *vg_curl(char *err, size_t errlen);
