/*
 * vm.c - `shunt vm`: the host's side of shunt between virtual machines.
 *
 *   shunt vm region NAME [SIZE] [--ring SIZE] [--mode OCTAL] [--group GROUP]
 *       make the ivshmem region NAME (/dev/shm/NAME, or a path), format it,
 *       and print the QEMU and libvirt lines that give it to guests
 *   shunt vm show REGION        what is in a region: slots, offers, bytes
 *   shunt vm args REGION        the QEMU arguments for an existing region
 *
 * REGION is a path, or `pci` in a guest (the first ivshmem device's BAR).
 * A region is read here through a read-only mapping, and trusted no more
 * than the library trusts it: every number is checked before it is used.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "cmds.h"
#include "find.h"
#include "internal.h"
#include "region.h"

#define DEFAULT_SIZE (64ull << 20)

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: shunt vm region NAME [SIZE] [--ring SIZE] [--mode OCTAL] [--group GROUP]\n"
		"       shunt vm show REGION\n"
		"       shunt vm args REGION\n\n"
		"region  make the shared-memory region NAME (/dev/shm/NAME, or an absolute\n"
		"        path) of SIZE bytes (a power of two, default 64M; suffixes k, m, g)\n"
		"        for QEMU's ivshmem-plain device, format it with rings of --ring\n"
		"        bytes (default 512k), owned by you, mode 0600 (--mode, --group to\n"
		"        share it), and print the options that give it to guests.  A file\n"
		"        that exists and is all zero is formatted where it is\n"
		"show    the region's geometry, the connections in its slots, its offers\n"
		"args    print the QEMU options for REGION again\n\n"
		"REGION is a path; in a guest, `pci` is the first ivshmem device's BAR.\n"
		"docs/vms.md has recipes for QEMU and libvirt.\n");
}

static int pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static void region_path(const char *name, char *out, size_t n)
{
	snprintf(out, n, name[0] == '/' ? "%s" : "/dev/shm/%s", name);
}

/* --- args ------------------------------------------------------------------- */

static void print_args(const char *path, uint64_t size)
{
	const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;

	printf("QEMU, for every guest that shares it (one region per pair of guests keeps\n"
	       "each pair's bytes from the others):\n"
	       "  -object memory-backend-file,id=shunt0,size=%llu,share=on,mem-path=%s\n"
	       "  -device ivshmem-plain,memdev=shunt0\n"
	       "  with -accel kvm, or -accel tcg,thread=multi and -smp N,maxcpus=M with M >= 2:\n"
	       "  atomics between guests need either (plain TCG loses updates)\n",
	       (unsigned long long)size, path);
	if (!strncmp(path, "/dev/shm/", 9))
		printf("libvirt (<devices>):\n"
		       "  <shmem name='%s'><model type='ivshmem-plain'/>"
		       "<size unit='M'>%llu</size></shmem>\n",
		       base, (unsigned long long)(size >> 20));
	printf("host programs: SHUNT_IVSHMEM=%s shunt run -- PROGRAM\n"
	       "guest programs: shunt run -- PROGRAM (as root: the library finds the device;\n"
	       "  docs/vms.md says how to let other users map it)\n", path);
}

static int open_region(const char *spec, struct shunt_vmr *r, int mode)
{
	char path[320];

	if (!strcmp(spec, "pci")) {
		int rc = shunt_vmr_pci_path(0, path, sizeof(path));
		if (rc < 0) {
			fprintf(stderr, "shunt vm: no ivshmem PCI device: %s\n", strerror(-rc));
			return rc;
		}
	} else {
		region_path(spec, path, sizeof(path));
	}
	int fd = open(path, (mode == SHUNT_VMR_LOOK ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "shunt vm: %s: %s\n", path, strerror(errno));
		return -errno;
	}
	int rc = shunt_vmr_open(r, fd, mode);
	if (rc == -EPERM)
		fprintf(stderr, "shunt vm: %s: not used: another user owns it, or every user may "
			"open it\n", path);
	else if (rc < 0)
		fprintf(stderr, "shunt vm: %s: not a shunt region (%s)\n", path, strerror(-rc));
	return rc;
}

