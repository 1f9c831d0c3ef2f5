/*
 * t_config.c - the config file and the policy it sets: every setting, every
 * kind of bad line, the order file < environment, a bad file turning
 * acceleration off, and which TCP addresses and peers the rules allow.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "addr.h"
#include "internal.h"
#include "testlib.h"

static int parse(struct shunt_config *c, const char *text)
{
	char buf[4096];

	memset(c, 0, sizeof(*c));
	snprintf(buf, sizeof(buf), "%s", text);
	return shunt__config_parse(c, "test.conf", buf);
}

static void test_good_file(void)
{
	struct shunt_config c;

	ASSERT_OK(parse(&c, "# a comment\n"
			    "\n"
			    "ring-size 1m   # trailing comment\n"
			    "spin-us 0\n"
			    "dir /run/shunt-shared\n"
			    "log warn /tmp/shunt-test.log\n"
			    "allow-user 1234 root\n"
			    "bypass port 22 6000-6010\n"
			    "accelerate addr 10.0.0.0/8 ::1\n"
			    "bypass all\n"));
	ASSERT_UEQ(c.ring_size, 1u << 20);
	ASSERT_EQ(c.spin_us, 0);
	ASSERT(strcmp(c.dir, "/run/shunt-shared") == 0);
	ASSERT_EQ(c.dir_explicit, 1);
	ASSERT_UEQ(c.n_users, 2);
	ASSERT_UEQ(c.users[0], 1234);
	ASSERT_UEQ(c.users[1], 0);
	ASSERT_UEQ(c.n_rules, 5);
	ASSERT_EQ(c.rules[0].kind, SHUNT_RULE_PORT);
	ASSERT_EQ(c.rules[0].port_lo, 22);
	ASSERT_EQ(c.rules[1].port_hi, 6010);
	ASSERT_EQ(c.rules[2].family, AF_INET);
	ASSERT_EQ(c.rules[2].prefix, 8);
	ASSERT_EQ(c.rules[3].family, AF_INET6);
	ASSERT_EQ(c.rules[3].prefix, 128);
	ASSERT_EQ(c.rules[4].kind, SHUNT_RULE_ALL);
	ASSERT_EQ(c.rules[4].accelerate, 0);
	test_log("a file with every setting parses");
}

static void test_bad_lines(void)
{
	static const char *const bad[] = {
		"ring-size 3k", "ring-size", "ring-size 1m 2m", "ring-size 2g",
		"spin-us -1", "spin-us lots", "dir relative/path", "log loud",
		"log warn relative.log", "allow-user no-such-user-here", "allow-user",
		"bypass port 0", "bypass port 70000", "bypass port 90-80",
		"accelerate addr 10.0.0.0/33", "accelerate addr nowhere", "bypass",
		"bypass some", "accelerate port", "frobnicate 1", "ringsize 1m",
	};
	struct shunt_config c;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ASSERT_MSG(parse(&c, bad[i]) == -EINVAL, "'%s' was accepted", bad[i]);
	/* One bad line among good ones still fails the file. */
	ASSERT_ERR(parse(&c, "ring-size 1m\nspin-us x\nbypass all\n"), -EINVAL);
	test_log("%zu kinds of bad line refused", sizeof(bad) / sizeof(bad[0]));
}

