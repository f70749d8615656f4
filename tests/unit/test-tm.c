/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Transaction manager: format and open, alternating superblocks, commit and
 * abort, poisoning, read-only after a failed superblock write, read-only
 * opens, geometry checks.
 */
#include <errno.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "pdata/btree.h"
#include "pdata/check.h"
#include "pdata/sm.h"
#include "pdata/tm.h"
#include "tcheck.h"
#include "tquiet.h"
#include "util/endian.h"
#include "util/log.h"

static void info_for(struct tm *tm, struct btree_info *info)
{
	memset(info, 0, sizeof(*info));
	info->tm = tm;
	info->tag = 0x54534554;
	info->key_size = 8;
	info->value.size = 8;
}

static void put_n(struct tm *tm, unsigned int slot, uint64_t from, uint64_t n)
{
	struct btree_info info;
	uint8_t k[8], v[8];

	info_for(tm, &info);
	for (uint64_t i = from; i < from + n; i++) {
		put_be64(k, i);
		put_le64(v, i * 3);
		CHECK_OK(btree_put(&info, tm_root(tm, slot), k, v, NULL));
	}
}

static uint64_t count(struct tm *tm, unsigned int slot)
{
	struct btree_info info;
	uint64_t n;

	info_for(tm, &info);
	CHECK_OK(btree_count(&info, tm_root(tm, slot), &n));
	return n;
}

/* A getrandom that always fails, as without entropy or under a seccomp
 * filter: node generations come from the fallback. */
static ssize_t no_random(void *buf, size_t len, unsigned int flags)
{
	(void) buf;
	(void) len;
	(void) flags;
	errno = ENOSYS;
	return -1;
}

/*
 * An aborted attempt and its retry have the same txn; their nodes must
 * still carry different generations, or a stale node the aborted attempt
 * wrote would pass the parent's check in place of one whose write was
 * lost.  Also when getrandom fails.
 */
static void gen_per_attempt(struct io_dev *mem)
{
	struct tm *tm;
	uint64_t txn, gen[4];

	tm_set_getrandom(no_random);
	CHECK_OK(tm_format(mem, NULL));
	CHECK_OK(tm_open(mem, NULL, &tm));
	txn = tm_txn(tm);
	for (int i = 0; i < 4; i++) {
		put_n(tm, 0, 0, 10);
		gen[i] = tm_root(tm, 0)->gen;
		CHECK_EQ(gen[i] >> TM_GEN_RAND_BITS, txn);
		CHECK_OK(tm_abort(tm));
		CHECK_EQ(tm_txn(tm), txn);
		for (int j = 0; j < i; j++)
			CHECK(gen[i] != gen[j]);
	}
	/* the next transaction's nodes: the same rule */
	put_n(tm, 0, 0, 10);
	CHECK_OK(tm_commit(tm));
	CHECK_EQ(tm_root(tm, 0)->gen >> TM_GEN_RAND_BITS, txn);
	tm_close(tm);
	tm_set_getrandom(NULL);
}