static int args_main(int argc, char **argv)
{
	struct shunt_vmr r;
	char path[320];

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	if (open_region(argv[1], &r, SHUNT_VMR_LOOK) < 0)
		return 1;
	region_path(argv[1], path, sizeof(path));
	print_args(path, r.size);
	shunt_vmr_close(&r);
	return 0;
}

/* --- region ----------------------------------------------------------------------- */

struct make_opts {
	uint64_t size, ring;
	unsigned mode;
	int gid;
};

static int parse_make(int argc, char **argv, struct make_opts *o)
{
	o->size = DEFAULT_SIZE;
	o->ring = SHUNT_VMR_RING;
	o->mode = 0600;
	o->gid = -1;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--ring") && v) {
			if (shunt__parse_size(v, &o->ring) < 0)
				return -1;
			i++;
		} else if (!strcmp(a, "--mode") && v) {
			char *end;
			unsigned long m = strtoul(v, &end, 8);
			if (*end || m > 0777 || (m & 07)) {
				fprintf(stderr, "shunt vm: --mode %s: a region no other user may open "
					"(it holds every connection's bytes; --group for a group)\n", v);
				return -1;
			}
			o->mode = (unsigned)m;
			i++;
		} else if (!strcmp(a, "--group") && v) {
			struct group *g = getgrnam(v);
			if (!g)
				return -1;
			o->gid = (int)g->gr_gid;
			i++;
		} else if (a[0] != '-' && i == 2) {
			if (shunt__parse_size(a, &o->size) < 0)
				return -1;
		} else {
			return -1;
		}
	}
	return pow2(o->size) ? 0 : -1;
}

/* Format the region in fd, of size bytes (0 or -1, said on stderr). */
static int format_fd(const char *path, int fd, uint64_t size, uint64_t ring)
{
	struct shunt_vmr_hdr g;
	uint64_t id = 0;

	if (shunt_vmr_layout(size, ring, &g) < 0) {
		fprintf(stderr, "shunt vm: %llu bytes cannot hold slots of %llu-byte rings\n",
			(unsigned long long)size, (unsigned long long)ring);
		return -1;
	}
	void *p = mmap(NULL, g.seg_off, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED || getentropy(&id, sizeof(id)) < 0) {
		fprintf(stderr, "shunt vm: %s: %s\n", path, strerror(errno));
		if (p != MAP_FAILED)
			munmap(p, g.seg_off);
		return -1;
	}
	int rc = shunt_vmr_format(p, size, ring, id);
	munmap(p, g.seg_off);
	if (rc < 0) {
		fprintf(stderr, "shunt vm: %s is in use, or not zero: not formatted\n", path);
		return -1;
	}
	printf("%s: %llu bytes, %u slots of %llu-byte rings, %u offers\n", path,
	       (unsigned long long)size, g.nslots, (unsigned long long)ring, g.nentries);
	return 0;
}

/* A new file, sized, with its mode and group, formatted.  A file that is
 * there already (QEMU made it, or `truncate`) is formatted where it is if
 * it is still all zero, with its size, mode and owner. */
static int make(const char *path, struct make_opts *o)
{
	struct stat st;
	int created = 1;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

	if (fd < 0 && errno == EEXIST) {
		created = 0;
		fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		const char *why = NULL;
		if (fd >= 0 && fstat(fd, &st) == 0) {
			o->size = (uint64_t)st.st_size;
			why = shunt_vmr_not_ours(&st);
		}
		if (why) {
			/* Made by another before us: it would read our connections. */
			fprintf(stderr, "shunt vm: %s exists and is %s: not used\n", path, why);
			close(fd);
			return -1;
		}
	}
	if (fd < 0) {
		fprintf(stderr, "shunt vm: %s: %s\n", path, strerror(errno));
		return -1;
	}
	int ok = !created || (ftruncate(fd, (off_t)o->size) == 0 &&
			      (o->gid < 0 || fchown(fd, (uid_t)-1, (gid_t)o->gid) == 0) &&
			      fchmod(fd, o->mode) == 0);
	if (!ok)
		fprintf(stderr, "shunt vm: %s: %s\n", path, strerror(errno));
	else if (!pow2(o->size))
		fprintf(stderr, "shunt vm: %s: %llu bytes is no power of two (ivshmem wants one)\n",
			path, (unsigned long long)o->size);
	ok = ok && pow2(o->size) && format_fd(path, fd, o->size, o->ring) == 0;
	close(fd);
	if (!ok && created)
		unlink(path);
	return ok ? 0 : -1;
}