static struct sockaddr_storage in4(const char *a, int port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *s = (struct sockaddr_in *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin_family = AF_INET;
	s->sin_port = htons((uint16_t)port);
	ASSERT(inet_pton(AF_INET, a, &s->sin_addr) == 1);
	return ss;
}

static struct sockaddr_storage in6(const char *a, int port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	s->sin6_family = AF_INET6;
	s->sin6_port = htons((uint16_t)port);
	ASSERT(inet_pton(AF_INET6, a, &s->sin6_addr) == 1);
	return ss;
}

static int allowed(struct sockaddr_storage ss)
{
	struct shunt_addr a;

	ASSERT_OK(shunt_addr_from((struct sockaddr *)&ss, &a));
	return shunt__tcp_allowed(&a);
}

static char conf_path[256];

static void write_conf(const char *text)
{
	FILE *f = fopen(conf_path, "w");

	ASSERT_NOT_NULL(f);
	ASSERT(fputs(text, f) >= 0);
	ASSERT_EQ(fclose(f), 0);
	ASSERT_SYS(chmod(conf_path, 0600)); /* whatever the umask: ours alone */
}

/* In a fresh process: the config is read once per process. */
static void child_rules(void *arg)
{
	(void)arg;
	setenv("SHUNT_CONFIG", conf_path, 1);
	setenv("SHUNT_RING_SIZE", "64k", 1); /* the environment wins */
	const struct shunt_config *c = shunt__config();
	ASSERT_UEQ(c->ring_size, 64u << 10);
	ASSERT_EQ(c->spin_us, 7);
	ASSERT_EQ(c->bad_file, 0);
	/* First match wins, no match accelerates. */
	ASSERT_EQ(allowed(in4("127.0.0.1", 22)), 0);
	ASSERT_EQ(allowed(in4("127.0.0.1", 6005)), 0);
	ASSERT_EQ(allowed(in4("127.0.0.1", 80)), 1);
	ASSERT_EQ(allowed(in4("10.1.2.3", 8080)), 0);
	ASSERT_EQ(allowed(in4("10.16.2.3", 8080)), 1);
	ASSERT_EQ(allowed(in6("::ffff:10.1.2.3", 8080)), 0); /* v4-mapped is v4 */
	ASSERT_EQ(allowed(in6("fd00::1", 8080)), 0);
	ASSERT_EQ(allowed(in6("fd00:1::1", 8080)), 1);
	ASSERT_EQ(shunt__peer_allowed((uint32_t)geteuid()), 1);
	ASSERT_EQ(shunt__peer_allowed(4242), 1);
	ASSERT_EQ(shunt__peer_allowed(4243), 0);
	exit(0);
}

static void child_bad_file(void *arg)
{
	(void)arg;
	setenv("SHUNT_CONFIG", conf_path, 1);
	const struct shunt_config *c = shunt__config();
	ASSERT_EQ(c->bad_file, 1);
	ASSERT_UEQ(c->ring_size, 2u << 20); /* the default: the file's 1m is not used */
	ASSERT_EQ(allowed(in4("127.0.0.1", 80)), 0);
	ASSERT_EQ(shunt__peer_allowed(4242), 0);
	exit(0);
}

static void child_missing_file(void *arg)
{
	(void)arg;
	setenv("SHUNT_CONFIG", "/nonexistent/shunt.conf", 1);
	ASSERT_EQ(shunt__config()->bad_file, 1);
	exit(0);
}

/* A config file another user could have written is no config: a FIFO
 * (whose open waited for a writer, in every program's constructor), a file
 * others may write, one of another user's. */
static void child_not_ours(void *arg)
{
	(void)arg;
	setenv("SHUNT_CONFIG", conf_path, 1);
	const struct shunt_config *c = shunt__config();
	ASSERT_EQ(c->bad_file, 1);
	ASSERT_EQ(shunt__peer_allowed(4242), 0);
	exit(0);
}

/* The log: not into a FIFO with no reader (the open waited), nor through
 * another user's symlink into a file of ours. */
static void child_log_fifo(void *arg)
{
	(void)arg;
	unsetenv("SHUNT_LOG");
	ASSERT(shunt__log_setup("info", conf_path) < 0);
	exit(0);
}

static void child_log_link(void *arg)
{
	const char *target = arg;
	struct stat st;

	unsetenv("SHUNT_LOG");
	ASSERT_EQ(shunt__log_setup("info", conf_path), -EPERM);
	ASSERT_SYS(stat(target, &st));
	ASSERT_EQ(st.st_size, 0);
	exit(0);
}

static void test_not_ours(void)
{
	char target[300];

	snprintf(conf_path, sizeof(conf_path), "/tmp/t_config.%d.fifo", (int)getpid());
	ASSERT_SYS(mkfifo(conf_path, 0600));
	test_wait_ok(test_fork(child_not_ours, NULL), 5);
	test_wait_ok(test_fork(child_log_fifo, NULL), 5);
	unlink(conf_path);
	snprintf(conf_path, sizeof(conf_path), "/tmp/t_config.%d.conf", (int)getpid());
	write_conf("allow-user 4242\n");
	ASSERT_SYS(chmod(conf_path, 0666));
	test_wait_ok(test_fork(child_not_ours, NULL), 5);
	if (geteuid() == 0) {
		ASSERT_SYS(chmod(conf_path, 0644));
		ASSERT_SYS(chown(conf_path, 65534, 65534));
		test_wait_ok(test_fork(child_not_ours, NULL), 5);
		/* Another user's link to a file of ours. */
		snprintf(target, sizeof(target), "%s.target", conf_path);
		unlink(conf_path);
		int fd = open(target, O_CREAT | O_WRONLY | O_TRUNC, 0600);
		ASSERT_SYS(fd);
		close(fd);
		ASSERT_SYS(symlink(target, conf_path));
		ASSERT_SYS(lchown(conf_path, 65534, 65534));
		test_wait_ok(test_fork(child_log_link, target), 5);
		unlink(target);
	} else {
		test_log("not root: another user's file and symlink are not made");
	}
	unlink(conf_path);
	test_log("a FIFO, a file others may write, another user's file and link: refused");
}

/* A full FIFO, ours, held open by its only reader (the test), which never
 * reads: 1000 debug lines are dropped, not waited on (the log fd lost
 * O_NONBLOCK after its open, and the first line waited until killed). */
static void child_log_full(void *arg)
{
	(void)arg;
	unsetenv("SHUNT_LOG");
	ASSERT_OK(shunt__log_setup("debug", conf_path));
	for (int i = 0; i < 1000; i++)
		log_debug("line %d of a log nobody reads", i);
	exit(0);
}

/* Another user's file or FIFO is not ours to log to: refused, nothing in it. */
static void child_log_theirs(void *arg)
{
	struct stat st;

	(void)arg;
	unsetenv("SHUNT_LOG");
	/* EACCES where fs.protected_regular or protected_fifos refuse first. */
	int rc = shunt__log_setup("info", conf_path);
	ASSERT_MSG(rc == -EPERM || rc == -EACCES, "log_setup: %s", test_errname(-rc));
	shunt__log(SHUNT_LOG_INFO, "a line for nobody else");
	ASSERT_SYS(stat(conf_path, &st));
	ASSERT_EQ(st.st_size, 0);
	exit(0);
}

/* Another user's file in a directory not open to all (made for us, as a
 * test harness makes one for a server of another user): taken. */
static void child_log_given(void *arg)
{
	struct stat st;

	(void)arg;
	unsetenv("SHUNT_LOG");
	ASSERT_OK(shunt__log_setup("info", conf_path));
	shunt__log(SHUNT_LOG_INFO, "a line for the file's owner");
	ASSERT_SYS(stat(conf_path, &st));
	ASSERT(st.st_size > 0);
	exit(0);
}

/* An empty file at conf_path, uid 1001's. */
static void their_file(void)
{
	int fd = open(conf_path, O_CREAT | O_EXCL | O_WRONLY, 0666);

	ASSERT_SYS(fd);
	close(fd);
	ASSERT_SYS(chown(conf_path, 1001, 1001));
}

static int fill_fifo(const char *path)
{
	static char junk[4096];
	int fd = open(path, O_RDWR | O_NONBLOCK);

	ASSERT_SYS(fd);
	while (write(fd, junk, sizeof(junk)) > 0)
		;
	ASSERT_EQ(errno, EAGAIN);
	return fd;
}

static void test_log_targets(void)
{
	snprintf(conf_path, sizeof(conf_path), "/tmp/t_config.%d.log", (int)getpid());
	ASSERT_SYS(mkfifo(conf_path, 0600));
	int fd = fill_fifo(conf_path);
	test_wait_ok(test_fork(child_log_full, NULL), 5);
	if (geteuid() == 0) {
		ASSERT_SYS(chown(conf_path, 1001, 1001));
		test_wait_ok(test_fork(child_log_theirs, NULL), 5);
	}
	close(fd);
	unlink(conf_path);
	if (geteuid() != 0) {
		test_log("not root: another user's log file and FIFO are not made");
		test_log("a full FIFO as the log: lines dropped, no wait");
		return;
	}
	their_file();
	test_wait_ok(test_fork(child_log_theirs, NULL), 5);
	unlink(conf_path);
	char dir[] = "/tmp/t_config.XXXXXX";
	ASSERT_NOT_NULL(mkdtemp(dir));
	snprintf(conf_path, sizeof(conf_path), "%s/given.log", dir);
	their_file();
	test_wait_ok(test_fork(child_log_given, NULL), 5);
	unlink(conf_path);
	rmdir(dir);
	test_log("a full FIFO as the log: lines dropped, no wait; another user's "
		 "file and FIFO in /tmp refused, left empty; one in a directory of "
		 "ours taken");
}

static void test_files(void)
{
	snprintf(conf_path, sizeof(conf_path), "/tmp/t_config.%d.conf", (int)getpid());
	write_conf("ring-size 1m\nspin-us 7\nallow-user 4242\n"
		   "bypass port 22 6000-6010\nbypass addr 10.0.0.0/12 fd00::/32\n");
	test_wait_ok(test_fork(child_rules, NULL), 10);
	write_conf("ring-size 1m\nallow-user 4242\nspin-us much\n");
	test_wait_ok(test_fork(child_bad_file, NULL), 10);
	test_wait_ok(test_fork(child_missing_file, NULL), 10);
	unlink(conf_path);
	test_log("file < environment, rules, allowed users, bad and missing files ok");
}

int main(void)
{
	test_init("t_config");
	test_watchdog(60);
	test_good_file();
	test_bad_lines();
	test_files();
	test_not_ours();
	test_log_targets();
	test_log("pass");
	return TEST_PASS;
}
