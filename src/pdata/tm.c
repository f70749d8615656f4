/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * tm.c - transaction manager.  Contract and commit order in tm.h.
 *
 * States of the store:
 *
 *   OPEN --error in a txn--> POISONED --tm_abort--> OPEN
 *     |                                               ^
 *     +--tm_commit ok--------------------------------+
 *     |
 *     +--error writing/flushing the superblock--> IN DOUBT (read-only,
 *                                                 until reopened: rule 4)
 *
 * In memory the superblock is kept twice: "cur" (roots and user bytes the
 * open transaction changes) and "com" (the last committed, restored by
 * abort).
 */
#include "pdata/tm.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "pdata/bc.h"
#include "pdata/sm.h"
#include "util/checked.h"
#include "util/clock.h"
#include "util/crc32c.h"
#include "util/endian.h"
#include "util/log.h"

#define SB_FORMAT_MAGIC	   "thinvol"
#define SB_VERSION	   TM_FORMAT_VERSION
#define DEFAULT_BLOCK_SIZE (64u << 10)
#define DEFAULT_CACHE	   (64u << 20)

struct disk_superblock {
	struct disk_node_header hdr; /* magic PD_MAGIC_SUPER, blocknr 0/1 */
	uint8_t format_magic[8];     /* "thinvol\0" */
	uint32_t version;	     /* le32: SB_VERSION */
	uint32_t node_size;	     /* le32: 4096 */
	uint32_t block_size;	     /* le32: bytes, power of two */
	uint32_t flags;		     /* le32: none defined, must be 0 */
	uint8_t uuid[16];
	uint64_t txn;	      /* le64: == hdr.gen; superblock txn % 2 */
	uint64_t nr_blocks;   /* le64: pool blocks, device size / bs */
	uint64_t first_block; /* le64: first allocatable block */
	uint64_t data_used;   /* le64: blocks with a count (chunks too) */
	uint64_t meta_nodes;  /* le64: metadata nodes in use */
	uint64_t meta_chunks; /* le64: blocks holding metadata */
	struct disk_ref sm_root;
	struct disk_ref roots[TM_NR_ROOTS];
	uint8_t user[TM_USER_BYTES];
	uint8_t reserved[PD_NODE_SIZE - 776];
};
_Static_assert(sizeof(struct disk_superblock) == PD_NODE_SIZE,
	       "superblock is one node");

struct sb_state {
	uint64_t txn;
	uint64_t nr_blocks;
	uint64_t data_used;
	uint64_t meta_nodes;  /* as read; not maintained in memory */
	uint64_t meta_chunks; /* as read */
	struct tm_ref sm_root;
	struct tm_ref roots[TM_NR_ROOTS];
	uint8_t user[TM_USER_BYTES];
};

struct tm {
	struct io_dev *dev;
	struct bc *bc;
	struct sm *sm;
	uint32_t block_size;
	uint64_t first_block;
	uint8_t uuid[16];
	uint64_t pool_tag;
	bool read_only_open;

	struct sb_state cur; /* cur.txn: the open transaction */
	struct sb_state com; /* last committed */

	bool sm_loading; /* sm_open is reading the sm tree (tm_read) */
	int err;	 /* poisons the transaction */
	bool read_only;	 /* in doubt: an error after the superblock
			  * write began (rule 4) */
	/*
	 * Generation stamped on the nodes of the open transaction:
	 * (txn << TM_GEN_RAND_BITS) | random bits, new for every attempt.  A
	 * transaction number is reused after an abort or a crash, so nodes
	 * an abandoned attempt wrote may lie on the device with the same
	 * txn; the random part keeps a lost write of a new node at such a
	 * place from passing the parent's generation check.  gen_seq counts
	 * the attempts of this tm (new_node_gen).
	 */
	uint64_t node_gen;
	uint64_t gen_seq;
	uint64_t share_seq;			/* tm_share_seq */
	uint64_t sb_meta_nodes, sb_meta_chunks; /* as the superblock says */
	/* The slot whose superblock did not validate at open while the
	 * other did (-1: none), until a commit rewrites it. */
	int sb_damaged;
	struct tm_commit_stats cst;
	struct tm_hooks hooks;
};

