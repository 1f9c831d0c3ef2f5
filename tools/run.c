/*
 * run.c - `shunt run [--] CMD [ARGS...]`: run CMD with the shim preloaded.
 *
 * The preload library is found next to this binary (a build tree), in
 * ../lib (an install), or at $SHUNT_PRELOAD.  It goes in front of any
 * LD_PRELOAD already set, which is kept.
 *
 * Before it execs, it looks at the program's file and warns in one line on
 * stderr when the preload library cannot reach it: a statically linked
 * program (no ELF interpreter: nothing loads the library), a Go program
 * (it makes its own system calls, never libc's), or one the loader runs in
 * secure-execution mode (set-user-ID, set-group-ID or file capabilities:
 * LD_PRELOAD is ignored), or a 32-bit program (run without the library in
 * LD_PRELOAD: its loader cannot load it, and says so on the program's
 * stderr).  The program runs all the same, on plain TCP.
 * SHUNT_LOG=none silences the warning.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
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

/* --- Why the library would not reach the program ---------------------- */

/* A regular file we may execute, as execve() runs: a FIFO there (one
 * another user made in a directory on PATH) is passed over by execvp, and
 * opening it to look inside hung `shunt run` for good (a helper's
 * attack). */
static int runnable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0 ? 0 : -1;
}

/* The file execvp() would run for NAME, into out; -1 if none. */
static int resolve(const char *name, char *out, size_t n)
{
	if (strchr(name, '/')) {
		snprintf(out, n, "%s", name);
		return runnable(out);
	}
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/bin:/usr/bin";
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, ':');
		int len = (int)(end - p);
		/* An empty element is the current directory, as for execvp. */
		if (snprintf(out, n, "%.*s/%s", len ? len : 1, len ? p : ".", name) < (int)n &&
		    runnable(out) == 0)
			return 0;
		p = *end ? end + 1 : end;
	}
	return -1;
}

/* What an ELF file says, as far as LD_PRELOAD cares. */
struct elf_facts {
	int elf;     /* an ELF file of this machine's byte order */
	int foreign; /* of the other class than ours (32-bit on a 64-bit build) */
	int interp;  /* has PT_INTERP: the dynamic loader runs it */
	int go;      /* a .go.buildinfo section, or Go's build ID note */
};

static int read_at(int fd, void *buf, size_t len, uint64_t off)
{
	return off > (uint64_t)INT64_MAX || pread(fd, buf, len, (off_t)off) != (ssize_t)len ? -1 : 0;
}

/* Go's build ID note: name "Go", type 4 (cmd/internal/buildid). */
static int go_note(int fd, uint64_t off, uint64_t size)
{
	unsigned char buf[4096];

	if (size > sizeof(buf))
		size = sizeof(buf);
	if (read_at(fd, buf, (size_t)size, off) < 0)
		return 0;
	for (uint64_t at = 0; at + 12 <= size;) {
		uint32_t nsz, dsz, type;
		memcpy(&nsz, buf + at, 4);
		memcpy(&dsz, buf + at + 4, 4);
		memcpy(&type, buf + at + 8, 4);
		uint64_t name = at + 12, next = name + ((nsz + 3ull) & ~3ull) + ((dsz + 3ull) & ~3ull);
		if (nsz == 3 && name + 3 <= size && !memcmp(buf + name, "Go", 3) && type == 4)
			return 1;
		if (next <= at || next > size)
			break;
		at = next;
	}
	return 0;
}

/* One reader for both classes: the fields we need have the same names. */
#define ELF_SCAN(Ehdr, Phdr, Shdr)                                                        \
	do {                                                                              \
		Ehdr eh;                                                                  \
		if (read_at(fd, &eh, sizeof(eh), 0) < 0 || eh.e_phentsize != sizeof(Phdr)) \
			return;                                                           \
		f->elf = 1;                                                               \
		for (unsigned i = 0; i < eh.e_phnum && i < 512; i++) {                    \
			Phdr ph;                                                          \
			if (read_at(fd, &ph, sizeof(ph), eh.e_phoff + (uint64_t)i * sizeof(ph)) < 0) \
				break;                                                    \
			if (ph.p_type == PT_INTERP)                                       \
				f->interp = 1;                                            \
			if (ph.p_type == PT_NOTE && go_note(fd, ph.p_offset, ph.p_filesz)) \
				f->go = 1;                                                \
		}                                                                         \
		Shdr strs;                                                                \
		if (eh.e_shentsize != sizeof(Shdr) || eh.e_shstrndx >= eh.e_shnum ||     \
		    read_at(fd, &strs, sizeof(strs),                                      \
			    eh.e_shoff + (uint64_t)eh.e_shstrndx * sizeof(Shdr)) < 0)     \
			return;                                                           \
		for (unsigned i = 0; i < eh.e_shnum && i < 4096 && !f->go; i++) {        \
			Shdr sh;                                                          \
			char name[24];                                                    \
			if (read_at(fd, &sh, sizeof(sh), eh.e_shoff + (uint64_t)i * sizeof(sh)) < 0 || \
			    sh.sh_name >= strs.sh_size)                                   \
				continue;                                                 \
			memset(name, 0, sizeof(name));                                    \
			if (pread(fd, name, sizeof(name) - 1,                             \
				  (off_t)(strs.sh_offset + sh.sh_name)) <= 0)             \
				continue;                                                 \
			if (!strcmp(name, ".go.buildinfo") || !strcmp(name, ".note.go.buildid")) \
				f->go = 1;                                                \
		}                                                                         \
	} while (0)

