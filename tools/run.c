/*
 * run.c - `shunt run [--] CMD [ARGS...]`: run CMD with the shim preloaded.
 *
 * The preload library is found next to this binary (a build tree), in
 * ../lib (an install), or at $SHUNT_PRELOAD.  It goes in front of any
 * LD_PRELOAD already set, which is kept.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"

#define LIB "libshunt-preload.so"

static int find_lib(char *out, size_t n)
{
	const char *env = getenv("SHUNT_PRELOAD");
	char exe[PATH_MAX];
	ssize_t k;

	if (env && *env) {
		snprintf(out, n, "%s", env);
		return access(out, R_OK);
	}
	k = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (k < 0)
		return -1;
	exe[k] = '\0';
	char *slash = strrchr(exe, '/');
	if (slash)
		*slash = '\0';
	static const char *const where[] = { "%s/" LIB, "%s/../lib/" LIB };
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		if (snprintf(out, n, where[i], exe) < (int)n && access(out, R_OK) == 0)
			return 0;
	}
	return -1;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: shunt run [--] COMMAND [ARGS...]\n\n"
		"Run COMMAND with libshunt-preload.so preloaded: its TCP connections to\n"
		"and from other programs run under shunt on this host go through shared\n"
		"memory; all others stay on TCP.  Settings come from the environment\n"
		"and the config file (shunt(1)).\n");
}

int run_main(int argc, char **argv)
{
	int i = 1;
	char lib[PATH_MAX];

	if (i < argc && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (i < argc && !strcmp(argv[i], "--"))
		i++;
	if (i >= argc) {
		fprintf(stderr, "shunt run: no command given\n");
		usage(stderr);
		return 2;
	}
	if (argv[i][0] == '-' && strcmp(argv[i - 1], "--")) {
		fprintf(stderr, "shunt run: unknown option '%s'\n", argv[i]);
		return 2;
	}
	if (find_lib(lib, sizeof(lib)) < 0) {
		fprintf(stderr, "shunt run: cannot find %s (set SHUNT_PRELOAD)\n", LIB);
		return 1;
	}
	const char *old = getenv("LD_PRELOAD");
	char *val = malloc(strlen(lib) + (old ? strlen(old) : 0) + 2);
	if (!val)
		return 1;
	sprintf(val, old && *old ? "%s:%s" : "%s", lib, old);
	setenv("LD_PRELOAD", val, 1);
	free(val);
	execvp(argv[i], argv + i);
	fprintf(stderr, "shunt run: %s: %s\n", argv[i], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