/* The random source of new_node_gen: getrandom, unless a test replaced
 * it (tm_set_getrandom). */
static ssize_t (*gen_getrandom)(void *, size_t, unsigned int) = getrandom;

void tm_set_getrandom(ssize_t (*fn)(void *buf, size_t len, unsigned int flags))
{
	gen_getrandom = fn ? fn : getrandom;
}

/* splitmix64's finalizer: every input bit moves every output bit. */
static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/*
 * A new generation for the attempt that begins (open, commit, abort).
 * Without getrandom (no entropy yet, a seccomp filter) the random bits
 * come from the monotonic clock, the process id, this tm's address and
 * its attempt counter: an attempt at the txn of an aborted one then still
 * gets other bits (the counter and the clock), and so, most likely, does
 * one in another process after a crash (the pid and the clock).
 * Whatever the source, an attempt never takes the generation of the one
 * before it: that is the aborted attempt whose nodes may be on the device.
 */
static void new_node_gen(struct tm *tm)
{
	uint64_t prev = tm->node_gen, rnd = 0, gen;

	tm->gen_seq++;
	if (gen_getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
		rnd = mix64(clock_mono_ns() ^ (uint64_t) getpid() << 40 ^
			    (uint64_t) (uintptr_t) tm ^
			    tm->gen_seq * 0x9E3779B97F4A7C15ull);
	gen = tm->cur.txn << TM_GEN_RAND_BITS | (rnd & TM_GEN_RAND_MASK);
	if (gen == prev)
		gen = tm->cur.txn << TM_GEN_RAND_BITS |
		      ((rnd + 1) & TM_GEN_RAND_MASK);
	tm->node_gen = gen;
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

static uint64_t first_block_for(uint32_t bs)
{
	return DIV_ROUND_UP(2ull * PD_NODE_SIZE, bs);
}

static void sb_build(const struct tm *tm, const struct sb_state *s,
		     const struct sm_stats *st, struct disk_superblock *sb)
{
	uint64_t slot = s->txn % 2;

	memset(sb, 0, sizeof(*sb));
	sb->hdr.magic = cpu_to_le32(PD_MAGIC_SUPER);
	sb->hdr.blocknr = cpu_to_le64(slot);
	sb->hdr.gen = cpu_to_le64(s->txn);
	sb->hdr.pool_tag = cpu_to_le64(tm->pool_tag);
	memcpy(sb->format_magic, SB_FORMAT_MAGIC, sizeof(SB_FORMAT_MAGIC));
	sb->version = cpu_to_le32(SB_VERSION);
	sb->node_size = cpu_to_le32(PD_NODE_SIZE);
	sb->block_size = cpu_to_le32(tm->block_size);
	memcpy(sb->uuid, tm->uuid, 16);
	sb->txn = cpu_to_le64(s->txn);
	sb->nr_blocks = cpu_to_le64(s->nr_blocks);
	sb->first_block = cpu_to_le64(tm->first_block);
	sb->data_used = cpu_to_le64(st->data_used);
	sb->meta_nodes = cpu_to_le64(st->meta_nodes);
	sb->meta_chunks = cpu_to_le64(st->meta_chunks);
	ref_to_disk(&sb->sm_root, &s->sm_root);
	for (unsigned int i = 0; i < TM_NR_ROOTS; i++)
		ref_to_disk(&sb->roots[i], &s->roots[i]);
	memcpy(sb->user, s->user, TM_USER_BYTES);
	bc_seal(sb);
}

static int sb_write(struct io_dev *dev, const struct disk_superblock *sb)
{
	uint64_t slot = le64_to_cpu(sb->hdr.blocknr);
	int r = io_write(dev, sb, sizeof(*sb), slot << PD_NODE_SHIFT);

	if (r < 0)
		log_error("%s: writing superblock %" PRIu64 ": %s", dev->name,
			  slot, strerror(-r));
	return r;
}

int tm_format(struct io_dev *dev, const struct tm_format_opts *opts)
{
	uint32_t bs =
	    opts && opts->block_size ? opts->block_size : DEFAULT_BLOCK_SIZE;
	struct disk_superblock *sb;
	struct sm_stats st = {0};
	struct tm tm = {0};
	uint64_t nr_blocks;
	int r;

	if (!is_pow2(bs) || bs < TM_MIN_BLOCK_SIZE || bs > TM_MAX_BLOCK_SIZE) {
		log_error("block size %u: must be a power of two from 4 KiB "
			  "to 1 GiB",
			  bs);
		return -EINVAL;
	}
	nr_blocks = dev->size / bs;
	if (nr_blocks < first_block_for(bs) + sm_min_blocks(bs)) {
		log_error("%s: %" PRIu64 " bytes is too small for a pool of "
			  "%u-byte blocks",
			  dev->name, dev->size, bs);
		return -EINVAL;
	}
	tm.block_size = bs;
	tm.first_block = first_block_for(bs);
	if (opts && opts->uuid) {
		memcpy(tm.uuid, opts->uuid, 16);
	} else if (getrandom(tm.uuid, 16, 0) != 16) {
		return -errno;
	}
	tm.uuid[6] = (tm.uuid[6] & 0x0f) | 0x40; /* RFC 4122 version 4 */
	tm.uuid[8] = (tm.uuid[8] & 0x3f) | 0x80;
	tm.pool_tag = get_le64(tm.uuid);

	sb = aligned_alloc(PD_NODE_SIZE, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	/*
	 * Two valid superblocks of the same empty pool (txn 0 and 1), so
	 * that nothing of an earlier pool in these bytes can win at open.
	 * Both written, then one flush: either both land or the format
	 * failed and the caller reports it.
	 */
	for (uint64_t txn = 0; txn < 2; txn++) {
		struct sb_state s = {.txn = txn, .nr_blocks = nr_blocks};

		if (opts && opts->user)
			memcpy(s.user, opts->user, TM_USER_BYTES);
		sb_build(&tm, &s, &st, sb);
		r = sb_write(dev, sb);
		if (r < 0)
			goto out;
	}
	r = io_flush(dev);
	if (r < 0)
		log_error("%s: flush: %s", dev->name, strerror(-r));
out:
	free(sb);
	return r;
}

/* Validate a superblock image read from slot; fills s on success. */
static int sb_parse(const struct io_dev *dev, const struct disk_superblock *sb,
		    uint64_t slot, struct tm *tm, struct sb_state *s)
{
	struct bc_expect exp = {.magic = PD_MAGIC_SUPER};
	uint64_t tag = get_le64(sb->uuid);
	uint32_t bs = le32_to_cpu(sb->block_size);
	uint64_t txn = le64_to_cpu(sb->txn);
	int r;

	r = bc_check_header(sb, slot, tag, &exp);
	if (r < 0)
		return r;
	if (memcmp(sb->format_magic, SB_FORMAT_MAGIC,
		   sizeof(SB_FORMAT_MAGIC)) ||
	    le32_to_cpu(sb->version) != SB_VERSION ||
	    le32_to_cpu(sb->node_size) != PD_NODE_SIZE || sb->flags) {
		log_error("%s: superblock %" PRIu64
			  ": unknown format or version %u",
			  dev->name, slot, le32_to_cpu(sb->version));
		return -EUCLEAN;
	}
	if (!is_pow2(bs) || bs < TM_MIN_BLOCK_SIZE || bs > TM_MAX_BLOCK_SIZE ||
	    le64_to_cpu(sb->first_block) != first_block_for(bs) ||
	    txn != le64_to_cpu(sb->hdr.gen) || txn % 2 != slot) {
		log_error("%s: superblock %" PRIu64 ": inconsistent fields",
			  dev->name, slot);
		return -EUCLEAN;
	}
	s->txn = txn;
	s->nr_blocks = le64_to_cpu(sb->nr_blocks);
	s->data_used = le64_to_cpu(sb->data_used);
	s->meta_nodes = le64_to_cpu(sb->meta_nodes);
	s->meta_chunks = le64_to_cpu(sb->meta_chunks);
	if (s->nr_blocks <= first_block_for(bs) ||
	    s->data_used > s->nr_blocks) {
		log_error("%s: superblock %" PRIu64 ": bad size (%" PRIu64
			  " blocks, %" PRIu64 " used)",
			  dev->name, slot, s->nr_blocks, s->data_used);
		return -EUCLEAN;
	}
	ref_from_disk(&s->sm_root, &sb->sm_root);
	for (unsigned int i = 0; i < TM_NR_ROOTS; i++)
		ref_from_disk(&s->roots[i], &sb->roots[i]);
	memcpy(s->user, sb->user, TM_USER_BYTES);
	tm->block_size = bs;
	tm->first_block = first_block_for(bs);
	memcpy(tm->uuid, sb->uuid, 16);
	tm->pool_tag = tag;
	return 0;
}

static int read_superblocks(struct tm *tm)
{
	struct disk_superblock *sb;
	struct sb_state s[2];
	struct tm t[2];
	int ok[2], best = -1, r = 0;

	sb = aligned_alloc(PD_NODE_SIZE, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	for (int i = 0; i < 2; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		ok[i] = 0;
		if (tm->dev->size < 2 * PD_NODE_SIZE) {
			r = -EUCLEAN;
			break;
		}
		r = io_read(tm->dev, sb, sizeof(*sb),
			    (uint64_t) i << PD_NODE_SHIFT);
		if (r < 0) {
			log_error("%s: reading superblock %d: %s",
				  tm->dev->name, i, strerror(-r));
			goto out;
		}
		ok[i] = sb_parse(tm->dev, sb, (uint64_t) i, &t[i], &s[i]) == 0;
		if (ok[i] && (best < 0 || s[i].txn > s[best].txn))
			best = i;
	}
	r = 0;
	if (best < 0) {
		log_error("%s: no valid thinvol superblock", tm->dev->name);
		r = -EUCLEAN;
		goto out;
	}
	/*
	 * One superblock does not validate: a power cut tore it while its
	 * commit was writing it (that commit never returned, and the other
	 * superblock is the pool's state), or it was damaged later, and a
	 * newer commit is lost.  Nothing tells the two apart, so say so;
	 * the next commit rewrites the slot.
	 */
	tm->sb_damaged = -1;
	if (!ok[0] || !ok[1]) {
		tm->sb_damaged = ok[0] ? 1 : 0;
		log_warn("%s: superblock %d is damaged; the pool opens at "
			 "transaction %" PRIu64 " from superblock %d (if the "
			 "pool was not cut off while committing, a later "
			 "commit is lost)",
			 tm->dev->name, tm->sb_damaged, s[best].txn, best);
	}
	if (ok[0] && ok[1] && memcmp(t[0].uuid, t[1].uuid, 16))
		log_warn("%s: the two superblocks belong to different pools; "
			 "using the newer",
			 tm->dev->name);
	tm->block_size = t[best].block_size;
	tm->first_block = t[best].first_block;
	memcpy(tm->uuid, t[best].uuid, 16);
	tm->pool_tag = t[best].pool_tag;
	tm->com = s[best];
	tm->sb_meta_nodes = s[best].meta_nodes;
	tm->sb_meta_chunks = s[best].meta_chunks;
	if (tm->com.nr_blocks > tm->dev->size / tm->block_size) {
		log_error("%s: the pool has %" PRIu64 " blocks but the device "
			  "holds only %" PRIu64,
			  tm->dev->name, tm->com.nr_blocks,
			  tm->dev->size / tm->block_size);
		r = -EUCLEAN;
	}
out:
	free(sb);
	return r;
}

int tm_open(struct io_dev *dev, const struct tm_open_opts *opts,
	    struct tm **out)
{
	size_t cache =
	    opts && opts->cache_bytes ? opts->cache_bytes : DEFAULT_CACHE;
	struct tm *tm = calloc(1, sizeof(*tm));
	int r;

	if (!tm)
		return -ENOMEM;
	tm->dev = dev;
	tm->read_only_open = opts && opts->read_only;
	if (opts && opts->hooks)
		tm->hooks = *opts->hooks;
	/*
	 * Rule 4: a store that is going to write starts from what the disk
	 * holds.  What a process before this one wrote may still be only in
	 * the page cache: a superblock written but not yet flushed (a crash
	 * of that process between steps d and e) is made durable here, or
	 * this open fails, before any node of ours can overwrite blocks its
	 * transaction freed; and one whose writeback failed, which reads as
	 * if it had landed, leaves the cache.
	 */
	if (!tm->read_only_open) {
		r = io_flush(dev);
		if (r < 0) {
			log_error("%s: flush: %s", dev->name, strerror(-r));
			goto fail;
		}
		io_drop_cache(dev, 0, MIN(dev->size, 2ull * PD_NODE_SIZE));
	}
	r = read_superblocks(tm);
	if (r < 0)
		goto fail;
	tm->cur = tm->com;
	tm->cur.txn = tm->com.txn + 1;
	new_node_gen(tm);
	r = bc_create(dev, tm->pool_tag, cache, &tm->bc);
	if (r < 0)
		goto fail;
	tm->sm_loading = true;
	r = sm_open(tm, &tm->com.sm_root, tm->com.data_used, &tm->sm);
	tm->sm_loading = false;
	if (r < 0)
		goto fail;
	*out = tm;
	return 0;
fail:
	bc_destroy(tm->bc);
	free(tm);
	return r;
}

void tm_close(struct tm *tm)
{
	if (!tm)
		return;
	sm_destroy(tm->sm);
	bc_destroy(tm->bc);
	free(tm);
}

int tm_state(const struct tm *tm)
{
	return tm->err;
}

bool tm_read_only(const struct tm *tm)
{
	return tm->read_only || tm->read_only_open;
}

bool tm_in_doubt(const struct tm *tm)
{
	return tm->read_only;
}

/* A buffer for a superblock about to be written (free it), if the store
 * may write one: not poisoned, not read-only. */
static int sb_begin(struct tm *tm, struct disk_superblock **out)
{
	struct disk_superblock *sb;

	if (tm->err)
		return tm->err;
	if (tm_read_only(tm))
		return -EROFS;
	sb = aligned_alloc(PD_NODE_SIZE, sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	*out = sb;
	return 0;
}

int tm_settle(struct tm *tm)
{
	struct sm_stats st = {.data_used = tm->com.data_used,
			      .meta_nodes = tm->sb_meta_nodes,
			      .meta_chunks = tm->sb_meta_chunks};
	struct disk_superblock *sb;
	int r = sb_begin(tm, &sb);

	if (r)
		return r;
	sb_build(tm, &tm->com, &st, sb);
	/* what it names first (rule 3's order), then the superblock */
	r = io_flush(tm->dev);
	if (r == 0)
		r = sb_write(tm->dev, sb);
	if (r == 0)
		r = io_flush(tm->dev);
	if (r < 0)
		log_error("%s: writing superblock %" PRIu64 " again: %s",
			  tm->dev->name, tm->com.txn % 2, strerror(-r));
	free(sb);
	return r;
}

void tm_poison(struct tm *tm, int err)
{
	if (!tm->err)
		tm->err = err < 0 ? err : -EIO;
}

/*
 * Step c of a ranged commit: the nodes written in this transaction and
 * the data ranges, sorted and merged, then one ranged sync with the slot
 * the new superblock goes to as the barrier.
 */
static int sync_nodes_and(struct tm *tm, const struct io_range *data, size_t n,
			  const struct io_range *slot)
{
	const struct io_range *w;
	struct io_range *v;
	size_t nw, k;
	int r;

	if (!bc_written(tm->bc, &w, &nw))
		return io_flush(tm->dev);
	v = malloc((nw + n + 1) * sizeof(*v));
	if (!v)
		return io_flush(tm->dev);
	if (nw)
		memcpy(v, w, nw * sizeof(*v));
	if (n)
		memcpy(v + nw, data, n * sizeof(*v));
	k = io_ranges_merge(v, nw + n);
	r = io_sync_ranges(tm->dev, v, k, slot);
	free(v);
	return r;
}

int tm_commit(struct tm *tm)
{
	return tm_commit_ranged(tm, NULL, SIZE_MAX);
}

/* n == SIZE_MAX: a full commit (flushes). */
int tm_commit_ranged(struct tm *tm, const struct io_range *data, size_t n)
{
	bool ranged = n != SIZE_MAX && (tm->dev->flags & IO_DEV_RANGED_SYNC);
	struct io_range slot = {(tm->cur.txn % 2) << PD_NODE_SHIFT,
				PD_NODE_SIZE};
	struct disk_superblock *sb;
	struct sm_stats st, st0;
	uint64_t t0, t1, t2, t3;
	int r = sb_begin(tm, &sb);

	if (r)
		return r;

	/* a. space map counts into its tree (may use the reserve) */
	t0 = clock_mono_ns();
	sm_get_stats(tm->sm, &st0);
	sm_set_reserve_mode(tm->sm, true);
	r = sm_flush(tm->sm, &tm->cur.sm_root);
	sm_set_reserve_mode(tm->sm, false);
	if (r < 0)
		goto poison;
	sm_get_stats(tm->sm, &st);
	tm->cst.sm_rounds += st.flush_rounds - st0.flush_rounds;
	tm->cst.sm_tree_ops += st.flush_tree_ops - st0.flush_tree_ops;
	/* b. every node of this transaction */
	t1 = clock_mono_ns();
	r = bc_write_dirty(tm->bc);
	if (r < 0)
		goto poison;
	/* c. the nodes are durable before any superblock names them */
	t2 = clock_mono_ns();
	r = ranged ? sync_nodes_and(tm, data, n, &slot) : io_flush(tm->dev);
	if (r < 0) {
		log_error("%s: flush before commit: %s", tm->dev->name,
			  strerror(-r));
		goto poison;
	}
	bc_written_clear(tm->bc);
	t3 = clock_mono_ns();
	/* d. the superblock of this transaction, in slot txn % 2, so the
	 *    previous one (the other slot) survives a torn write */
	sm_get_stats(tm->sm, &st);
	tm->cur.data_used = st.data_used;
	sb_build(tm, &tm->cur, &st, sb);
	r = sb_write(tm->dev, sb);
	if (r < 0)
		goto read_only;
	/* e. the transaction is durable */
	r = ranged ? io_sync_ranges(tm->dev, NULL, 0, &slot)
		   : io_flush(tm->dev);
	if (r < 0) {
		log_error("%s: flush after superblock: %s", tm->dev->name,
			  strerror(-r));
		goto read_only;
	}
	tm->cst.commits++;
	tm->cst.ns_sm_flush += t1 - t0;
	tm->cst.ns_write += t2 - t1;
	tm->cst.ns_flush += t3 - t2;
	tm->cst.ns_super += clock_mono_ns() - t3;
	sm_committed(tm->sm);
	tm->sb_damaged = -1; /* both slots hold valid superblocks again */
	tm->com = tm->cur;
	tm->sb_meta_nodes = st.meta_nodes;
	tm->sb_meta_chunks = st.meta_chunks;
	tm->cur.txn++;
	new_node_gen(tm);
	free(sb);
	return 0;

read_only:
	/*
	 * Rule 4: which superblock is on the device is unknown now: the new
	 * one may have landed.  Writing another transaction could overwrite
	 * nodes it references, so stop writing until the store is reopened;
	 * and keep this transaction's state (tm_abort will not roll it back),
	 * so that the space map allocates only what both leave free.
	 */
	tm->read_only = true;
poison:
	tm_poison(tm, r);
	free(sb);
	return r;
}

int tm_abort(struct tm *tm)
{
	struct sm *sm;
	int r;

	/* rule 4: in doubt, the failed transaction's state stays */
	if (tm->read_only)
		return 0;
	bc_forget_gen(tm->bc, tm->node_gen);
	bc_written_clear(tm->bc);
	tm->cur = tm->com;
	tm->cur.txn = tm->com.txn + 1;
	new_node_gen(tm);
	tm->sm_loading = true;
	r = sm_open(tm, &tm->com.sm_root, tm->com.data_used, &sm);
	tm->sm_loading = false;
	if (r < 0) {
		tm_poison(tm, r);
		return r;
	}
	/* the blocks reserved in the file stay so (sm.c, rule 7) */
	sm_move_secured(sm, tm->sm);
	sm_destroy(tm->sm);
	tm->sm = sm;
	tm->err = 0;
	return 0;
}

void tm_commit_stats(const struct tm *tm, struct tm_commit_stats *out)
{
	struct bc_stats b;

	*out = tm->cst;
	bc_stats(tm->bc, &b);
	out->nodes_written = b.writes;
}

int tm_damaged_superblock(const struct tm *tm)
{
	return tm->sb_damaged;
}

void tm_sb_counters(const struct tm *tm, uint64_t *meta_nodes,
		    uint64_t *meta_chunks)
{
	*meta_nodes = tm->sb_meta_nodes;
	*meta_chunks = tm->sb_meta_chunks;
}

uint64_t tm_txn(const struct tm *tm)
{
	return tm->cur.txn;
}

uint64_t tm_committed_txn(const struct tm *tm)
{
	return tm->com.txn;
}

struct tm_ref *tm_root(struct tm *tm, unsigned int slot)
{
	return slot < TM_NR_ROOTS ? &tm->cur.roots[slot] : NULL;
}

const struct tm_ref *tm_committed_root(const struct tm *tm, unsigned int slot)
{
	return slot < TM_NR_ROOTS ? &tm->com.roots[slot] : NULL;
}

uint8_t *tm_user(struct tm *tm)
{
	return tm->cur.user;
}

uint32_t tm_block_size(const struct tm *tm)
{
	return tm->block_size;
}

uint64_t tm_nr_blocks(const struct tm *tm)
{
	return tm->cur.nr_blocks;
}

uint64_t tm_first_block(const struct tm *tm)
{
	return tm->first_block;
}

const uint8_t *tm_uuid(const struct tm *tm)
{
	return tm->uuid;
}

uint64_t tm_pool_tag(const struct tm *tm)
{
	return tm->pool_tag;
}

struct sm *tm_sm(struct tm *tm)
{
	return tm->sm;
}

const struct tm_hooks *tm_hooks(const struct tm *tm)
{
	return &tm->hooks;
}

struct bc *tm_bc(struct tm *tm)
{
	return tm->bc;
}

struct io_dev *tm_dev(struct tm *tm)
{
	return tm->dev;
}

int tm_grow(struct tm *tm)
{
	uint64_t nr = tm->dev->size / tm->block_size;
	int r;

	if (tm->err)
		return tm->err;
	if (nr < tm->cur.nr_blocks) {
		log_error("%s: the device shrank below the pool (%" PRIu64
			  " < %" PRIu64 " blocks)",
			  tm->dev->name, nr, tm->cur.nr_blocks);
		return -EINVAL;
	}
	r = sm_grow(tm->sm, nr);
	if (r < 0)
		return r;
	tm->cur.nr_blocks = nr;
	return 0;
}

/* ---- nodes ---- */

static int writable(struct tm *tm)
{
	if (tm->err)
		return tm->err;
	if (tm_read_only(tm))
		return -EROFS;
	return 0;
}

/* near: where to place the node if there is room (sm_alloc_node); src:
 * the payload to copy (a pinned node's data), or NULL for zeroes. */
static int new_node(struct tm *tm, uint32_t magic, uint64_t near,
		    const void *src, struct tm_ref *ref, struct bc_node **out)
{
	uint64_t node;
	int r = writable(tm);

	if (r < 0)
		return r;
	r = sm_alloc_node(tm->sm, near, &node);
	if (r < 0)
		goto fail;
	r = src ? bc_new_copy(tm->bc, node, magic, tm->node_gen, src, out)
		: bc_new(tm->bc, node, magic, tm->node_gen, out);
	if (r < 0)
		goto fail;
	ref->blocknr = node;
	ref->gen = tm->node_gen;
	return 0;
fail:
	tm_poison(tm, r);
	return r;
}

int tm_new_node(struct tm *tm, uint32_t magic, struct tm_ref *ref,
		struct bc_node **out)
{
	return new_node(tm, magic, 0, NULL, ref, out);
}

/*
 * A node pointer read from disk must name a node of a metadata chunk:
 * not a superblock, not past the pool, not a data block (a volume's data,
 * which its client writes: a well-formed node there would pass every
 * check of the node itself).  While sm_open reads the sm tree the chunks
 * are not known yet: it checks those nodes itself (sm.c, load).
 */
static int node_placed(const struct tm *tm, uint64_t node)
{
	uint64_t npc = tm->block_size / PD_NODE_SIZE;

	if (node < tm->first_block * npc || node / npc >= tm->cur.nr_blocks) {
		log_error("metadata: reference to node %" PRIu64
			  ", outside the pool's metadata area",
			  node);
		return -EUCLEAN;
	}
	if (tm->sm_loading || !tm->sm || sm_is_chunk(tm->sm, node / npc))
		return 0;
	log_error("metadata: reference to node %" PRIu64 ", in block %" PRIu64
		  ", which is no metadata chunk",
		  node, node / npc);
	return -EUCLEAN;
}

int tm_read(struct tm *tm, const struct tm_ref *ref,
	    const struct bc_expect *exp, struct bc_node **out)
{
	struct bc_expect e = *exp;
	int r;

	if (!ref->blocknr) {
		log_error("metadata: null node reference");
		return -EUCLEAN;
	}
	r = node_placed(tm, ref->blocknr);
	if (r < 0)
		return r;
	e.gen = ref->gen;
	return bc_get(tm->bc, ref->blocknr, &e, out);
}

int tm_shadow(struct tm *tm, struct tm_ref *ref, const struct bc_expect *exp,
	      struct bc_node **out, bool *inc_children)
{
	struct bc_node *orig, *copy;
	struct tm_ref nref;
	uint32_t count;
	int r = writable(tm);

	if (r < 0)
		return r;
	r = sm_node_count(tm->sm, ref->blocknr, &count);
	if (r < 0)
		goto fail;
	if (!count) {
		log_error("metadata node %" PRIu64
			  " is referenced but counted free",
			  ref->blocknr);
		r = -EUCLEAN;
		goto fail;
	}
	r = tm_read(tm, ref, exp, &orig);
	if (r < 0)
		goto fail;
	if (ref->gen == tm->node_gen && count == 1) {
		/* created in this transaction and not shared: ours */
		*inc_children = false;
		*out = orig;
		return 0;
	}
	/*
	 * Placement (sm-place.c): a node the previous transaction wrote
	 * (a root, an upper level: copied by every change) goes with the
	 * other new nodes; any other next to its original, whose count the
	 * commit changes anyway.
	 */
	r = new_node(tm, exp->magic,
		     ref->gen >> TM_GEN_RAND_BITS == tm->com.txn ? 0
								 : ref->blocknr,
		     orig->data, &nref, &copy);
	if (r < 0) {
		bc_put(tm->bc, orig);
		goto fail;
	}
	bc_put(tm->bc, orig);
	r = sm_dec_node(tm->sm, ref->blocknr, NULL);
	if (r < 0) {
		bc_put(tm->bc, copy);
		goto fail;
	}
	*inc_children = count > 1;
	*ref = nref;
	*out = copy;
	return 0;
fail:
	tm_poison(tm, r);
	return r;
}

void tm_put(struct tm *tm, struct bc_node *n)
{
	bc_put(tm->bc, n);
}

void tm_dirty(struct tm *tm, struct bc_node *n)
{
	bc_dirty(tm->bc, n);
}

int tm_inc_node(struct tm *tm, uint64_t blocknr)
{
	int r = writable(tm);

	if (r == 0)
		r = sm_inc_node(tm->sm, blocknr);
	if (r < 0)
		tm_poison(tm, r);
	else
		tm->share_seq++;
	return r;
}

uint64_t tm_share_seq(const struct tm *tm)
{
	return tm->share_seq;
}

int tm_dec_node(struct tm *tm, uint64_t blocknr, uint32_t *new_count)
{
	int r = writable(tm);

	if (r == 0)
		r = sm_dec_node(tm->sm, blocknr, new_count);
	if (r < 0)
		tm_poison(tm, r);
	return r;
}

int tm_node_count(struct tm *tm, uint64_t blocknr, uint32_t *count)
{
	return sm_node_count(tm->sm, blocknr, count);
}
