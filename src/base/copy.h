/*
 * copy.h - the copy into and out of a ring, by vector moves.
 *
 * glibc's memcpy copies a block past its `rep movsb` threshold (some KiB)
 * with that one instruction, which on this project's test machine (AMD
 * EPYC, a VM) moved a ring's bytes, last written by the other CPU, at
 * 1.9 GB/s: a tcpbench stream ran at 0.8x TCP, its reader 85% in memmove.
 * The same copy by 16-byte loads and stores ran it at 22 GB/s (the same
 * run with GLIBC_TUNABLES=glibc.cpu.x86_rep_movsb_threshold=1000000000).
 * So the rings' copies are made here, never by `rep movsb`.
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

static inline void shunt_copy(void *restrict dst, const void *restrict src, size_t n)
{
#if defined(__x86_64__)
	uint8_t *d = dst;
	const uint8_t *s = src;

	if (n >= SHUNT_COPY_SMALL) {
		for (; n >= 64; n -= 64, d += 64, s += 64) {
			__m128i a = _mm_loadu_si128((const __m128i *)(const void *)s);
			__m128i b = _mm_loadu_si128((const __m128i *)(const void *)(s + 16));
			__m128i c = _mm_loadu_si128((const __m128i *)(const void *)(s + 32));
			__m128i e = _mm_loadu_si128((const __m128i *)(const void *)(s + 48));
			_mm_storeu_si128((__m128i *)(void *)d, a);
			_mm_storeu_si128((__m128i *)(void *)(d + 16), b);
			_mm_storeu_si128((__m128i *)(void *)(d + 32), c);
			_mm_storeu_si128((__m128i *)(void *)(d + 48), e);
		}
	}
	memcpy(d, s, n);
#else
	memcpy(dst, src, n);
#endif
}

#endif
