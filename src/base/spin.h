/*
 * spin.h - when to spin before sleeping: one adaptive policy for every wait.
 *
 * A peer that answers within microseconds (a request/response loop) is
 * cheaper to wait for by watching shared memory than by two kernel
 * wake-ups.  But with more busy threads than cores the peer is often not
 * running at all, and spinning only steals the CPU it needs.  So the window
 * adapts per waiter: a spin that ended in a sleep halves it, one that found
 * its condition doubles it back up to the configured maximum, and a window
 * that fell to zero is probed again every SHUNT_SPIN_PROBE waits.  With the
 * window at zero a blocking wait yields the CPU once before it sleeps: the
 * peer is often queued behind us, and letting it run saves both sides the
 * sleep and the wake-up.
 */
#ifndef SHUNT_SPIN_H
#define SHUNT_SPIN_H

#include <stdatomic.h>

#define SHUNT_SPIN_PROBE 64

struct shunt_spin {
	int max;                /* microseconds; 0: never spin */
	_Atomic int cur;        /* the window now, <= max */
	_Atomic unsigned skips; /* waits since the window fell to zero */
	int forced;             /* spins on a crowded machine too (the program
	                         * asked: shunt_set_spin) */
	_Atomic int woke;       /* we just woke the peer (shunt_spin_woke) */
};

static inline void shunt_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#endif
}

void shunt_spin_init(struct shunt_spin *sp, int max_us);
/* Spin up to the window for check(arg) to return non-zero (> 0); returns
 * that value, 0 when the window passed, -1 when it is zero (no spin).
 * Adapts the window. */
int shunt_spin(struct shunt_spin *sp, int (*check)(void *), void *arg);
/* We woke the peer from its sleep: the kernel tends to queue it on our
 * own CPU, behind us, as a socket's wake-up expects the waker to sleep
 * next.  The next spin yields at its first miss instead of after 64
 * (2 to 3 us of pauses the peer waited through: a request after an idle
 * while cost 1.1 to 1.3 times TCP's round trip). */
void shunt_spin_woke(struct shunt_spin *sp);
/* The window is zero: is it worth a sched_yield() before sleeping? */
int shunt_spin_yields(const struct shunt_spin *sp);

#endif /* SHUNT_SPIN_H */
