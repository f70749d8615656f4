/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine metadata: pools and volumes through the public API — create,
 * snapshot, delete, rename, resize, blobs, lookups by id, name and blob,
 * batches that fail as a whole, ids never reused, persistence across
 * reopen, and a clean check after every change.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/log.h"

/*
 * The public structs' sizes are libthinvol.so.0's ABI: a program built
 * against an older thinvol.h passes structs of these sizes, and the
 * library writes whole structs.  A change here needs a new soname (and
 * version node in libthinvol.map); new information goes into a new
 * function instead (tv_pool_fs_flags).  Sizes on x86_64 and other LP64
 * targets.
 */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(struct tv_pool_info) == 264, "ABI: tv_pool_info");
_Static_assert(sizeof(struct tv_vol_info) == 200, "ABI: tv_vol_info");
_Static_assert(sizeof(struct tv_op) == 64, "ABI: tv_op");
_Static_assert(sizeof(struct tv_extent) == 16, "ABI: tv_extent");
_Static_assert(sizeof(struct tv_check_report) == 72, "ABI: tv_check_report");
_Static_assert(sizeof(struct tv_pool_create_opts) == 24,
	       "ABI: tv_pool_create_opts");
_Static_assert(sizeof(struct tv_pool_open_opts) == 24,
	       "ABI: tv_pool_open_opts");
#endif

static void clean(struct tv_pool *p)
{
	struct tv_check_report rep;

	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
}

static uint64_t nr_vols(struct tv_pool *p)
{
	struct tv_pool_info pi;

	CHECK_OK(tv_pool_info(p, &pi));
	return pi.nr_volumes;
}

