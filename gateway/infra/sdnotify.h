/* SPDX-License-Identifier: MIT */
/*
 * sdnotify.h: tells systemd how a service of Type=notify is doing, without libsystemd: one datagram to the unix
 * socket named by $NOTIFY_SOCKET (a path, or '@' for the abstract namespace), as sd_notify(3) describes.
 */
#ifndef GW_SDNOTIFY_H
#define GW_SDNOTIFY_H

/*
 * Sends state (e.g. "READY=1", "STOPPING=1") to systemd. Returns 1 when it was sent, 0 when the process was not
 * started by systemd with a notify socket (nothing to do), or -1 when the socket is named but the send failed (the
 * reason is in errno). Safe to call from any thread.
 */
int gw_sd_notify(const char *state);

#endif
