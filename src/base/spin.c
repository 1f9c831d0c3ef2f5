/*
 * spin.c - the adaptive spin window (see spin.h).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "internal.h"
#include "spin.h"
#include "sys.h"

void shunt_spin_init(struct shunt_spin *sp, int max_us)
{
	sp->max = max_us > 0 ? max_us : 0;
	atomic_init(&sp->cur, sp->max);
	atomic_init(&sp->skips, 0);
	atomic_init(&sp->woke, 0);
	/* A spin-us the user set is taken as asked, crowded or not: they know
	 * where the peer runs (a guest's epoll server waiting on another VM,
	 * whose own run queue always looks crowded: docs/vms.md). */
	sp->forced = shunt__config()->spin_set;
}

/*
 * More runnable threads than CPUs (the fourth field of /proc/loadavg,
 * looked at every CROWD_NS by whichever waiter comes first): a spinner then
 * holds a CPU its peer is queued for, and each of its waits costs the peer
 * a time slice, milliseconds, where a sleep would have let the kernel run
 * it at once.  So nobody spins while the machine is crowded.
 */
#define CROWD_NS 10000000ll

static _Atomic int64_t crowd_seen_ns = -CROWD_NS;
static _Atomic int crowd;

static int runnable_now(void)
{
	char buf[128];

	if (sys_read_text("/proc/loadavg", buf, sizeof(buf)) <= 0)
		return 0;
	/* "0.52 0.58 0.59 3/412 1234": the field after the third space. */
	const char *p = buf;
	for (int spaces = 0; *p && spaces < 3; p++)
		spaces += *p == ' ';
	return atoi(p);
}

/*
 * Looked at again (three system calls, 10 to 20 us) only where it may have
 * changed something: while crowded, every CROWD_NS; while not, after a spin
 * that missed (a crowded machine makes them miss).  Looked at every 10 ms
 * whatever the spins did, it cost a round trip after a quiet while (a
 * request every 2 or 20 ms) more than the spin saved: 1.4x to 2.1x TCP's.
 */
static void look_at_crowd(void)
{
	static _Atomic int cpus;
	int64_t now = shunt_now_ns(), seen = atomic_load_explicit(&crowd_seen_ns, memory_order_relaxed);

	if (now - seen >= CROWD_NS &&
	    atomic_compare_exchange_strong(&crowd_seen_ns, &seen, now)) {
		if (atomic_load_explicit(&cpus, memory_order_relaxed) <= 0)
			atomic_store_explicit(&cpus, (int)sysconf(_SC_NPROCESSORS_ONLN),
					      memory_order_relaxed);
		atomic_store_explicit(&crowd, runnable_now() > atomic_load(&cpus),
				      memory_order_relaxed);
	}
}

static int crowded(void)
{
	if (atomic_load_explicit(&crowd, memory_order_relaxed))
		look_at_crowd();
	return atomic_load_explicit(&crowd, memory_order_relaxed);
}

static int window(struct shunt_spin *sp)
{
	int w = atomic_load_explicit(&sp->cur, memory_order_relaxed);

	if (sp->max == 0 || (!sp->forced && crowded()))
		return 0;
	if (w > 0)
		return w;
	if (atomic_fetch_add_explicit(&sp->skips, 1, memory_order_relaxed) % SHUNT_SPIN_PROBE)
		return 0;
	return sp->max / 4 + 1;
}

static void adapt(struct shunt_spin *sp, int w, int hit)
{
	int next = hit ? w * 2 + 1 : w / 2;

	atomic_store_explicit(&sp->cur, SHUNT_MIN(next, sp->max), memory_order_relaxed);
}

int shunt_spin(struct shunt_spin *sp, int (*check)(void *), void *arg)
{
	int w = window(sp);

	if (w <= 0)
		return -1;
	int64_t end = shunt_now_ns() + (int64_t)w * 1000;
	for (unsigned i = 1;; i++) {
		int k = check(arg);
		if (k) {
			adapt(sp, w, 1);
			return k;
		}
		if (i == 1 && atomic_load_explicit(&sp->woke, memory_order_relaxed)) {
			atomic_store_explicit(&sp->woke, 0, memory_order_relaxed);
			sys_sched_yield();
			continue;
		}
		shunt_cpu_relax();
		if ((i & 63) != 0)
			continue;
		/* The clock costs more than a check: read it now and then. */
		if (shunt_now_ns() > end) {
			adapt(sp, w, 0);
			if (!sp->forced)
				look_at_crowd();
			return 0;
		}
		/* With more busy threads than cores the peer may be queued on
		 * this one: let it run now and then. */
		sys_sched_yield();
	}
}

void shunt_spin_woke(struct shunt_spin *sp)
{
	atomic_store_explicit(&sp->woke, 1, memory_order_relaxed);
}

int shunt_spin_yields(const struct shunt_spin *sp)
{
	return sp->max > 0 && atomic_load_explicit(&sp->cur, memory_order_relaxed) == 0;
}
