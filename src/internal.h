/*
 * internal.h - what crosses files inside libshunt.  Not installed.
 */
#ifndef SHUNT_INTERNAL_H
#define SHUNT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* Marks the definitions of public functions; everything else is hidden. */
#define SHUNT_EXPORT __attribute__((visibility("default")))

#define SHUNT_MIN(a, b) ((a) < (b) ? (a) : (b))

/* --- Logging (log.c) ------------------------------------------------------
 * Silent unless SHUNT_LOG names a level; lines go to stderr or SHUNT_LOG_FILE,
 * never to stdout.  Levels: error, warn, info, debug. */
enum shunt_log_level {
	SHUNT_LOG_NONE = 0,
	SHUNT_LOG_ERROR,
	SHUNT_LOG_WARN,
	SHUNT_LOG_INFO,
	SHUNT_LOG_DEBUG,
};

extern int shunt__log_level;
void shunt__log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define shunt_log(level, ...)                                       \
	do {                                                        \
		if (__builtin_expect(shunt__log_level >= (level), 0)) \
			shunt__log((level), __VA_ARGS__);           \
	} while (0)
/* A user's mistake (a bad setting) is said on stderr even when logging is
 * off, since silence would hide it; SHUNT_LOG=none silences it too. */
void shunt__complain(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define log_error(...) shunt_log(SHUNT_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  shunt_log(SHUNT_LOG_WARN, __VA_ARGS__)
#define log_info(...)  shunt_log(SHUNT_LOG_INFO, __VA_ARGS__)
#define log_debug(...) shunt_log(SHUNT_LOG_DEBUG, __VA_ARGS__)

/* --- Configuration (config.c) ---------------------------------------------
 * Read once from the environment; a bad value is reported (at warn level and
 * above) and replaced by the default, so a typo never breaks the program. */
struct shunt_config {
	uint64_t ring_size; /* SHUNT_RING_SIZE, bytes, with k/m/g suffixes */
	int spin_us;        /* SHUNT_SPIN_US, 0 = never spin */
	char dir[108];      /* rendezvous directory (fits sun_path) */
};

const struct shunt_config *shunt__config(void);
/* Parse a byte count such as "512k" or "1M".  0 or -EINVAL. */
int shunt__parse_size(const char *s, uint64_t *out);
/* Create (mode 0700) or check the runtime directory; 0 or negative errno. */
int shunt__ensure_dir(const char *dir);

#endif /* SHUNT_INTERNAL_H */
