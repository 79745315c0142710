/*
 * pacer_plugin.h: the Pacer plugin ABI, version 1.
 *
 * A plugin is a shared library that exports pacer_plugin_entry_v1(). pacerd
 * never calls plugin code in its own process: each run (and each descriptor
 * read) happens in a child process, so a plugin that crashes, hangs or leaks
 * costs one run record, never the daemon.
 *
 * Build a plugin written in C with:
 *     gcc -shared -fPIC -O2 -Wall -o libpacer_plugin_hello.so hello.c -I plugin-api/include
 *
 * Later ABI versions add a new entry symbol (pacer_plugin_entry_v2, ...), so
 * one library can serve several hosts.
 */
#ifndef PACER_PLUGIN_H
#define PACER_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PACER_ABI_VERSION 1

enum { PACER_LOG_ERROR = 1, PACER_LOG_WARN = 2, PACER_LOG_INFO = 3, PACER_LOG_DEBUG = 4 };

typedef struct pacer_host pacer_host;          /* opaque: one run, owned by the host */

/*
 * Host callbacks. msg is len bytes of UTF-8 and need not be NUL-terminated. pacerd's
 * callbacks may be called from any thread of the plugin while validate or run executes,
 * and must not be called after it returns. is_cancelled returns non-zero once the run is
 * asked to stop (SIGTERM has been sent to the run's process group).
 */

typedef struct pacer_host_api {
    uint32_t abi_version;
    void    (*log)(pacer_host *h, int32_t level, const char *msg, size_t len);  /* one line */
    void    (*set_message)(pacer_host *h, const char *msg, size_t len);         /* last wins */
    int32_t (*is_cancelled)(pacer_host *h);   /* 1 once the run is asked to stop */
    int64_t (*deadline_ms)(pacer_host *h);    /* Unix ms when the run will be killed, -1: none */
} pacer_host_api;

typedef struct pacer_plugin_v1 {
    uint32_t abi_version;                     /* PACER_ABI_VERSION */
    const char *name;                         /* static, NUL-terminated, [a-z0-9_-]+ */
    const char *version;                      /* static, NUL-terminated */
    /* params: params_len bytes of UTF-8 JSON (the job's params table), NUL follows them.
       Both return 0 for success, anything else for failure, with a reason via set_message.
       validate may be NULL; run may not (a library whose run is NULL is refused). */
    int32_t (*validate)(const pacer_host_api *api, pacer_host *h, const char *params, size_t params_len);
    int32_t (*run)(const pacer_host_api *api, pacer_host *h, const char *params, size_t params_len);
} pacer_plugin_v1;

const pacer_plugin_v1 *pacer_plugin_entry_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* PACER_PLUGIN_H */