static void elf_scan(int fd, struct elf_facts *f)
{
	unsigned char id[EI_NIDENT];
	static const union {
		uint16_t u;
		uint8_t b[2];
	} host = { .u = 1 };

	memset(f, 0, sizeof(*f));
	if (read_at(fd, id, sizeof(id), 0) < 0 || memcmp(id, ELFMAG, SELFMAG) ||
	    id[EI_DATA] != (host.b[0] ? ELFDATA2LSB : ELFDATA2MSB))
		return;
	f->foreign = id[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32);
	if (id[EI_CLASS] == ELFCLASS64)
		ELF_SCAN(Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr);
	else if (id[EI_CLASS] == ELFCLASS32)
		ELF_SCAN(Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr);
}

/* Would the loader run PATH in secure-execution mode (AT_SECURE), where it
 * ignores LD_PRELOAD?  That is when the exec changes our ids or gives
 * capabilities, and the mount honours set-user-ID bits. */
static const char *secure_exec(int fd, const struct stat *st)
{
	struct statvfs vfs;

	if (fstatvfs(fd, &vfs) == 0 && (vfs.f_flag & ST_NOSUID))
		return NULL;
	if ((st->st_mode & S_ISUID) && st->st_uid != getuid())
		return "set-user-ID";
	if ((st->st_mode & S_ISGID) && (st->st_mode & S_IXGRP) && st->st_gid != getgid())
		return "set-group-ID";
	if (fgetxattr(fd, "security.capability", NULL, 0) > 0)
		return "given file capabilities";
	return NULL;
}

/* Why the library cannot reach the program at PATH, or NULL.  A script
 * (#!) is judged by its interpreter, one level deep.  *bare: run it
 * without LD_PRELOAD, whose library its loader cannot load (another ELF
 * class): that loader says so on the program's stderr, a line the program
 * never printed. */
static const char *why_not(const char *path, char *what, size_t n, int depth, int *bare)
{
	struct stat st;
	struct elf_facts f;
	char head[256];
	/* Non-blocking: a FIFO put in place since resolve() looked. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);

	if (fd < 0)
		return NULL;
	const char *why = NULL;
	ssize_t k = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? pread(fd, head, sizeof(head) - 1, 0) : -1;
	snprintf(what, n, "%s", path);
	if (k > 2 && head[0] == '#' && head[1] == '!') {
		head[k] = '\0';
		char *p = head + 2 + strspn(head + 2, " \t");
		p[strcspn(p, " \t\n")] = '\0';
		why = secure_exec(fd, &st);
		close(fd);
		if (why || depth > 0 || *p != '/')
			return why;
		char inner[PATH_MAX];
		why = why_not(p, inner, sizeof(inner), depth + 1, bare);
		if (why)
			snprintf(what, n, "%s (run by %s)", path, inner);
		return why;
	}
	if (k > 0) {
		elf_scan(fd, &f);
		if (f.elf && f.go)
			why = "a Go program, which makes its own system calls: LD_PRELOAD cannot reach its sockets";
		else if (f.elf && !f.interp)
			why = "statically linked: nothing loads LD_PRELOAD into it";
		else if (f.elf && f.foreign) {
			why = sizeof(void *) == 8
				      ? "a 32-bit program, which the 64-bit library cannot be loaded into "
					"(nor, then, into the programs it starts)"
				      : "a 64-bit program, which the 32-bit library cannot be loaded into "
					"(nor, then, into the programs it starts)";
			*bare = 1;
		} else if (f.elf)
			why = secure_exec(fd, &st);
	}
	close(fd);
	return why;
}

/* Warns when the library cannot reach the program NAME (unless
 * SHUNT_LOG=none); 1 when it must run without LD_PRELOAD (why_not). */
static int check_reach(const char *name)
{
	char path[PATH_MAX], what[PATH_MAX + 64];
	const char *log = getenv("SHUNT_LOG");
	int bare = 0;

	if (resolve(name, path, sizeof(path)) < 0)
		return 0;
	const char *why = why_not(path, what, sizeof(what), 0, &bare);
	if (!why || (log && !strcmp(log, "none")))
		return bare;
	if (!strncmp(why, "set-", 4) || !strncmp(why, "given", 5))
		fprintf(stderr, "shunt run: warning: %s is %s: the loader ignores LD_PRELOAD, "
			"so its connections stay on TCP\n", what, why);
	else
		fprintf(stderr, "shunt run: warning: %s is %s, so its connections stay on TCP\n",
			what, why);
	return bare;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: shunt run [--] COMMAND [ARGS...]\n\n"
		"Run COMMAND with libshunt-preload.so preloaded: its TCP connections to\n"
		"and from other programs run under shunt on this host go through shared\n"
		"memory; all others stay on TCP.  Settings come from the environment\n"
		"and the config file (shunt(1)).  A program the library cannot reach\n"
		"(statically linked, Go, set-user-ID, 32-bit) gets a warning and runs on TCP.\n");
}

/* The library first in LD_PRELOAD. */
static int preload(const char *lib)
{
	const char *old = getenv("LD_PRELOAD");
	char *val = malloc(strlen(lib) + (old ? strlen(old) : 0) + 2);

	if (!val)
		return -1;
	sprintf(val, old && *old ? "%s:%s" : "%s", lib, old);
	int rc = setenv("LD_PRELOAD", val, 1);
	free(val);
	return rc;
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
	if (!check_reach(argv[i]) && preload(lib) < 0)
		return 1;
	execvp(argv[i], argv + i);
	fprintf(stderr, "shunt run: %s: %s\n", argv[i], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
