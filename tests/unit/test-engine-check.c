/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * The pool check sees a volume table and indexes that disagree: a volume
 * missing from the name index, a stray blob index entry, a wrong volume
 * count.  (Damage is made through the engine's internals, committed, and
 * the check must report it.)
 */
#include <errno.h>

#include "io/io.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "util/endian.h"
#include "util/log.h"

static struct tv_pool *fresh(struct io_dev **mem)
{
	struct tv_pool_create_opts co = {.blob_size = 32};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};
	struct tv_pool *p;
	uint8_t blob[32];
	uint64_t id;

	CHECK_OK(io_mem_create(32 << 20, mem));
	CHECK_OK(pool_format_dev(*mem, &co));
	CHECK_OK(pool_open_dev(*mem, false, "mem", &oo, &p));
	for (int i = 0; i < 20; i++) {
		char name[16];
		memset(blob, i, sizeof(blob));
		snprintf(name, sizeof(name), "v%d", i);
		CHECK_OK(tv_vol_create(p, name, 1 << 20, blob, 32, &id));
	}
	return p;
}

static bool is_clean(struct tv_pool *p)
{
	struct tv_check_report rep;

	CHECK_OK(tv_pool_check(p, getenv("V") ? stderr : NULL, &rep));
	return rep.clean;
}

int main(void)
{
	struct io_dev *mem;
	struct tv_pool *p;
	uint8_t k[BTREE_MAX_KEY];
	struct btree_cursor c;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);

	/* a volume missing from the name index */
	p = fresh(&mem);
	CHECK(is_clean(p));
	pthread_mutex_lock(&p->meta_lock);
	CHECK_OK(
	    btree_cursor_seek(&p->names, tm_root(p->tm, SLOT_NAMES), NULL, &c));
	memcpy(k, btree_cursor_key(&c), 16);
	btree_cursor_close(&c);
	CHECK_OK(btree_remove(&p->names, tm_root(p->tm, SLOT_NAMES), k, NULL));
	p->dirty = true;
	pthread_mutex_unlock(&p->meta_lock);
	CHECK(!is_clean(p));
	CHECK_OK(tv_pool_close(p));
	io_close(mem);

	/* a blob index entry that matches no volume's blob */
	p = fresh(&mem);
	pthread_mutex_lock(&p->meta_lock);
	memset(k, 0x77, p->blobidx_prefix);
	put_be64(k + p->blobidx_prefix, 3);
	CHECK_OK(btree_insert(&p->blobidx, tm_root(p->tm, SLOT_BLOBIDX), k, k));
	p->dirty = true;
	pthread_mutex_unlock(&p->meta_lock);
	CHECK(!is_clean(p));
	CHECK_OK(tv_pool_close(p));
	io_close(mem);

	/* the volume count is wrong */
	p = fresh(&mem);
	pthread_mutex_lock(&p->meta_lock);
	pool_user(p)->nr_volumes = cpu_to_le64(19);
	p->dirty = true;
	pthread_mutex_unlock(&p->meta_lock);
	CHECK(!is_clean(p));
	CHECK_OK(tv_pool_close(p));
	io_close(mem);

	printf("test-engine-check: ok\n");
	return 0;
}
