/* status.c — per-thread last-error messages and status names. */
#include <stdarg.h>
#include <stdio.h>

#include "common.h"

#ifndef EDGE_VERSION_STRING
#define EDGE_VERSION_STRING "0.0.0"
#endif

/* Per-thread, not shared: each thread sees the error of its own last failing call. */
static _Thread_local char t_last_error[1024];

edge_status edge_fail(edge_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_last_error, sizeof t_last_error, fmt, ap);
    va_end(ap);
    return status;
}

void edge_clear_error(void) { t_last_error[0] = '\0'; }

EDGE_API const char *edge_last_error(void) { return t_last_error; }

EDGE_API const char *edge_status_name(edge_status status) {
    switch (status) {
    case EDGE_OK: return "EDGE_OK";
    case EDGE_ERR_INVALID_ARG: return "EDGE_ERR_INVALID_ARG";
    case EDGE_ERR_IO: return "EDGE_ERR_IO";
    case EDGE_ERR_FORMAT: return "EDGE_ERR_FORMAT";
    case EDGE_ERR_NOMEM: return "EDGE_ERR_NOMEM";
    case EDGE_ERR_UNSUPPORTED: return "EDGE_ERR_UNSUPPORTED";
    case EDGE_ERR_RANGE: return "EDGE_ERR_RANGE";
    case EDGE_ERR_STATE: return "EDGE_ERR_STATE";
    case EDGE_ERR_INTERNAL: return "EDGE_ERR_INTERNAL";
    case EDGE_ERR_CANCELLED: return "EDGE_ERR_CANCELLED";
    }
    return "EDGE_ERR_UNKNOWN";
}

EDGE_API const char *edge_version(void) { return EDGE_VERSION_STRING; }
