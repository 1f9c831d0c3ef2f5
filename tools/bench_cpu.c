/*
 * bench_cpu.c - how much CPU time other processes took during a point.
 *
 * Two processes ping-ponging through shared memory need two idle cores; on a
 * shared machine a build or a test suite running beside the benchmark can
 * halve a figure or double it (a busy core never enters the deep idle state
 * a wake-up must climb out of).  The machine's busy time from /proc/stat,
 * less what this process and its peer used, says whether a point was
 * measured on a quiet machine.  Coarse (clock ticks), but a hog shows.
 */
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

double cpu_self_s(void)
{
	struct rusage ru;

	if (getrusage(RUSAGE_SELF, &ru) < 0)
		return 0;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* CPU-seconds all CPUs spent busy since boot, or -1 where unknown.  Steal
 * (time the hypervisor gave to other guests) counts as busy: it is taken
 * from us just the same. */
static double machine_busy_s(void)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	long hz = sysconf(_SC_CLK_TCK);
	int n;

	if (!f)
		return -1;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1],
		   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n < 4 || hz <= 0)
		return -1;
	/* user nice system [idle iowait] irq softirq steal */
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)hz;
}

void cpu_mark(struct cpu_mark *m, double peer_cpu_s)
{
	m->t = now_s();
	m->busy = machine_busy_s();
	m->self = cpu_self_s();
	m->peer = peer_cpu_s;
}

double cpu_others(const struct cpu_mark *a, const struct cpu_mark *b)
{
	if (a->busy < 0 || b->busy < 0 || b->t <= a->t)
		return 0;
	double others = (b->busy - a->busy) - (b->self - a->self) - (b->peer - a->peer);
	return others > 0 ? others / (b->t - a->t) : 0;
}
