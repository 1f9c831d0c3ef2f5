/*
 * clock.h - the one clock of the library: monotonic nanoseconds.
 *
 * clock_gettime() goes through the vDSO (no system call) and is not one of
 * the functions the preload library wraps, so calling it by name is safe.
 */
#ifndef SHUNT_CLOCK_H
#define SHUNT_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t shunt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The same clock as of the last tick (1 to 10 ms old), for rate limits on
 * paths that run per call: 5 ns a look here where the exact one takes 19
 * (both through the vDSO). */
static inline int64_t shunt_coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A relative timeout of ns nanoseconds (>= 0) as a timespec. */
static inline struct timespec shunt_ts(int64_t ns)
{
	if (ns < 0)
		ns = 0;
	return (struct timespec){ (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
}

/* Deadlines are absolute shunt_now_ns() values; SHUNT_NEVER waits forever. */
#define SHUNT_NEVER INT64_MAX

/* What is left until deadline as a timespec in *ts, or NULL for never. */
static inline struct timespec *shunt_left(int64_t deadline, struct timespec *ts)
{
	if (deadline == SHUNT_NEVER)
		return NULL;
	*ts = shunt_ts(deadline - shunt_now_ns());
	return ts;
}

#endif /* SHUNT_CLOCK_H */
