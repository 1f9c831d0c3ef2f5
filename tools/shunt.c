/*
 * shunt.c - the `shunt` command: a table of subcommands and their dispatch.
 *
 * To add a subcommand, write `int foo_main(int argc, char **argv)` (argv[0]
 * is the subcommand's name; exit status 0 ok, 1 error, 2 bad usage), declare
 * it in a header, and add a line to `commands` below.
 */
#include <stdio.h>
#include <string.h>

#include <shunt.h>

#include "bench.h"
#include "cmds.h"

static int help_main(int argc, char **argv);
static int version_main(int argc, char **argv);

struct command {
	const char *name;
	int (*main)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "bench", bench_main, "measure shunt against memcpy, AF_UNIX and TCP" },
	{ "help", help_main, "show this text, or a command's: shunt help bench" },
	{ "run", run_main, "run a program with its TCP connections accelerated" },
	{ "stat", stat_main, "list the live accelerated connections on this host" },
	{ "version", version_main, "print the version" },
	{ "vm", vm_main, "make a shared region for virtual machines; show one" },
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: shunt COMMAND [options]\n\n"
		"Carry the bytes of a connection between two processes through\n"
		"shared-memory rings.\n\nCommands:\n");
	for (size_t i = 0; i < NCOMMANDS; i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nRun 'shunt COMMAND --help' for a command's options.\n");
}

/* `shunt help` or `shunt help COMMAND` (the latter is COMMAND --help). */
static int help_main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stdout);
		return 0;
	}
	const struct command *c = find_command(argv[1]);
	if (!c || c->main == help_main) {
		if (!c) {
			fprintf(stderr, "shunt help: unknown command '%s'\n", argv[1]);
			return 2;
		}
		usage(stdout);
		return 0;
	}
	char *args[] = { argv[1], "--help", NULL };
	return c->main(2, args);
}

static int version_main(int argc, char **argv)
{
	(void)argv;
	if (argc > 1) {
		fprintf(stderr, "shunt version: takes no arguments\n");
		return 2;
	}
	printf("shunt %d.%d\n", SHUNT_VERSION_MAJOR, SHUNT_VERSION_MINOR);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	/* The usual spellings of help and version work as well. */
	const char *name = argv[1];
	if (!strcmp(name, "-h") || !strcmp(name, "--help"))
		name = "help";
	else if (!strcmp(name, "-V") || !strcmp(name, "--version"))
		name = "version";
	const struct command *c = find_command(name);
	if (!c) {
		fprintf(stderr, "shunt: unknown command '%s'\nTry 'shunt help'.\n", argv[1]);
		return 2;
	}
	return c->main(argc - 1, argv + 1);
}