static int region_main(int argc, char **argv)
{
	struct make_opts o;
	char path[320];

	if (argc < 2 || parse_make(argc, argv, &o) < 0) {
		usage(stderr);
		return 2;
	}
	region_path(argv[1], path, sizeof(path));
	if (make(path, &o) < 0)
		return 1;
	print_args(path, o.size);
	return 0;
}

/* --- show ---------------------------------------------------------------------------- */

static const char *const entry_states[] = { "free", "writing", "offered", "answering",
					    "answered" };

static void fmt(const struct shunt_addr *a, char *buf, size_t n)
{
	struct shunt_addr c = *a;

	if (c.family != 2 && c.family != 10) { /* AF_INET, AF_INET6 */
		snprintf(buf, n, "-");
		return;
	}
	shunt_addr_fmt(&c, buf, n);
}

static void show_slot(const struct shunt_vmr *r, uint32_t i)
{
	struct shunt_vmr_slot s;
	char lo[64], hi[64];

	shunt_vmr_slot_copy(r, i, &s);
	uint64_t w = atomic_load_explicit(&s.word, memory_order_relaxed);
	if ((w & 0xffu) != SHUNT_VMS_USED)
		return;
	const char *what = (w & SHUNT_VMS_DONE) == SHUNT_VMS_DONE ? "free (both let go)"
			   : !(w & SHUNT_VMS_OPEN1)               ? "answered"
			   : (w & SHUNT_VMS_DONE)                 ? "one side let go"
								  : "in use";
	fmt(&s.lo, lo, sizeof(lo));
	fmt(&s.hi, hi, sizeof(hi));
	printf("slot %u gen %u: %s, %s <-> %s, rings of %llu", i, SHUNT_VMS_GEN(w), what, lo, hi,
	       (unsigned long long)s.ring);
	const struct shunt_ctl *c = shunt_vmr_ctl(r, i);
	if (c) {
		/* Bytes each way: the producer indices, as the segment says. */
		printf(", bytes %llu (lo->hi) %llu (hi->lo)",
		       (unsigned long long)atomic_load(&c->head[1].v),
		       (unsigned long long)atomic_load(&c->head[0].v));
		munmap((void *)c, SHUNT_CTL_SIZE);
	}
	printf("\n");
}

static int show_main(int argc, char **argv)
{
	struct shunt_vmr r;

	if (argc != 2) {
		usage(stderr);
		return 2;
	}
	if (open_region(argv[1], &r, SHUNT_VMR_LOOK) < 0)
		return 1;
	printf("region: %llu bytes, %u slots of %llu-byte rings, %u offers, format %016llx, "
	       "found full %llu times\n",
	       (unsigned long long)r.size, r.nslots, (unsigned long long)r.ring_max, r.nentries,
	       (unsigned long long)r.format_id, (unsigned long long)shunt_vmr_full_count(&r));
	for (uint32_t i = 0; i < r.nslots; i++)
		show_slot(&r, i);
	for (uint32_t i = 0; i < r.nentries; i++) {
		struct shunt_vmr_entry e;
		char lo[64], hi[64];
		shunt_vmr_entry_copy(&r, i, &e);
		uint64_t w = atomic_load_explicit(&e.word, memory_order_relaxed);
		uint32_t st = (uint32_t)(w & 0xff);
		if (st == SHUNT_VMR_FREE)
			continue;
		fmt(&e.lo, lo, sizeof(lo));
		fmt(&e.hi, hi, sizeof(hi));
		printf("offer %u gen %llu: %s, %s waits for %s\n", i, (unsigned long long)(w >> 8),
		       st < 5 ? entry_states[st] : "?", lo, hi);
	}
	shunt_vmr_close(&r);
	return 0;
}

int vm_main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (!strcmp(argv[1], "region"))
		return region_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "show"))
		return show_main(argc - 1, argv + 1);
	if (!strcmp(argv[1], "args"))
		return args_main(argc - 1, argv + 1);
	fprintf(stderr, "shunt vm: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
