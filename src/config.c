/*
 * config.c - settings from the environment, read once.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "segment.h"

/* Bytes per direction; see "Ring size" in docs/design.md for the measurement. */
#define DEFAULT_RING_SIZE (512u * 1024u)
#define DEFAULT_SPIN_US   50
#define SPIN_US_MAX       1000000

static struct shunt_config config;
static pthread_once_t config_once = PTHREAD_ONCE_INIT;

int shunt__parse_size(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);

	if (errno || end == s || *s == '-')
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if ((*end == 'b' || *end == 'B') && end[1] == '\0')
		end++;
	if (*end != '\0' || v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

static void read_ring_size(void)
{
	const char *s = getenv("SHUNT_RING_SIZE");
	uint64_t v;

	config.ring_size = DEFAULT_RING_SIZE;
	if (!s || !*s)
		return;
	if (shunt__parse_size(s, &v) < 0 || shunt_seg_check_size(v) < 0) {
		shunt__complain("SHUNT_RING_SIZE=%s: want a power of two from 4k to 1g; "
			 "using %u", s, DEFAULT_RING_SIZE);
		return;
	}
	config.ring_size = v;
}

/* Spinning only pays when the peer can run at the same time on another core. */
static int default_spin_us(void)
{
	return sysconf(_SC_NPROCESSORS_ONLN) > 1 ? DEFAULT_SPIN_US : 0;
}

static void read_spin(void)
{
	const char *s = getenv("SHUNT_SPIN_US");
	char *end;

	config.spin_us = default_spin_us();
	if (!s || !*s)
		return;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > SPIN_US_MAX) {
		shunt__complain("SHUNT_SPIN_US=%s: want 0..%d microseconds; using %d",
			 s, SPIN_US_MAX, config.spin_us);
		return;
	}
	config.spin_us = (int)v;
}

static void read_dir(void)
{
	const char *s = getenv("SHUNT_DIR");
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	int n;

	if (s && *s)
		n = snprintf(config.dir, sizeof(config.dir), "%s", s);
	else if (xdg && *xdg == '/')
		n = snprintf(config.dir, sizeof(config.dir), "%s/shunt", xdg);
	else
		n = snprintf(config.dir, sizeof(config.dir), "/tmp/shunt-%u",
			     (unsigned)geteuid());
	if (n < 0 || n >= (int)sizeof(config.dir) - 32) {
		shunt__complain("rendezvous directory %s is too long for a UNIX socket path; "
			 "using /tmp/shunt-%u", s ? s : xdg, (unsigned)geteuid());
		snprintf(config.dir, sizeof(config.dir), "/tmp/shunt-%u",
			 (unsigned)geteuid());
	}
}

static void config_init(void)
{
	read_ring_size();
	read_spin();
	read_dir();
}

const struct shunt_config *shunt__config(void)
{
	pthread_once(&config_once, config_init);
	return &config;
}

/*
 * The directory holds the rendezvous sockets: whoever can create files in it
 * could pose as a listener.  A directory we create is 0700.  An existing one
 * must be a real directory owned by us and closed to others, unless the user
 * named it with SHUNT_DIR (e.g. one shared among containers on purpose).
 */
int shunt__ensure_dir(const char *dir)
{
	struct stat st;
	int explicit_dir = getenv("SHUNT_DIR") && *getenv("SHUNT_DIR");

	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if (lstat(dir, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (!explicit_dir && (st.st_uid != geteuid() || (st.st_mode & 077))) {
		log_error("%s is not a private directory of uid %u; refusing it",
			  dir, (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}
