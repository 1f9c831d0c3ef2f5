/*
 * t_shim_vm - the socket shim between VMs (src/shim/meet_vm.c), on
 * loopback: the test's own config sends 127.0.0.0/8 through a region file
 * (ivshmem PATH 127.0.0.0/8), so both ends meet through the region as two
 * guests do, without QEMU.  tests/t_vm_*.sh do it with guests.
 *
 *   moved      a pair moves through the region (its slot, its 4-tuple,
 *              the bytes of both rings), a stream each way is intact, and
 *              when both close the slot is free
 *   stranger   a party that is not our TCP peer answers our offer (as a
 *              guest with a mirrored 4-tuple, or a hostile one, could): our
 *              reads never return its ring's bytes; the connection is reset
 *              once the real peer's bytes are found where the proof should
 *              be (the real peer here runs no library: raw system calls)
 *   scribble   random bytes over the whole region while a moved pair
 *              streams both ways: every call returns (an error, or data),
 *              nothing faults or hangs
 *   not_ours   a region file another user owns, one every user may open,
 *              or one named by another user's symlink, is neither
 *              formatted nor used
 *   missing    no region file where the config says: every byte arrives,
 *              and the log (level warn) says the file cannot be opened
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <netinet/in.h>

#include "medium.h"
#include "region.h"
#include "shimlib.h"

static char g_region[64], g_conf[64];

static struct shunt_addr addr_of(int fd, int peer)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	struct shunt_addr s = { .family = AF_INET };

	ASSERT_SYS(peer ? getpeername(fd, (struct sockaddr *)&a, &len)
			: getsockname(fd, (struct sockaddr *)&a, &len));
	s.port = ntohs(a.sin_port);
	memcpy(s.a, &a.sin_addr, 4);
	return s;
}

/* A zero region file for this case (the scribble ruins one). */
static void fresh_region(void)
{
	unlink(g_region);
	int fd = open(g_region, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	ASSERT_SYS(fd);
	ASSERT_SYS(ftruncate(fd, 8 << 20));
	close(fd);
}

/* The region as another party sees it. */
static void look(struct shunt_vmr *r)
{
	ASSERT_OK(shunt_vmr_open(r, open(g_region, O_RDWR | O_CLOEXEC), SHUNT_VMR_FORMAT));
}

/* The slot of the connection with this port, or -1. */
static int slot_of(struct shunt_vmr *r, uint16_t port, struct shunt_vmr_slot *out)
{
	for (uint32_t i = 0; i < r->nslots; i++) {
		shunt_vmr_slot_copy(r, i, out);
		if ((atomic_load(&out->word) & 0xff) == SHUNT_VMS_USED &&
		    (out->lo.port == port || out->hi.port == port))
			return (int)i;
	}
	return -1;
}

/* --- moved ------------------------------------------------------------------ */

static void case_moved(void)
{
	int a, b;
	struct shunt_vmr r;
	struct shunt_vmr_slot sl;

	fresh_region();
	ts_pair(&a, &b);
	ts_make_accelerated(a, b);
	/* Less than a ring each way: the test sends all, then reads. */
	for (int k = 0; k < 8; k++) {
		ts_send_stream(a, shim_seed(1), (uint64_t)k << 17, 1 << 17, ts_ms(5000));
		ts_recv_stream(b, shim_seed(1), (uint64_t)k << 17, 1 << 17, ts_ms(5000));
		ts_send_stream(b, shim_seed(2), (uint64_t)k << 17, 1 << 17, ts_ms(5000));
		ts_recv_stream(a, shim_seed(2), (uint64_t)k << 17, 1 << 17, ts_ms(5000));
	}
	look(&r);
	int i = slot_of(&r, (uint16_t)ts_local_port(a), &sl);
	ASSERT_MSG(i >= 0, "no slot of the region holds port %d", ts_local_port(a));
	uint64_t w = atomic_load(&sl.word);
	ASSERT_MSG(w & SHUNT_VMS_OPEN1, "slot %d: word %#jx, the offerer not attached", i,
		   (uintmax_t)w);
	const struct shunt_ctl *c = shunt_vmr_ctl(&r, (uint32_t)i);
	ASSERT_NOT_NULL(c);
	/* Both rings carried a stream (less what went by TCP before). */
	ASSERT_UGT(atomic_load(&c->head[0].v), 512 << 10);
	ASSERT_UGT(atomic_load(&c->head[1].v), 512 << 10);
	munmap((void *)c, SHUNT_CTL_SIZE);
	ASSERT_SYS(close(a));
	ts_expect_eof(b, ts_ms(2000));
	ASSERT_SYS(close(b));
	shunt_vmr_slot_copy(&r, (uint32_t)i, &sl);
	ASSERT_MSG((atomic_load(&sl.word) & SHUNT_VMS_DONE) == SHUNT_VMS_DONE,
		   "slot %d after both closed: word %#jx", i, (uintmax_t)atomic_load(&sl.word));
	shunt_vmr_close(&r);
}

/* --- stranger ---------------------------------------------------------------- */

struct stranger {
	struct shunt_addr lo, hi;
	_Atomic int done, answered, published;
};

/* Answer the offer for lo -> hi with a segment of our own, then, once the
 * offerer attached, say our sends moved at offset 0 and put junk in our
 * ring: what a hostile guest would do. */
static void *stranger_main(void *arg)
{
	struct stranger *st = arg;
	struct shunt_vmr r;
	struct shunt_seg seg = { 0 };
	uint32_t e, g, s, sg;
	uint64_t nonce;

	look(&r);
	uint64_t end = test_now_ns() + 5000000000ull;
	while (shunt_vmr_find(&r, &st->lo, &st->hi, &e, &g, &nonce) != 1)
		if (test_now_ns() > end)
			return NULL;
	ASSERT_OK(shunt_vmr_alloc(&r, 65536, &s, &sg));
	ASSERT_OK(shunt_vmr_map(&r, s, 65536, &seg));
	memset(seg.ctl, 0, SHUNT_CTL_SIZE);
	shunt_seg_init(&seg, 0x77);
	atomic_store(&seg.ctl->side[0].state, SHUNT_ST_OPEN);
	ASSERT_OK(shunt_vmr_answer(&r, e, g, s, sg, 12345));
	atomic_store(&st->answered, 1);
	while (!shunt_vmr_attached(&r, s, sg) && test_now_ns() < end)
		test_sleep_ms(1);
	memset(seg.data[0], 'J', 64);
	atomic_store(&seg.ctl->head[0].v, 64);
	atomic_store(&seg.ctl->sw[0].tcp_off, 0);
	atomic_store(&seg.ctl->sw[0].flags, SHUNT_SW_RING);
	atomic_store(&st->published, 1);
	while (!atomic_load(&st->done))
		test_sleep_ms(1);
	shunt_unmap(&seg);
	shunt_vmr_close(&r);
	return NULL;
}

static void case_stranger(void)
{
	/* The real peer, without the library: raw system calls.  Its port is
	 * above the ephemeral range, so that the client is the lower end and
	 * offers. */
	fresh_region();
	int l = (int)syscall(SYS_socket, AF_INET, SOCK_STREAM, 0), port = 0;
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	for (int p = 61000 + getpid() % 3000; p < 65535 && !port; p++) {
		sa.sin_port = htons((uint16_t)p);
		if (syscall(SYS_bind, l, &sa, sizeof(sa)) == 0)
			port = p;
	}
	ASSERT_GT(port, 0);
	ASSERT_SYS(syscall(SYS_listen, l, 1));
	int c = ts_tcp_connect(port);
	int s = (int)syscall(SYS_accept4, l, NULL, NULL, 0);
	ASSERT_SYS(s);
	struct stranger st = { .lo = addr_of(c, 0), .hi = addr_of(c, 1) };
	pthread_t t;
	ASSERT_EQ(pthread_create(&t, NULL, stranger_main, &st), 0);
	/* Enough sends for the client to offer and, answered, attach. */
	char buf[4096] = { 0 };
	for (int i = 0; i < 64 && !shunt__shim_is_accelerated(c); i++) {
		ASSERT_EQ(write(c, "x", 1), 1);
		test_sleep_ms(5);
	}
	ASSERT_MSG(atomic_load(&st.answered), "the stranger never saw the client's offer");
	for (int i = 0; i < 2000 && !atomic_load(&st.published); i++)
		test_sleep_ms(1);
	ASSERT_MSG(atomic_load(&st.published), "the client never attached to the stranger's slot");
	/* The real peer writes; the client must read its bytes or a reset,
	 * never the stranger's junk. */
	ASSERT_EQ(syscall(SYS_write, s, "real data", 9), 9);
	ssize_t n = ts_read_wait(c, buf, sizeof(buf), ts_ms(3000));
	int err = errno;
	ASSERT_MSG(n < 0 || memchr(buf, 'J', (size_t)n) == NULL, "the client read the stranger's "
		   "ring: %.*s", (int)n, buf);
	ASSERT_MSG((n < 0 && err == ECONNRESET) || (n == 9 && !memcmp(buf, "real data", 9)),
		   "the client read %zd bytes (%s): %.*s", n, n < 0 ? test_errname(err) : "-",
		   n > 0 ? (int)n : 0, buf);
	test_log("the client read %s", n < 0 ? "ECONNRESET" : "the real peer's bytes");
	atomic_store(&st.done, 1);
	ASSERT_EQ(pthread_join(t, NULL), 0);
	close(c);
	syscall(SYS_close, s);
	syscall(SYS_close, l);
}

/* --- scribble ----------------------------------------------------------------- */

struct flow {
	int fd;
	_Atomic int *stop;
	_Atomic int done;  /* stopped by itself: err, or 0 for the end */
	int err;
};

/* Send and receive on one fd, one thread (the shim's readiness of a
 * direction is not for another thread's concurrent calls on it), until an
 * error, the end, or stop; never more than 100 ms in one wait, so that a
 * hang shows as a thread that never ends. */
static void *flow_main(void *arg)
{
	struct flow *f = arg;
	char buf[65536];

	memset(buf, 'z', sizeof(buf));
	ts_set_nonblock(f->fd, 1);
	while (!atomic_load(f->stop)) {
		struct pollfd p = { f->fd, POLLIN | POLLOUT, 0 };
		poll(&p, 1, 100);
		ssize_t n = (p.revents & POLLIN) ? recv(f->fd, buf, sizeof(buf), 0)
						 : send(f->fd, buf, sizeof(buf), MSG_NOSIGNAL);
		if (n == 0 || (n < 0 && errno != EAGAIN)) {
			f->err = n ? errno : 0;
			atomic_store(&f->done, 1);
			break;
		}
	}
	return NULL;
}

static void case_scribble(void)
{
	int a, b;
	_Atomic int stop = 0;
	struct test_rng rng;

	test_rng_seed(&rng, shim_seed(7));
	fresh_region();
	ts_pair(&a, &b);
	ts_make_accelerated(a, b);
	struct flow f[2] = { { a, &stop, 0, 0 }, { b, &stop, 0, 0 } };
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(pthread_create(&t[i], NULL, flow_main, &f[i]), 0);
	test_sleep_ms(200);
	int fd = open(g_region, O_RDWR | O_CLOEXEC);
	struct stat sb;
	ASSERT_SYS(fstat(fd, &sb));
	uint8_t *p = mmap(NULL, (size_t)sb.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT(p != MAP_FAILED);
	for (int k = 0; k < 200; k++) {
		size_t off = (size_t)test_rng_range(&rng, 0, (uint64_t)sb.st_size - 4096);
		test_rng_fill(&rng, p + off, 4096);
	}
	test_rng_fill(&rng, p, (size_t)sb.st_size);
	/* Every flow ends by itself (an error or the end) within a bound, or
	 * is told to stop: no call blocks past its 100 ms polls. */
	uint64_t end = test_now_ns() + (uint64_t)ts_ms(10000) * 1000000u;
	int ended = 0;
	while (test_now_ns() < end && ended < 2) {
		test_sleep_ms(50);
		ended = 0;
		for (int i = 0; i < 2; i++)
			ended += atomic_load(&f[i].done);
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(pthread_join(t[i], NULL), 0);
	test_log("after the scribble: %d of 2 ends stopped by themselves (%s, %s)", ended,
		 f[0].done ? test_errname(f[0].err) : "-", f[1].done ? test_errname(f[1].err) : "-");
	munmap(p, (size_t)sb.st_size);
	close(fd);
	close(a);
	close(b);
	/* Whatever the region holds now, a new connection carries every byte
	 * (through the region again, or by TCP). */
	int x, y;
	ts_pair(&x, &y);
	ts_send_stream(x, shim_seed(8), 0, 65536, ts_ms(3000));
	ts_recv_stream(y, shim_seed(8), 0, 65536, ts_ms(3000));
	close(x);
	close(y);
}

/* --- not_ours ------------------------------------------------------------------ */

/* Whoever can open the region reads and writes every connection in it: a
 * file another user made (before us, in /dev/shm, open to all) must not be
 * used, nor one of ours that every user may open. */
struct variant {
	const char *what;
	uid_t uid;
	mode_t mode;
	int link; /* the configured path: a symlink of nobody's to the file */
};

static void not_ours_child(void *arg)
{
	const struct variant *v = arg;
	int a, b;
	char page[4096];

	char file[80];

	fresh_region();
	ASSERT_SYS(chown(g_region, v->uid, (gid_t)-1));
	ASSERT_SYS(chmod(g_region, v->mode));
	snprintf(file, sizeof(file), "%s", g_region);
	if (v->link) {
		snprintf(file, sizeof(file), "%s.real", g_region);
		ASSERT_SYS(rename(g_region, file));
		ASSERT_SYS(symlink(file, g_region));
		ASSERT_SYS(lchown(g_region, 65534, 65534));
	}
	ts_pair(&a, &b);
	for (int k = 0; k < 40; k++) {
		ts_send_stream(a, shim_seed(3), (uint64_t)k << 14, 1 << 14, ts_ms(5000));
		ts_recv_stream(b, shim_seed(3), (uint64_t)k << 14, 1 << 14, ts_ms(5000));
		ts_send_stream(b, shim_seed(4), (uint64_t)k << 14, 1 << 14, ts_ms(5000));
		ts_recv_stream(a, shim_seed(4), (uint64_t)k << 14, 1 << 14, ts_ms(5000));
	}
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	ASSERT_SYS(fd);
	ASSERT_EQ(pread(fd, page, sizeof(page), 0), (ssize_t)sizeof(page));
	close(fd);
	if (v->link) {
		unlink(g_region);
		ASSERT_SYS(rename(file, g_region));
	}
	int zero = 1;
	for (size_t i = 0; i < sizeof(page); i++)
		zero &= page[i] == 0;
	test_log("a region %s: %s, the connection %s", v->what,
		 zero ? "left alone" : "FORMATTED", ts_accel(a) ? "moved" : "on TCP");
	ASSERT_MSG(zero, "a region %s was formatted and used", v->what);
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
}

static void case_not_ours(void)
{
	static const struct variant vs[] = {
		{ "of ours that every user may write (0666)", (uid_t)-1, 0666, 0 },
		{ "of ours that every user may read (0604)", (uid_t)-1, 0604, 0 },
		{ "of another user's (nobody, 0600)", 65534, 0600, 0 },
		{ "of ours (0600) named by a symlink of nobody's", (uid_t)-1, 0600, 1 },
	};
	for (size_t i = 0; i < sizeof(vs) / sizeof(vs[0]); i++) {
		if ((vs[i].uid != (uid_t)-1 || vs[i].link) && geteuid() != 0) {
			test_log("not root: a region of another user's is not tried");
			continue;
		}
		test_wait_ok(test_fork(not_ours_child, (void *)&vs[i]), 30);
	}
	char real[80];
	snprintf(real, sizeof(real), "%s.real", g_region);
	unlink(real); /* left by a failed symlink round */
}

/* --- missing --------------------------------------------------------------------
 * The configured region file does not exist (a typo, or `shunt vm region`
 * not run yet): every byte still arrives, and the log says why no
 * connection goes through a region.  It said nothing (a helper found
 * connections on the local medium and no word of the file). */
static void missing_child(void *arg)
{
	(void)arg;
	int a, b;
	char buf[4096], want[128];

	ts_pair(&a, &b);
	for (int k = 0; k < 40; k++) {
		ts_send_stream(a, shim_seed(9), (uint64_t)k << 12, 1 << 12, ts_ms(5000));
		ts_recv_stream(b, shim_seed(9), (uint64_t)k << 12, 1 << 12, ts_ms(5000));
	}
	ASSERT_SYS(close(a));
	ASSERT_SYS(close(b));
	int fd = open(getenv("SHUNT_LOG_FILE"), O_RDONLY | O_CLOEXEC);
	ASSERT_SYS(fd);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	ASSERT_SYS(n);
	close(fd);
	buf[n] = 0;
	snprintf(want, sizeof(want), "ivshmem: %s cannot be opened", g_region);
	ASSERT_MSG(strstr(buf, want), "no \"%s\" in the log: %s", want, buf);
}

static void case_missing(void)
{
	unlink(g_region);
	test_wait_ok(test_fork(missing_child, NULL), 30);
}

static const struct shim_case g_cases[] = {
	{ "moved", case_moved },
	{ "stranger", case_stranger },
	{ "scribble", case_scribble },
	{ "not_ours", case_not_ours },
	{ "missing", case_missing },
};

int main(int argc, char **argv)
{
	(void)argc;
	if (access("/dev/shm", W_OK) < 0) {
		printf("skip: no writable /dev/shm\n");
		return TEST_SKIP;
	}
	/* The library reads its config before main(): set it and start again.
	 * Loopback goes through the region; a case's process formats the zero
	 * file fresh_region() made on its first connection (ivshmem PATH may). */
	const char *conf = getenv("SHUNT_CONFIG");
	if (!conf || !strstr(conf, "/t_shim_vm-")) {
		snprintf(g_conf, sizeof(g_conf), "/dev/shm/t_shim_vm-%d.conf", (int)getpid());
		FILE *f = fopen(g_conf, "w");
		if (!f)
			return TEST_FAIL;
		fprintf(f, "ivshmem /dev/shm/t_shim_vm-%d 127.0.0.0/8\nring-size 256k\n",
			(int)getpid());
		fclose(f);
		setenv("SHUNT_CONFIG", g_conf, 1);
		unsetenv("SHUNT_IVSHMEM");
		/* The library's warnings, for case missing to read. */
		char log[64];
		snprintf(log, sizeof(log), "/dev/shm/t_shim_vm-%d.log", (int)getpid());
		setenv("SHUNT_LOG", "warn", 1);
		setenv("SHUNT_LOG_FILE", log, 1);
		execv("/proc/self/exe", argv);
		return TEST_FAIL;
	}
	snprintf(g_conf, sizeof(g_conf), "%s", conf);
	snprintf(g_region, sizeof(g_region), "%.*s", (int)(strlen(conf) - 5), conf);
	int rc = ts_main("t_shim_vm", g_cases, sizeof(g_cases) / sizeof(g_cases[0]));
	unlink(g_region);
	unlink(g_conf);
	unlink(getenv("SHUNT_LOG_FILE"));
	return rc;
}
