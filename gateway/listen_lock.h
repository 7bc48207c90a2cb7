/* SPDX-License-Identifier: MIT */
/*
 * listen_lock.h: one settled serve per address. SO_REUSEPORT lets the loops of one process share their address, but
 * it would let a second process share it too, silently taking part of the traffic. Before its loops bind, serve
 * takes a lock named after the address: an abstract unix socket "settled-listen:<numeric host>:<port>". Binding an
 * abstract name is atomic and the kernel drops it when the process ends however it ends (kill -9 included), so the
 * lock is race-free and never stale. Its holder answers every connection to it with its SETTLED_REUSEPORT_GROUP; a
 * second process with no group, or another group, refuses to start and names the holder's pid, and one of the same
 * group shares the address (a deliberate handover) and takes the lock over once the holder is gone.
 */
#ifndef GW_LISTEN_LOCK_H
#define GW_LISTEN_LOCK_H

#include "config.h"

typedef struct st_gw_listen_lock_t gw_listen_lock_t;

/* Takes (or, in the holder's group, joins) the lock of cfg's SETTLED_LISTEN address. Returns the lock, or NULL
 * after logging why the process must not serve that address (held by another settled outside its group, or in use
 * by a process that is no settled). */
gw_listen_lock_t *gw_listen_lock_acquire(const gw_config_t *cfg);
/* Releases the lock and frees it (NULL is allowed). */
void gw_listen_lock_release(gw_listen_lock_t *lock);

#endif
