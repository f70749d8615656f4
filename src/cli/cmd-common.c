/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * cmd-common.c - what the subcommands share above the pool calls: the
 * preamble and the end of a command on a pool (open it, resolve its VOL
 * argument; report the last call's failure, close it), and the volume
 * table and JSON that list, show and find print.
 *
 * Below client.c's cli_pool and cli_vol calls, above nothing but the
 * cmd-*.c files (the call graph is in cli-util.c).
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/parse.h"
#include "util/json.h"

/* ---- a command on a pool ---- */

int cli_resolve(struct cli_pool *pool, const char *ctx, const char *spec,
		uint64_t *id)
{
	int r = cli_vol_resolve(pool, spec, id);

	return r < 0 ? cli_fail(r, "%s", ctx) : 0;
}

int cli_open_vol(const char *path, enum cli_open_mode mode, const char *ctx,
		 const char *vol, struct cli_pool **pool,
		 struct tv_pool_info *info, uint64_t *id)
{
	int r = cli_open(path, mode, pool, info);

	if (r)
		return r;
	r = cli_resolve(*pool, ctx, vol, id);
	if (r)
		return cli_close(*pool, path, r);
	return 0;
}

int cli_finish(struct cli_pool *pool, const char *path, const char *ctx, int r)
{
	if (r < 0)
		r = cli_fail(r, "%s", ctx);
	return cli_close(pool, path, r);
}

/* ---- volume output ---- */

static void put_time(FILE *f, uint64_t ns)
{
	time_t t = (time_t) (ns / 1000000000u);
	struct tm tm;
	char buf[40];

	if (!gmtime_r(&t, &tm) ||
	    !strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, sizeof(buf), "?");
	fputs(buf, f);
}

int cli_put_vol_json(FILE *f, struct cli_pool *pool, uint32_t blob_size,
		     const struct tv_vol_info *v, const uint64_t *exclusive)
{
	uint8_t blob[TV_BLOB_MAX];
	char hex[2 * TV_BLOB_MAX + 1], uuid[37];
	int r;

	r = cli_vol_get_blob(pool, v->id, blob, blob_size);
	if (r < 0)
		return r;
	fmt_hex(blob, blob_size, hex);
	fmt_uuid(v->uuid, uuid);
	fprintf(f, "{\"id\":%" PRIu64 ",\"name\":", v->id);
	json_put_string(f, v->name, strlen(v->name));
	fprintf(f, ",\"uuid\":\"%s\",\"size\":%" PRIu64 ",\"mapped\":%" PRIu64,
		uuid, v->size, v->mapped);
	if (exclusive)
		fprintf(f, ",\"exclusive\":%" PRIu64, *exclusive);
	fputs(",\"parent\":", f);
	if (v->parent)
		fprintf(f, "%" PRIu64, v->parent);
	else
		fputs("null", f);
	fprintf(f, ",\"read_only\":%s,\"flags\":[%s],\"ctime\":\"",
		v->flags & TV_VOL_READ_ONLY ? "true" : "false",
		v->flags & TV_VOL_READ_ONLY ? "\"read-only\"" : "");
	put_time(f, v->ctime_ns);
	fprintf(f, "\",\"ctime_ns\":%" PRIu64 ",\"blob\":\"%s\"}", v->ctime_ns,
		hex);
	return 0;
}

/* Ids are at least the microseconds since 2025 (14 digits until 2028, 15
 * until 2056): the id columns fit them with the '#'. */
#define ID_COLUMN 16

void cli_put_vol_header(FILE *f)
{
	fprintf(f, "%*s  %-20s  %10s  %10s  %*s  %s\n", ID_COLUMN, "ID", "NAME",
		"SIZE", "MAPPED", ID_COLUMN, "PARENT", "FLAGS");
}

void cli_put_vol_row(FILE *f, const struct tv_vol_info *v)
{
	char id[24], parent[24], size[32], mapped[32];

	snprintf(id, sizeof(id), "#%" PRIu64, v->id);
	if (v->parent)
		snprintf(parent, sizeof(parent), "#%" PRIu64, v->parent);
	else
		snprintf(parent, sizeof(parent), "-");
	fprintf(f, "%*s  %-20s  %10s  %10s  %*s  %s\n", ID_COLUMN, id, v->name,
		fmt_size(v->size, size, sizeof(size)),
		fmt_size(v->mapped, mapped, sizeof(mapped)), ID_COLUMN, parent,
		v->flags & TV_VOL_READ_ONLY ? "ro" : "-");
}