int main(void)
{
	char dir[] = "/tmp/tv-engine-XXXXXX", path[256];
	struct tv_pool_create_opts co = {.size = 256 << 20, .blob_size = 100};
	struct tv_pool *p, *p2;
	struct tv_vol_info vi, list[8];
	uint8_t blob[100], b2[100];
	uint64_t a, b, s, ids[8], cur, id;
	struct tv_op ops[3];
	size_t failed;
	int n;

	volume_id_clock = NULL; /* plain counter: ids 1, 2, ... */
	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);

	CHECK_ERR(
	    tv_pool_create(path, &(struct tv_pool_create_opts){.size = 0}),
	    -EINVAL);
	CHECK_ERR(tv_pool_create(
		      path, &(struct tv_pool_create_opts){.size = 1 << 30,
							  .block_size = 3000}),
		  -EINVAL);
	CHECK_ERR(tv_pool_create(
		      path, &(struct tv_pool_create_opts){.size = 1 << 30,
							  .blob_size = 5000}),
		  -EINVAL);
	CHECK(access(path, F_OK) != 0);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_ERR(tv_pool_create(path, &co), -EEXIST);
	CHECK(strstr(tv_last_error(), "already holds a thinvol pool"));

	CHECK_OK(tv_pool_open(path, NULL, &p));
	/* a second opener is refused, naming the holder */
	CHECK_ERR(tv_pool_open(path, NULL, &p2), -EBUSY);
	CHECK(strstr(tv_last_error(), "in use by"));

	/* create, lookups */
	memset(blob, 0xab, sizeof(blob));
	CHECK_OK(tv_vol_create(p, "alpha", 1 << 30, blob, sizeof(blob), &a));
	CHECK_EQ(a, 1);
	CHECK_OK(tv_vol_create(p, "beta", 4096, NULL, 0, &b));
	CHECK_EQ(b, 2);
	clean(p);
	CHECK_OK(tv_vol_resolve(p, "alpha", &id));
	CHECK_EQ(id, a);
	CHECK_OK(tv_vol_resolve(p, "#2", &id));
	CHECK_EQ(id, b);
	CHECK_ERR(tv_vol_resolve(p, "gamma", &id), -ENOENT);
	CHECK_ERR(tv_vol_resolve(p, "#99", &id), -ENOENT);
	CHECK_ERR(tv_vol_resolve(p, "#x", &id), -EINVAL);
	CHECK_OK(tv_vol_info(p, a, &vi));
	CHECK(!strcmp(vi.name, "alpha"));
	CHECK_EQ(vi.size, 1 << 30);
	CHECK_OK(tv_vol_get_blob(p, a, b2, sizeof(b2)));
	CHECK(!memcmp(b2, blob, sizeof(blob)));
	CHECK_OK(tv_vol_get_blob(p, b, b2, sizeof(b2)));
	for (size_t i = 0; i < sizeof(b2); i++)
		CHECK_EQ(b2[i], 0);

	/* bad input: nothing changes */
	CHECK_ERR(tv_vol_create(p, "alpha", 4096, NULL, 0, &id), -EEXIST);
	CHECK_ERR(tv_vol_create(p, "x", 0, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "x", 1000, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "x", 1ull << 62, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "x", 4096, blob, 99, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "a/b", 4096, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "#1", 4096, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "", 4096, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "tab\there", 4096, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "bad\xc3", 4096, NULL, 0, &id), -EINVAL);
	CHECK_ERR(tv_vol_create(p, "over\xc0\xaf", 4096, NULL, 0, &id),
		  -EINVAL);
	{
		char longname[200];
		memset(longname, 'n', sizeof(longname));
		longname[129] = 0;
		CHECK_ERR(tv_vol_create(p, longname, 4096, NULL, 0, &id),
			  -EINVAL);
		longname[128] = 0;
		CHECK_OK(tv_vol_create(p, longname, 4096, NULL, 0, &id));
		CHECK_OK(tv_vol_delete(p, id));
	}
	CHECK_OK(tv_vol_create(p, "üñí€😀", 4096, NULL, 0, &id));
	CHECK_OK(tv_vol_delete(p, id));
	CHECK_EQ(nr_vols(p), 2);
	clean(p);

	/* snapshot, rename, resize, set-blob */
	CHECK_OK(
	    tv_vol_snapshot(p, a, "alpha-snap", TV_VOL_READ_ONLY, NULL, 0, &s));
	CHECK_OK(tv_vol_info(p, s, &vi));
	CHECK_EQ(vi.parent, a);
	CHECK_EQ(vi.flags, TV_VOL_READ_ONLY);
	CHECK_EQ(vi.size, 1 << 30);
	CHECK_ERR(tv_vol_snapshot(p, 999, "z", 0, NULL, 0, &id), -ENOENT);
	CHECK_OK(tv_vol_rename(p, b, "gamma"));
	CHECK_ERR(tv_vol_resolve(p, "beta", &id), -ENOENT);
	CHECK_OK(tv_vol_resolve(p, "gamma", &id));
	CHECK_ERR(tv_vol_rename(p, b, "alpha"), -EEXIST);
	CHECK_OK(tv_vol_resize(p, b, 1 << 20));
	CHECK_OK(tv_vol_info(p, b, &vi));
	CHECK_EQ(vi.size, 1 << 20);
	memset(b2, 0xab, sizeof(b2));
	b2[99] = 1;
	CHECK_OK(tv_vol_set_blob(p, b, b2, sizeof(b2)));
	clean(p);

	/* find by blob: exact, prefix (short and longer than the index) */
	n = tv_vol_find_blob(p, blob, sizeof(blob), ids, 8);
	CHECK_EQ(n, 1);
	CHECK_EQ(ids[0], a);
	n = tv_vol_find_blob(p, blob, 99, ids, 8);
	CHECK_EQ(n, 2);
	CHECK_EQ(ids[0], a);
	CHECK_EQ(ids[1], b);
	n = tv_vol_find_blob(p, blob, 4, ids, 8);
	CHECK_EQ(n, 2);
	memset(b2, 0, sizeof(b2));
	n = tv_vol_find_blob(p, b2, sizeof(b2), ids, 8);
	CHECK_EQ(n, 1);
	CHECK_EQ(ids[0], s);
	CHECK_ERR(tv_vol_find_blob(p, blob, 101, ids, 8), -EINVAL);

	/* a batch with one bad op changes nothing */
	memset(ops, 0, sizeof(ops));
	ops[0] =
	    (struct tv_op){.kind = TV_OP_CREATE, .name = "d1", .size = 8192};
	ops[1] = (struct tv_op){.kind = TV_OP_DELETE, .id = a};
	ops[2] =
	    (struct tv_op){.kind = TV_OP_CREATE, .name = "gamma", .size = 8192};
	CHECK_ERR(tv_batch(p, ops, 3, &failed), -EEXIST);
	CHECK_EQ(failed, 2);
	CHECK_ERR(tv_vol_resolve(p, "d1", &id), -ENOENT);
	CHECK_OK(tv_vol_info(p, a, &vi));
	CHECK_EQ(nr_vols(p), 3);
	clean(p);
	ops[2].name = "d2";
	CHECK_OK(tv_batch(p, ops, 3, &failed));
	CHECK_ERR(tv_vol_info(p, a, &vi), -ENOENT);
	/* the failed batch's ids were not consumed... */
	CHECK_EQ(ops[0].result_id, 6);
	CHECK_EQ(ops[2].result_id, 7);
	clean(p);

	/* list in id order, paged */
	cur = 0;
	n = tv_vol_list(p, &cur, list, 2);
	CHECK_EQ(n, 2);
	CHECK_EQ(list[0].id, b);
	CHECK_EQ(list[1].id, s);
	n = tv_vol_list(p, &cur, list, 8);
	CHECK_EQ(n, 2);
	CHECK_EQ(list[0].id, 6);
	CHECK_EQ(list[1].id, 7);
	CHECK_EQ(tv_vol_list(p, &cur, list, 8), 0);
	CHECK_OK(tv_pool_close(p));

	/* persistence; ids are never reused, even after deletes */
	CHECK_OK(tv_pool_open(path, NULL, &p));
	CHECK_EQ(nr_vols(p), 4);
	CHECK_OK(tv_vol_resolve(p, "alpha-snap", &id));
	CHECK_EQ(id, s);
	CHECK_OK(tv_vol_delete(p, 7));
	CHECK_OK(tv_pool_close(p));
	CHECK_OK(tv_pool_open(path, NULL, &p));
	CHECK_OK(tv_vol_create(p, "d2", 4096, NULL, 0, &id));
	CHECK_EQ(id, 8);
	clean(p);
	{
		struct tv_pool_info pi;
		CHECK_OK(tv_pool_info(p, &pi));
		CHECK_EQ(pi.next_id, 9);
		CHECK_EQ(pi.blob_size, 100);
		CHECK_EQ(pi.state, TV_POOL_RW);
	}
	/* grow the pool */
	CHECK_OK(tv_pool_resize(p, 512 << 20));
	CHECK_ERR(tv_pool_resize(p, 128 << 20), -EINVAL);
	CHECK_OK(tv_pool_close(p));

	/* read-only open: changes refused, state says so */
	CHECK_OK(tv_pool_open(
	    path, &(struct tv_pool_open_opts){.read_only = true}, &p));
	CHECK_ERR(tv_vol_create(p, "ro", 4096, NULL, 0, &id), -EROFS);
	{
		struct tv_pool_info pi;
		CHECK_OK(tv_pool_info(p, &pi));
		CHECK_EQ(pi.state, TV_POOL_READ_ONLY);
		CHECK_EQ(pi.size, (512 << 20) - 65536);
	}
	CHECK_OK(tv_pool_close(p));

	/* what the filesystem under the pool is worth a warning for, as the
	 * device found it; and the daemon's view (thin-ext.h) */
	{
		struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
		struct io_dev *mem;

		CHECK_OK(io_mem_create(32 << 20, &mem));
		CHECK_OK(pool_format_dev(
		    mem, &(struct tv_pool_create_opts){.block_size = 8192,
						       .blob_size = -1}));
		CHECK_OK(pool_open_dev(mem, true, "memory pool", &oo, &p));
		CHECK(pool_dev(p) == mem);
		CHECK(!strcmp(pool_name(p), "memory pool"));
		CHECK_EQ(pool_block_size(p), 8192);
		CHECK_EQ(tv_pool_fs_flags(p), 0);
		mem->flags |= IO_DEV_FS_NO_JOURNAL;
		CHECK_EQ(tv_pool_fs_flags(p), TV_POOL_FS_NO_JOURNAL);
		mem->flags |= IO_DEV_FS_COW;
		CHECK_EQ(tv_pool_fs_flags(p),
			 TV_POOL_FS_NO_JOURNAL | TV_POOL_FS_COW);
		mem->flags &= ~IO_DEV_FS_NO_JOURNAL;
		CHECK_EQ(tv_pool_fs_flags(p), TV_POOL_FS_COW);
		CHECK_OK(tv_pool_close(p));
	}

	unlink(path);
	rmdir(dir);
	printf("test-engine-meta: ok\n");
	return 0;
}
