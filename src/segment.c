/*
 * segment.c - create, validate and map a connection's shared segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "segment.h"

/* The layout is an ABI between processes: pin every offset (docs/design.md). */
_Static_assert(offsetof(struct shunt_ctl, hdr) == 0, "hdr");
_Static_assert(offsetof(struct shunt_ctl, side) == 128, "side");
_Static_assert(offsetof(struct shunt_ctl, head) == 256, "head");
_Static_assert(offsetof(struct shunt_ctl, tail) == 512, "tail");
_Static_assert(offsetof(struct shunt_ctl, decide) == 768, "decide");
_Static_assert(offsetof(struct shunt_ctl, parked) == 772, "parked");
_Static_assert(offsetof(struct shunt_ctl, linked) == 780, "linked");
_Static_assert(offsetof(struct shunt_ctl, info) == 896, "info");
_Static_assert(sizeof(struct shunt_tcp_info) == 40, "info size");
_Static_assert(sizeof(struct shunt_ctl) == 1024, "ctl size");
_Static_assert(sizeof(struct shunt_ctl) <= SHUNT_CTL_SIZE, "ctl fits its page");
_Static_assert(sizeof(struct shunt_side) == 12, "side size");

/* Seals that stop the creator from shrinking the file under the attacher,
 * which would turn the attacher's next access into SIGBUS. */
#define REQUIRED_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

int shunt_seg_check_size(uint64_t cap)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);

	if (cap < SHUNT_RING_MIN || cap > SHUNT_RING_MAX || (cap & (cap - 1)))
		return -EINVAL;
	if (cap < page || SHUNT_CTL_SIZE % page)
		return -EINVAL;
	return 0;
}

static int map_at(uint8_t *addr, size_t len, int fd, off_t off)
{
	void *p = mmap(addr, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, off);

	return p == MAP_FAILED ? -errno : 0;
}

/*
 * Map the control page and each ring's data twice, back to back:
 *   ctl | ring0 | ring0 again | ring1 | ring1 again
 * The first mmap() takes the whole range at once from file offset 0, which
 * lays ctl and ring0 where they belong (its tail, past the end of the file,
 * is never touched: every later piece replaces part of it with MAP_FIXED).
 * Four calls in all, since connection set-up pays for each; one munmap()
 * undoes everything.
 */
static int seg_map(struct shunt_seg *seg, int fd, uint64_t cap)
{
	size_t len = SHUNT_CTL_SIZE + 4 * cap;
	uint8_t *base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	uint8_t *r0 = base + SHUNT_CTL_SIZE, *r1 = r0 + 2 * cap;
	off_t off1 = (off_t)(SHUNT_CTL_SIZE + cap);
	int rc;

	if (base == MAP_FAILED)
		return -errno;
	rc = map_at(r0 + cap, cap, fd, SHUNT_CTL_SIZE);
	if (rc == 0)
		rc = map_at(r1, cap, fd, off1);
	if (rc == 0)
		rc = map_at(r1 + cap, cap, fd, off1);
	if (rc < 0) {
		munmap(base, len);
		return rc;
	}
	seg->base = base;
	seg->map_len = len;
	seg->ctl = (struct shunt_ctl *)base;
	seg->data[0] = r0;
	seg->data[1] = r1;
	seg->cap = cap;
	return 0;
}

int shunt_seg_create(struct shunt_seg *seg, uint64_t cap)
{
	int rc = shunt_seg_check_size(cap);

	if (rc < 0)
		return rc;
	int fd = shunt__hide_fd(memfd_create("shunt-conn", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)shunt_seg_file_size(cap)) < 0 ||
	    fcntl(fd, F_ADD_SEALS, REQUIRED_SEALS) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	rc = seg_map(seg, fd, cap);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	/* The file is fresh and zero-filled: indices, states and wait words all
	 * start at 0.  Only the header needs writing. */
	seg->ctl->hdr.magic = SHUNT_SEG_MAGIC;
	seg->ctl->hdr.version = SHUNT_SEG_VERSION;
	seg->ctl->hdr.ctl_size = SHUNT_CTL_SIZE;
	seg->ctl->hdr.ring_size = cap;
	return fd;
}

/* A peer-supplied fd must be a sealed memfd of exactly the expected size. */
static int check_memfd(int fd, uint64_t cap)
{
	struct stat st;
	int seals = fcntl(fd, F_GET_SEALS);

	if (seals < 0 || (seals & REQUIRED_SEALS) != REQUIRED_SEALS) {
		log_warn("peer segment is not a sealed memfd (seals %d)", seals);
		return -EPROTO;
	}
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != shunt_seg_file_size(cap)) {
		log_warn("peer segment has size %lld, want %llu", (long long)st.st_size,
			 (unsigned long long)shunt_seg_file_size(cap));
		return -EPROTO;
	}
	return 0;
}

int shunt_seg_attach(struct shunt_seg *seg, int memfd, uint64_t cap)
{
	int rc = shunt_seg_check_size(cap);

	if (rc == 0)
		rc = check_memfd(memfd, cap);
	if (rc == 0)
		rc = seg_map(seg, memfd, cap);
	if (rc < 0)
		return rc;
	/* Read the header once; from here on only our copy of cap is used. */
	const volatile struct shunt_hdr *h = &seg->ctl->hdr;
	if (h->magic != SHUNT_SEG_MAGIC || h->version != SHUNT_SEG_VERSION ||
	    h->ctl_size != SHUNT_CTL_SIZE || h->ring_size != cap) {
		log_warn("peer segment header does not match (version %u)",
			 (unsigned)h->version);
		shunt_seg_detach(seg);
		return -EPROTO;
	}
	return 0;
}

void shunt_seg_detach(struct shunt_seg *seg)
{
	if (seg->base)
		munmap(seg->base, seg->map_len);
	memset(seg, 0, sizeof(*seg));
}

void shunt_seg_reset(struct shunt_seg *seg)
{
	struct shunt_ctl *ctl = seg->ctl;

	memset((uint8_t *)ctl + sizeof(ctl->hdr), 0, sizeof(*ctl) - sizeof(ctl->hdr));
	/* Stale ring data is harmless: indices say what is valid. */
}
