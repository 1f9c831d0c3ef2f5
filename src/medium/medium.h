/*
 * medium.h - what lies under a connection: where its segment's memory comes
 * from, and how the two ends reach it.
 *
 * The connection layer (src/core/) works on a mapped struct shunt_seg and
 * wakes its peer through a struct shunt_bell (core/bell.h); it never knows
 * which medium is under it.  A medium provides:
 *   - segment memory: create it (the side that offers), attach to it from
 *     a handle the other side passed (checking everything about it, since
 *     the handle came from a peer), and release a mapping;
 *   - each data area mapped twice back to back, so rings never split;
 *   - how a handle travels: an fd over SCM_RIGHTS (local), or a slot index
 *     in a region both sides already map (ivshmem).
 * Doorbells are a separate choice of the connection kind (core/bell.h):
 * native connections ring UNIX sockets, the shim's ring their TCP stream.
 *
 * Media:  local   (medium/local/)   memfd, sealed, passed by SCM_RIGHTS
 *         ivshmem (medium/ivshmem/) slots of a region shared by VMs
 */
#ifndef SHUNT_MEDIUM_H
#define SHUNT_MEDIUM_H

#include <stdint.h>

#include "seg.h"

struct shunt_medium {
	const char *name;
	/* Map fresh zeroed memory for a segment of ring size cap and write its
	 * header.  *handle is what the peer needs to attach (an fd for local,
	 * which the caller passes on and closes).  0 or negative errno. */
	int (*create)(struct shunt_seg *seg, uint64_t cap, uint8_t bell, int64_t *handle);
	/* Map a segment from a handle a peer sent, claiming ring size cap;
	 * checks the memory and the header.  Does not take the handle. */
	int (*attach)(struct shunt_seg *seg, int64_t handle, uint64_t cap, uint8_t *bell);
	/* Undo a mapping (and give back the medium's slot if last). */
	void (*release)(struct shunt_seg *seg);
};

extern const struct shunt_medium shunt_medium_local;

/* Map a segment of size cap from fd twice per ring (medium/local/mem.c;
 * the ivshmem medium maps its region's file the same way). */
int shunt_map_double(struct shunt_seg *seg, int fd, uint64_t off, uint64_t cap);
void shunt_unmap(struct shunt_seg *seg);

#endif /* SHUNT_MEDIUM_H */
