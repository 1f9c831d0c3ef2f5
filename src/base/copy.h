/*
 * copy.h - the copies into and out of a ring, by vector moves.
 *
 * glibc's memcpy copies a block past its `rep movsb` threshold (some KiB)
 * with that one instruction, which on this project's test machine (AMD
 * EPYC, a VM) ran at 1.6 GB/s instead of 30 to 40 whenever the destination
 * lay 1 to 31 bytes past the source modulo 4 KiB (a single-threaded scan,
 * copies of 4 KiB to 256 KiB): a reader's buffer from malloc (16 bytes
 * past a page) reading a page-aligned ring is just that, and a tcpbench
 * stream ran at 0.87x TCP, its reader 85% in memmove.  By 16-byte vector
 * loads and stores it ran at 18 to 25 GB/s.  Nor is memcpy taken where it
 * is not slow alone: with it for every other distance, iperf3 -l 128K (its
 * writer's buffer 16 bytes past a page, the ring's position on one) gave
 * 46 to 96 Gbit/s, median 59, in 7 runs; by vector moves 47 to 134, median
 * 117, in the same minutes.  So the rings' copies are made here.
 *
 * shunt_copy_nt stores around the caches (streaming stores), for a sender
 * whose plain stores into the ring crawl: on that machine a stream ran at
 * 22 GB/s in some runs and 4.5 GB/s in others, the two CPUs sharing a
 * cache or not (the host's choice, it seems: the same binary, either way,
 * and changing within a run), and with streaming stores at 10 to 12 GB/s
 * in both (core/end.c, copy_in, picks one by the time a copy took).
 */
#ifndef SHUNT_COPY_H
#define SHUNT_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

/* Below this, memcpy's own vector moves (it takes rep movsb only above). */
#define SHUNT_COPY_SMALL 1024

#if defined(__x86_64__)
/* The 64-byte blocks of n bytes, four loads then four stores each,
 * streaming ones (nt: the destination 16-byte aligned) or plain; returns
 * the bytes left over. */
static inline size_t shunt_copy_blocks(uint8_t *d, const uint8_t *s, size_t n, int nt)
{
	for (; n >= 64; n -= 64, d += 64, s += 64) {
		__m128i v[4];
		for (int i = 0; i < 4; i++)
			v[i] = _mm_loadu_si128((const __m128i *)(const void *)(s + 16 * i));
		for (int i = 0; i < 4; i++) {
			if (nt)
				_mm_stream_si128((__m128i *)(void *)(d + 16 * i), v[i]);
			else
				_mm_storeu_si128((__m128i *)(void *)(d + 16 * i), v[i]);
		}
	}
	return n;
}
#endif

static inline void shunt_copy(void *restrict dst, const void *restrict src, size_t n)
{
#if defined(__x86_64__)
	if (n >= SHUNT_COPY_SMALL) {
		size_t left = shunt_copy_blocks(dst, src, n, 0);
		memcpy((uint8_t *)dst + (n - left), (const uint8_t *)src + (n - left), left);
		return;
	}
#endif
	memcpy(dst, src, n);
}

/* As shunt_copy, with the stores past the caches; the last one is fenced,
 * so that a release store after it (the ring's head) publishes them. */
static inline void shunt_copy_nt(void *restrict dst, const void *restrict src, size_t n)
{
#if defined(__x86_64__)
	uint8_t *d = dst;
	const uint8_t *s = src;
	size_t head = (16 - ((uintptr_t)d & 15)) & 15;

	if (n >= SHUNT_COPY_SMALL) {
		memcpy(d, s, head);
		size_t left = shunt_copy_blocks(d + head, s + head, n - head, 1);
		_mm_sfence();
		memcpy(d + (n - left), s + (n - left), left);
		return;
	}
#endif
	shunt_copy(dst, src, n);
}

#endif
