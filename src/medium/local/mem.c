/*
 * mem.c - the local medium: a segment is a sealed memfd, passed to the
 * other process by SCM_RIGHTS and mapped by both.
 *
 * The seals matter: without them the creator could shrink the file under
 * the other side and turn its next access into SIGBUS.  The memfd is never
 * a named file, so no third process can open it.  Each side closes it as
 * soon as it has mapped it, so the segment lives exactly as long as a
 * mapping does.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "internal.h"
#include "medium.h"
#include "sys.h"

#define REQUIRED_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

/* mmap's address, or a negative errno (the kernel's -4095..-1). */
static long map_at(uint8_t *addr, uint64_t len, int fd, uint64_t off, int fixed)
{
	return sys_mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | (fixed ? MAP_FIXED : 0),
			fd, (off_t)off);
}

static int map_failed(long r)
{
	return (unsigned long)r > -4096ul;
}

/*
 * Map the control page and each ring's data twice, back to back:
 *   ctl | ring0 | ring0 again | ring1 | ring1 again
 * The first mmap() takes the whole range at once from offset `off`, which
 * lays ctl and ring0 where they belong (its tail, past the segment, is
 * never touched: every later piece replaces part of it with MAP_FIXED).
 * Four calls in all; one munmap() undoes everything.
 */
int shunt_map_double(struct shunt_seg *seg, int fd, uint64_t off, uint64_t cap)
{
	uint64_t len = SHUNT_CTL_SIZE + 4 * cap;
	long b = map_at(NULL, len, fd, off, 0);

	if (map_failed(b))
		return (int)b;
	uint8_t *base = (uint8_t *)b, *r0 = base + SHUNT_CTL_SIZE, *r1 = r0 + 2 * cap;
	uint64_t off1 = off + SHUNT_CTL_SIZE + cap;
	long rc = map_at(r0 + cap, cap, fd, off + SHUNT_CTL_SIZE, 1);
	if (!map_failed(rc))
		rc = map_at(r1, cap, fd, off1, 1);
	if (!map_failed(rc))
		rc = map_at(r1 + cap, cap, fd, off1, 1);
	if (map_failed(rc)) {
		sys_munmap(base, len);
		return (int)rc;
	}
	seg->base = base;
	seg->map_len = len;
	seg->ctl = (struct shunt_ctl *)base;
	seg->data[0] = r0;
	seg->data[1] = r1;
	seg->cap = cap;
	return 0;
}

void shunt_unmap(struct shunt_seg *seg)
{
	if (seg->base)
		sys_munmap(seg->base, seg->map_len);
	memset(seg, 0, sizeof(*seg));
}

static int local_create(struct shunt_seg *seg, uint64_t cap, uint8_t bell, int64_t *handle)
{
	int rc = shunt_seg_check_size(cap);

	if (rc < 0)
		return rc;
	int fd = shunt__hide_fd(sys_memfd_create("shunt-conn", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	if (fd < 0)
		return fd;
	rc = sys_ftruncate(fd, (off_t)shunt_seg_size(cap));
	if (rc == 0)
		rc = sys_fcntl(fd, F_ADD_SEALS, REQUIRED_SEALS);
	if (rc == 0)
		rc = shunt_map_double(seg, fd, 0, cap);
	if (rc < 0) {
		sys_close(fd);
		return rc;
	}
	seg->medium = &shunt_medium_local;
	shunt_seg_init(seg, bell);
	*handle = fd;
	return 0;
}

/* A peer-supplied fd must be a sealed memfd of exactly the expected size. */
static int check_memfd(int fd, uint64_t cap)
{
	struct stat st;
	int seals = sys_fcntl(fd, F_GET_SEALS, 0);

	if (seals < 0 || (seals & REQUIRED_SEALS) != REQUIRED_SEALS) {
		log_warn("peer segment is not a sealed memfd (seals %d)", seals);
		return -EPROTO;
	}
	int rc = sys_fstat(fd, &st);
	if (rc < 0)
		return rc;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != shunt_seg_size(cap)) {
		log_warn("peer segment has size %lld, want %llu", (long long)st.st_size,
			 (unsigned long long)shunt_seg_size(cap));
		return -EPROTO;
	}
	return 0;
}

static int local_attach(struct shunt_seg *seg, int64_t handle, uint64_t cap, uint8_t *bell)
{
	int fd = (int)handle;
	int rc = shunt_seg_check_size(cap);

	if (rc == 0)
		rc = check_memfd(fd, cap);
	if (rc == 0)
		rc = shunt_map_double(seg, fd, 0, cap);
	if (rc < 0)
		return rc;
	seg->medium = &shunt_medium_local;
	rc = shunt_seg_check(seg, cap, bell);
	if (rc < 0)
		shunt_unmap(seg);
	return rc;
}

const struct shunt_medium shunt_medium_local = {
	.name = "local",
	.create = local_create,
	.attach = local_attach,
	.release = shunt_unmap,
};
