/*
 * A C plugin that fails on request, for the end-to-end tests: params {"action": "..."}.
 * Built by the test suite with gcc against pacer_plugin.h alone.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "pacer_plugin.h"

static void say(const pacer_host_api *api, pacer_host *h, const char *text) {
    api->log(h, PACER_LOG_INFO, text, strlen(text));
}

static int wants(const char *params, const char *action) {
    char needle[64];
    snprintf(needle, sizeof needle, "\"action\":\"%s\"", action);
    return strstr(params, needle) != NULL;
}

static int32_t run(const pacer_host_api *api, pacer_host *h, const char *params, size_t len) {
    (void)len;
    say(api, h, "c faults starting");
    if (wants(params, "fail")) {
        const char *why = "the C plugin failed on request";
        api->set_message(h, why, strlen(why));
        return 3;
    }
    if (wants(params, "abort")) {
        abort();
    }
    if (wants(params, "segfault")) {
        /* Page zero is never mapped; the address is volatile so the compiler cannot see it. */
        volatile uintptr_t nowhere = 16;
        *(volatile int *)nowhere = 1;
    }
    if (wants(params, "raise-segv")) {
        /* A signal the plugin sends itself, with no faulting instruction to repeat. */
        raise(SIGSEGV);
        return 0;
    }
    if (wants(params, "exit")) {
        exit(7);
    }
    if (wants(params, "hang")) {
        /* Ignore the polite stop, and leave a grandchild behind. */
        signal(SIGTERM, SIG_IGN);
        pid_t child = fork();
        if (child == 0) {
            execlp("sleep", "sleep", "1000", (char *)NULL);
            _exit(127);
        }
        printf("grandchild %d\n", (int)child);
        fflush(stdout);
        for (;;) {
            pause();
        }
    }
    if (wants(params, "flood")) {
        for (long i = 0; i < 200000; i++) {
            printf("flood line %ld of the C plugin\n", i);
        }
        printf("the last C line\n");
        return 0;
    }
    if (wants(params, "leak")) {
        size_t total = 0;
        for (;;) {
            char *chunk = malloc(16 << 20);
            if (chunk == NULL) {
                char why[128];
                snprintf(why, sizeof why, "out of memory after %zu MiB", total >> 20);
                api->set_message(h, why, strlen(why));
                return 1;
            }
            memset(chunk, 0xa5, 16 << 20);
            total += 16 << 20;
        }
    }
    if (wants(params, "leak-blind")) {
        /* A leak that never checks what malloc returns, as real leaks do. */
        for (;;) {
            char *chunk = malloc(16 << 20);
            memset(chunk, 0xa5, 16 << 20);
        }
    }
    return 0;
}

static const pacer_plugin_v1 descriptor = {
    PACER_ABI_VERSION, "c-faults", "1.0.0", NULL, run,
};

const pacer_plugin_v1 *pacer_plugin_entry_v1(void) { return &descriptor; }