int main(void)
{
	struct io_dev *mem, *fdev;
	struct tm *tm;
	uint8_t *img;
	uint8_t save[4096];

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);

	/* geometry is validated */
	CHECK_OK(io_mem_create(64 << 20, &mem));
	CHECK_ERR(tm_format(mem, &(struct tm_format_opts){.block_size = 3000}),
		  -EINVAL);
	CHECK_ERR(tm_format(mem, &(struct tm_format_opts){.block_size = 2048}),
		  -EINVAL);
	CHECK_ERR(
	    tm_format(mem, &(struct tm_format_opts){.block_size = 1u << 31}),
	    -EINVAL);
	CHECK_ERR(
	    tm_format(mem, &(struct tm_format_opts){.block_size = 16 << 20}),
	    -EINVAL); /* only 4 blocks */
	/* an unformatted device does not open */
	CHECK_ERR(tm_open(mem, NULL, &tm), -EUCLEAN);

	CHECK_OK(tm_format(mem, NULL));
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_EQ(tm_committed_txn(tm), 1);
	CHECK_EQ(tm_txn(tm), 2);
	CHECK_EQ(tm_block_size(tm), 64 << 10);
	CHECK_EQ(tm_nr_blocks(tm), 1024);
	CHECK_EQ(tm_first_block(tm), 1);

	/* commit: contents and user bytes survive a reopen */
	put_n(tm, 0, 0, 5000);
	memcpy(tm_user(tm), "hello", 5);
	CHECK_OK(tm_commit(tm));
	CHECK_EQ(tm_committed_txn(tm), 2);
	tm_close(tm);
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_EQ(tm_committed_txn(tm), 2);
	CHECK_EQ(count(tm, 0), 5000);
	CHECK(!memcmp(tm_user(tm), "hello", 5));

	/* abort drops everything since the commit */
	put_n(tm, 0, 5000, 1000);
	put_n(tm, 1, 0, 10);
	memcpy(tm_user(tm), "world", 5);
	CHECK_EQ(count(tm, 0), 6000);
	CHECK_OK(tm_abort(tm));
	CHECK_EQ(count(tm, 0), 5000);
	CHECK_EQ(tm_root(tm, 1)->blocknr, 0);
	CHECK(!memcmp(tm_user(tm), "hello", 5));
	CHECK_EQ(tm_txn(tm), 3);
	put_n(tm, 0, 5000, 10);
	CHECK_OK(tm_commit(tm)); /* txn 3, slot 1 */
	CHECK_EQ(tm_committed_txn(tm), 3);
	tm_close(tm);

	/* superblocks alternate: txn 3 is in slot 1; damage it and the
	 * store opens at txn 2 from slot 0 */
	img = io_mem_data(mem);
	memcpy(save, img + 4096, 4096);
	img[4096 + 100] ^= 0x40;
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_EQ(tm_committed_txn(tm), 2);
	CHECK_EQ(count(tm, 0), 5000);
	tm_close(tm);
	memcpy(img + 4096, save, 4096);
	/* both damaged: no pool */
	img[100] ^= 1;
	img[4096 + 100] ^= 1;
	CHECK_ERR(tm_open(mem, NULL, &tm), -EUCLEAN);
	img[100] ^= 1;
	img[4096 + 100] ^= 1;

	/* the superblock's metadata counters are checked against the space
	 * map (regression: they were never verified) */
	{
		struct tm *t2;
		struct check_report rep;
		uint8_t keep[4096];
		memcpy(keep, img + 4096, 4096);	    /* txn 3 lives in slot 1 */
		put_le64(img + 4096 + 104, 999999); /* meta_nodes */
		bc_seal(img + 4096);
		CHECK_OK(tm_open(mem, NULL, &t2));
		CHECK_OK(check_run(t2, NULL, 0, NULL, 0, &rep));
		CHECK(rep.counter_errors);
		tm_close(t2);
		memcpy(img + 4096, keep, 4096);
	}

	/* read-only open: reads work, changes are refused */
	CHECK_OK(tm_open(mem, &(struct tm_open_opts){.read_only = true}, &tm));
	CHECK_EQ(count(tm, 0), 5010);
	CHECK_ERR(tm_commit(tm), -EROFS);
	{
		struct btree_info info;
		uint8_t k[8] = {0}, v[8] = {0};
		info_for(tm, &info);
		CHECK(btree_put(&info, tm_root(tm, 0), k, v, NULL) < 0);
	}
	tm_close(tm);

	/* an error poisons the transaction until abort */
	CHECK_OK(io_fault_wrap(mem, false, &fdev));
	CHECK_OK(tm_open(fdev, &(struct tm_open_opts){.cache_bytes = 1}, &tm));
	tm_poison(tm, -EIO);
	CHECK_ERR(tm_state(tm), -EIO);
	CHECK_ERR(tm_commit(tm), -EIO);
	CHECK_OK(tm_abort(tm));
	CHECK_OK(tm_state(tm));

	/* a failed node write: poisoned, previous transaction intact */
	put_n(tm, 0, 10000, 2000);
	io_fault_arm(fdev, &(struct io_fault_cfg){.fail_at = 1,
						  .error = -EIO,
						  .op_mask = IO_OP_WRITE});
	CHECK_ERR(tm_commit(tm), -EIO);
	CHECK(!tm_read_only(tm));
	CHECK_ERR(tm_commit(tm), -EIO);
	io_fault_disarm(fdev);
	CHECK_OK(tm_abort(tm));
	CHECK_EQ(count(tm, 0), 5010);
	put_n(tm, 0, 10000, 2000);
	CHECK_OK(tm_commit(tm));
	CHECK_EQ(tm_committed_txn(tm), 4);

	/* a failed flush after the superblock write: read-only until
	 * reopened, and the reopened store is at one of the two txns */
	put_n(tm, 0, 20000, 100);
	{
		uint64_t before = io_fault_count(fdev);
		(void) before;
	}
	io_fault_arm(fdev, &(struct io_fault_cfg){.fail_at = 2,
						  .error = -EIO,
						  .op_mask = IO_OP_FLUSH});
	CHECK_ERR(tm_commit(tm), -EIO);
	CHECK(tm_read_only(tm));
	io_fault_disarm(fdev);
	CHECK_OK(tm_abort(tm));
	CHECK(tm_read_only(tm));
	CHECK(tm_commit(tm) < 0);
	tm_close(tm);
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK(tm_committed_txn(tm) == 4 || tm_committed_txn(tm) == 5);
	CHECK_EQ(count(tm, 0), tm_committed_txn(tm) == 5 ? 7110 : 7010);
	tm_close(tm);
	io_close(fdev);

	/* grow: the device gets bigger, the pool follows */
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_OK(io_resize(mem, 128 << 20));
	CHECK_OK(tm_grow(tm));
	CHECK_EQ(tm_nr_blocks(tm), 2048);
	CHECK_OK(tm_commit(tm));
	tm_close(tm);
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_EQ(tm_nr_blocks(tm), 2048);
	tm_close(tm);
	/* a device shorter than the pool is refused */
	CHECK_OK(io_resize(mem, 100 << 20));
	CHECK_ERR(tm_open(mem, NULL, &tm), -EUCLEAN);

	/* 4 KiB blocks: superblocks take blocks 0 and 1 */
	CHECK_OK(tm_format(mem, &(struct tm_format_opts){.block_size = 4096}));
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_EQ(tm_first_block(tm), 2);
	put_n(tm, 0, 0, 3000);
	CHECK_OK(tm_commit(tm));
	tm_close(tm);
	CHECK_OK(tm_open(mem, NULL, &tm));
	CHECK_EQ(count(tm, 0), 3000);
	tm_close(tm);

	gen_per_attempt(mem);

	io_close(mem);
	printf("test-tm: ok\n");
	return 0;
}
