/*
 * fuzz_config.c - the config file parser (src/base/config.c) on any text.
 *
 * A config file is written by a user or an administrator and read inside
 * every program the library runs in: whatever it holds, the parser must
 * refuse it with a message or accept it, never read or write out of
 * bounds, and leave a config whose values are within their ranges.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "seg.h"

static void check_sane(const struct shunt_config *c)
{
	if (c->ring_size && shunt_seg_check_size(c->ring_size) < 0)
		abort(); /* a ring size is a usable one, or none */
	if (c->n_users > SHUNT_MAX_USERS || c->n_rules > SHUNT_MAX_RULES)
		abort();
	if (memchr(c->dir, '\0', sizeof(c->dir)) == NULL)
		abort(); /* the directory is always a terminated string */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct shunt_config defaults;
	struct shunt_config c = defaults;
	char *text = malloc(size + 1);

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	shunt__config_parse(&c, "fuzz.conf", text);
	check_sane(&c);
	free(text);
	return 0;
}
