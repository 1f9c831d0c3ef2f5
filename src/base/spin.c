/*
 * spin.c - the adaptive spin window (see spin.h).
 */
#include "clock.h"
#include "internal.h"
#include "spin.h"
#include "sys.h"

void shunt_spin_init(struct shunt_spin *sp, int max_us)
{
	sp->max = max_us > 0 ? max_us : 0;
	atomic_init(&sp->cur, sp->max);
	atomic_init(&sp->skips, 0);
}

static int window(struct shunt_spin *sp)
{
	int w = atomic_load_explicit(&sp->cur, memory_order_relaxed);

	if (w > 0 || sp->max == 0)
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
		shunt_cpu_relax();
		if ((i & 63) != 0)
			continue;
		/* The clock costs more than a check: read it now and then. */
		if (shunt_now_ns() > end) {
			adapt(sp, w, 0);
			return 0;
		}
		/* With more busy threads than cores the peer may be queued on
		 * this one: let it run now and then. */
		sys_sched_yield();
	}
}

int shunt_spin_yields(const struct shunt_spin *sp)
{
	return sp->max > 0 && atomic_load_explicit(&sp->cur, memory_order_relaxed) == 0;
}
