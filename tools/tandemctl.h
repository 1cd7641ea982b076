/* What tandemctl's commands share across its files. */
#ifndef TDM_TOOLS_TANDEMCTL_H
#define TDM_TOOLS_TANDEMCTL_H

#include <stdbool.h>
#include <stdint.h>

/* The JSON text of a control request (malloc'd), or NULL with a message
 * printed. */
char *fetch_document(const char *path, uint32_t type);

/* tandemctl top (tools/top.c): a live view of the status document every
 * interval seconds until q (or Ctrl-C); once: one frame, plain text, after
 * one interval (the rates need two samples). Returns the exit code. */
int cmd_top(const char *path, double interval, bool once);

#endif
