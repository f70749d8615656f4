/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Volume ids: never reused, also after a restore of an older copy of the
 * pool file.  A new id is max(next_id, volume_id_clock()): the counter
 * keeps ids increasing whatever the clock does, and the clock (the
 * microseconds since 2025-01-01 UTC) puts ids handed out after a restore
 * above the ones the lost copy handed out.  Here the clock is a variable
 * the test moves; the last part uses the real one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/log.h"

static uint64_t fake_now;

static uint64_t fake_clock(void)
{
	return fake_now;
}

static uint64_t create(struct tv_pool *p, const char *name)
{
	uint64_t id;

	CHECK_OK(tv_vol_create(p, name, 1 << 20, NULL, 0, &id));
	return id;
}

static uint64_t next_id(struct tv_pool *p)
{
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_info(p, &pi));
	return pi.next_id;
}

/* The real clock in id units, computed here independently of the engine. */
static uint64_t now_us_since_epoch(void)
{
	struct timespec ts;

	CHECK(clock_gettime(CLOCK_REALTIME, &ts) == 0);
	return ((uint64_t) ts.tv_sec - TV_ID_EPOCH) * 1000000ull +
	       (uint64_t) ts.tv_nsec / 1000;
}

static void clean(struct tv_pool *p)
{
	struct tv_check_report rep;

	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
}

/* Copy a (closed) pool file: the backup, and later the restore. */
static void copy_file(const char *from, const char *to)
{
	static char buf[1 << 16];
	int in = open(from, O_RDONLY), out;
	ssize_t n;

	CHECK(in >= 0);
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		CHECK(write(out, buf, (size_t) n) == n);
	CHECK(n == 0);
	CHECK(close(in) == 0);
	CHECK(close(out) == 0);
}

int main(void)
{
	struct tv_pool_create_opts co = {.size = 64 << 20, .blob_size = 0};
	char path[] = "/tmp/tv-ids-XXXXXX", backup[64];
	struct tv_op ops[100];
	char names[100][16];
	uint64_t a, b, c, d, id, last;
	struct tv_pool *p;
	int fd = mkstemp(path);

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	CHECK(fd >= 0);
	close(fd);
	unlink(path);
	snprintf(backup, sizeof(backup), "%s.backup", path);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, NULL, &p));
	volume_id_clock = fake_clock;

	/* a clock before the epoch (0) gives no floor: the counter alone */
	fake_now = 0;
	CHECK_EQ(next_id(p), 1);
	CHECK_EQ(create(p, "c1"), 1);
	CHECK_EQ(create(p, "c2"), 2);

	/* the clock ahead of the counter: ids jump to it, then count on
	 * while it stands still (faster than one per microsecond) */
	fake_now = 1000000;
	a = create(p, "a");
	CHECK_EQ(a, 1000000);
	b = create(p, "b");
	CHECK_EQ(b, 1000001);
	CHECK_EQ(next_id(p), 1000002);

	/* the clock going back changes nothing: ids only grow */
	fake_now = 10;
	c = create(p, "c");
	CHECK_EQ(c, 1000002);
	CHECK_OK(tv_vol_delete(p, c));
	CHECK_EQ(create(p, "c-again"), 1000003);

	/* a batch: one transaction, ids in order, each at least the clock */
	fake_now = 2000000;
	for (int i = 0; i < 100; i++) {
		snprintf(names[i], sizeof(names[i]), "batch%d", i);
		ops[i] = (struct tv_op){
		    .kind = TV_OP_CREATE, .name = names[i], .size = 1 << 20};
	}
	CHECK_OK(tv_batch(p, ops, 100, NULL));
	for (int i = 0; i < 100; i++)
		CHECK_EQ(ops[i].result_id, 2000000 + (uint64_t) i);
	/* a refused batch uses up no ids */
	ops[1] = ops[0];
	CHECK_ERR(tv_batch(p, ops, 2, NULL), -EEXIST);
	CHECK_EQ(next_id(p), 2000100);
	clean(p);

	/* a backup: a copy of the closed pool file */
	CHECK_OK(tv_pool_close(p));
	copy_file(path, backup);

	/* after it, ids up to 3000049 are handed out ... */
	CHECK_OK(tv_pool_open(path, NULL, &p));
	fake_now = 3000000;
	last = 0;
	for (int i = 0; i < 50; i++) {
		char name[16];

		snprintf(name, sizeof(name), "after%d", i);
		id = create(p, name);
		CHECK(id > last);
		last = id;
	}
	CHECK_EQ(last, 3000049);
	CHECK_OK(tv_pool_close(p));

	/* ... then the backup is restored: its counter is back at 2000100,
	 * but the clock has moved on (here 3000050 µs since the epoch), so
	 * none of 3000000 .. 3000049 comes back */
	copy_file(backup, path);
	CHECK_OK(tv_pool_open(path, NULL, &p));
	clean(p);
	CHECK_EQ(next_id(p), 2000100);
	CHECK_ERR(tv_vol_resolve(p, "after0", &id), -ENOENT);
	fake_now = 3000050;
	d = create(p, "after-restore");
	CHECK(d > last);
	CHECK_EQ(next_id(p), d + 1);
	/* snapshots take ids the same way */
	fake_now = 4000000;
	CHECK_OK(tv_vol_snapshot(p, d, "snap", 0, NULL, 0, &id));
	CHECK_EQ(id, 4000000);
	clean(p);

	/* the real clock: ids are at least the microseconds since
	 * 2025-01-01 at creation, and still increase one by one */
	volume_id_clock = volume_id_clock_real;
	{
		uint64_t before = now_us_since_epoch();

		CHECK(volume_id_clock() >= before);
		id = create(p, "real1");
		CHECK(id >= before);
		last = id;
		for (int i = 0; i < 20; i++) {
			char name[16];

			snprintf(name, sizeof(name), "real%d", i + 2);
			id = create(p, name);
			CHECK(id > last);
			last = id;
		}
		CHECK(last <= now_us_since_epoch() + 20);
	}
	clean(p);
	CHECK_OK(tv_pool_close(p));
	unlink(path);
	unlink(backup);
	printf("test-engine-ids: ok\n");
	return 0;
}
