/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Engine model test: random create / snapshot / delete / resize / write /
 * discard / write-zeroes / read across many volumes, against an in-memory
 * copy of every volume's bytes; the full check after every commit;
 * reopens.  Seeded (TV_SEED replays), TV_SCALE lengthens.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h" /* vio_read_map_nofill */
#include "thinvol.h"
#include "util/checked.h"
#include "util/log.h"

#define MAXV 24

struct mvol {
	bool live;
	uint64_t id;
	uint64_t size;
	bool ro;
	uint8_t *data;
	char name[32];
};

static struct mvol vols[MAXV];
static struct trng rng;
static uint32_t bs;
static uint64_t ops_done[10];

static void clean(struct tv_pool *p)
{
	struct tv_check_report rep;

	CHECK_OK(tv_pool_check(p, stderr, &rep));
	if (!rep.clean)
		fprintf(stderr, "check: %llu errors %llu leaks %llu missing\n",
			(unsigned long long) rep.errors,
			(unsigned long long) rep.leaks,
			(unsigned long long) rep.missing);
	CHECK(rep.clean);
}

static int pick_live(void)
{
	int n = 0, idx[MAXV];

	for (int i = 0; i < MAXV; i++)
		if (vols[i].live)
			idx[n++] = i;
	return n ? idx[trng_below(&rng, (uint64_t) n)] : -1;
}

static int pick_free(void)
{
	for (int k = 0; k < MAXV; k++) {
		int i = (int) trng_below(&rng, MAXV);
		if (!vols[i].live)
			return i;
	}
	return -1;
}

static void range(const struct mvol *v, uint64_t *off, uint64_t *len)
{
	uint64_t sectors = v->size / 512;
	uint64_t a = trng_below(&rng, sectors);
	uint64_t maxn = MIN(sectors - a, (uint64_t) (3 * bs / 512));
	*off = a * 512;
	*len = (1 + trng_below(&rng, maxn)) * 512;
}

static void verify_all(struct tv_pool *p)
{
	for (int i = 0; i < MAXV; i++) {
		struct mvol *v = &vols[i];
		struct tv_vol_info vi;
		uint8_t *buf;

		if (!v->live)
			continue;
		CHECK_OK(tv_vol_info(p, v->id, &vi));
		CHECK_EQ(vi.size, v->size);
		buf = malloc(v->size);
		CHECK_OK(tv_vol_read(p, v->id, buf, v->size, 0));
		if (memcmp(buf, v->data, v->size)) {
			for (uint64_t k = 0; k < v->size; k++)
				if (buf[k] != v->data[k]) {
					fprintf(stderr,
						"volume %s byte %llu: "
						"%02x, model %02x\n",
						v->name, (unsigned long long) k,
						buf[k], v->data[k]);
					break;
				}
			CHECK(0);
		}
		free(buf);
	}
}

/*
 * The same read through tv_vol_read_map and vio_read_map_nofill (the NBD
 * server's), with a few extents at most: the extents cover the range;
 * hole extents read as zeroes in the model; every byte of the buffer is
 * the model's, except (nofill) those of hole extents, left as they were.
 */
static void read_map_check(struct tv_pool *p, const struct mvol *v,
			   uint8_t *buf, uint64_t len, uint64_t off)
{
	static const uint8_t zero[64 << 10];
	struct tv_extent ext[4];

	for (int nofill = 0; nofill < 2; nofill++) {
		size_t max = 1 + (size_t) trng_below(&rng, 4), n = 0;
		uint64_t pos = 0;

		memset(buf, 0xa5, len);
		CHECK_OK(nofill ? vio_read_map_nofill(p, v->id, buf, len, off,
						      ext, max, &n)
				: tv_vol_read_map(p, v->id, buf, len, off, ext,
						  max, &n));
		CHECK(n >= 1 && n <= max);
		for (size_t e = 0; e < n; e++) {
			const uint8_t *want = v->data + off + pos;
			bool hole = ext[e].flags & TV_EXTENT_HOLE;

			CHECK(ext[e].len > 0 && ext[e].len <= len - pos);
			for (uint64_t k = 0; hole && k < ext[e].len;
			     k += sizeof(zero))
				CHECK(
				    !memcmp(want + k, zero,
					    MIN(sizeof(zero), ext[e].len - k)));
			if (!hole || !nofill)
				CHECK(!memcmp(buf + pos, want, ext[e].len));
			pos += ext[e].len;
		}
		CHECK_EQ(pos, len);
	}
}

static void step(struct tv_pool *p, unsigned int *seq)
{
	unsigned int op = (unsigned int) trng_below(&rng, 100);
	int i = pick_live(), j;
	uint64_t off, len, id;

	if (op < 8 || i < 0) { /* create */
		j = pick_free();
		if (j < 0)
			return;
		vols[j].size = (1 + trng_below(&rng, 8 * bs / 512)) * 512;
		snprintf(vols[j].name, sizeof(vols[j].name), "v%u", (*seq)++);
		CHECK_OK(
		    tv_vol_create(p, vols[j].name, vols[j].size, NULL, 0, &id));
		vols[j].id = id;
		vols[j].live = true;
		vols[j].ro = false;
		vols[j].data = calloc(1, vols[j].size);
		ops_done[0]++;
	} else if (op < 14) { /* snapshot */
		j = pick_free();
		if (j < 0)
			return;
		snprintf(vols[j].name, sizeof(vols[j].name), "s%u", (*seq)++);
		vols[j].ro = trng_below(&rng, 4) == 0;
		CHECK_OK(tv_vol_snapshot(p, vols[i].id, vols[j].name,
					 vols[j].ro ? TV_VOL_READ_ONLY : 0,
					 NULL, 0, &id));
		vols[j].id = id;
		vols[j].live = true;
		vols[j].size = vols[i].size;
		vols[j].data = malloc(vols[i].size);
		memcpy(vols[j].data, vols[i].data, vols[i].size);
		ops_done[1]++;
	} else if (op < 19) { /* delete */
		CHECK_OK(tv_vol_delete(p, vols[i].id));
		vols[i].live = false;
		free(vols[i].data);
		vols[i].data = NULL;
		ops_done[2]++;
	} else if (op < 23) { /* resize */
		uint64_t ns = (1 + trng_below(&rng, 8 * bs / 512)) * 512;
		if (vols[i].ro) {
			CHECK_ERR(tv_vol_resize(p, vols[i].id, ns), -EROFS);
			return;
		}
		CHECK_OK(tv_vol_resize(p, vols[i].id, ns));
		vols[i].data = realloc(vols[i].data, ns);
		if (ns > vols[i].size)
			memset(vols[i].data + vols[i].size, 0,
			       ns - vols[i].size);
		vols[i].size = ns;
		ops_done[3]++;
	} else if (op < 60) { /* write */
		uint8_t *buf;
		range(&vols[i], &off, &len);
		buf = malloc(len);
		for (uint64_t k = 0; k < len; k++)
			buf[k] = (uint8_t) trng_next(&rng);
		if (vols[i].ro) {
			CHECK_ERR(tv_vol_write(p, vols[i].id, buf, len, off, 0),
				  -EROFS);
		} else {
			CHECK_OK(
			    tv_vol_write(p, vols[i].id, buf, len, off,
					 trng_below(&rng, 20) ? 0 : TV_IO_FUA));
			memcpy(vols[i].data + off, buf, len);
		}
		free(buf);
		ops_done[4]++;
	} else if (op < 70) { /* discard / write-zeroes */
		range(&vols[i], &off, &len);
		if (vols[i].ro) {
			CHECK_ERR(tv_vol_discard(p, vols[i].id, len, off),
				  -EROFS);
		} else {
			if (trng_below(&rng, 2))
				CHECK_OK(
				    tv_vol_discard(p, vols[i].id, len, off));
			else
				CHECK_OK(tv_vol_write_zeroes(p, vols[i].id, len,
							     off));
			memset(vols[i].data + off, 0, len);
		}
		ops_done[5]++;
	} else if (op < 95) { /* read */
		uint8_t *buf;
		range(&vols[i], &off, &len);
		buf = malloc(len);
		CHECK_OK(tv_vol_read(p, vols[i].id, buf, len, off));
		CHECK(!memcmp(buf, vols[i].data + off, len));
		read_map_check(p, &vols[i], buf, len, off);
		free(buf);
		ops_done[6]++;
	} else { /* bad ranges */
		uint8_t b[512];
		CHECK_ERR(tv_vol_read(p, vols[i].id, b, 512, vols[i].size),
			  -EINVAL);
		CHECK_ERR(tv_vol_read(p, vols[i].id, b, 100, 0), -EINVAL);
		CHECK_ERR(tv_vol_read(p, vols[i].id, b, 512, 3), -EINVAL);
		CHECK_ERR(tv_vol_read(p, 999999, b, 512, 0), -ENOENT);
		ops_done[7]++;
	}
}

static void run(uint32_t block_size, uint64_t seed, unsigned int steps)
{
	char dir[] = "/tmp/tv-eio-XXXXXX", path[256];
	struct tv_pool_create_opts co = {
	    .size = 64 << 20, .block_size = block_size, .blob_size = -1};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 50};
	struct tv_pool *p;
	unsigned int seq = 0;

	bs = block_size;
	trng_init(&rng, seed);
	memset(vols, 0, sizeof(vols));
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, &oo, &p));
	for (unsigned int s = 0; s < steps; s++) {
		step(p, &seq);
		if (getenv("TV_PARANOID"))
			clean(p);
		if (s % 97 == 96) {
			clean(p);
			verify_all(p);
		}
		if (s % 401 == 400) {
			CHECK_OK(tv_pool_close(p));
			CHECK_OK(tv_pool_open(path, &oo, &p));
			verify_all(p);
			clean(p);
		}
	}
	verify_all(p);
	clean(p);

	/* delete everything: the background reclaim gives all data back */
	for (int i = 0; i < MAXV; i++)
		if (vols[i].live)
			CHECK_OK(tv_vol_delete(p, vols[i].id));
	for (int t = 0; t < 400; t++) {
		struct tv_pool_info pi;
		CHECK_OK(tv_pool_info(p, &pi));
		if (!pi.reclaimable && pi.used == pi.metadata)
			break;
		usleep(25000);
	}
	{
		struct tv_pool_info pi;
		CHECK_OK(tv_pool_flush(p));
		CHECK_OK(tv_pool_info(p, &pi));
		if (pi.reclaimable || pi.used != pi.metadata)
			fprintf(stderr,
				"after reclaim: reclaimable %llu used "
				"%llu metadata %llu\n",
				(unsigned long long) pi.reclaimable,
				(unsigned long long) pi.used,
				(unsigned long long) pi.metadata);
		CHECK_EQ(pi.reclaimable, 0);
		CHECK_EQ(pi.nr_volumes, 0);
		CHECK_EQ(pi.used, pi.metadata); /* no data block left */
	}
	clean(p);
	CHECK_OK(tv_pool_close(p));
	for (int i = 0; i < MAXV; i++)
		free(vols[i].data);
	unlink(path);
	rmdir(dir);
}

/* mapped and exclusive bytes through snapshots, copy-on-write, delete */
static void usage_test(void)
{
	char dir[] = "/tmp/tv-usage-XXXXXX", path[256];
	struct tv_pool_create_opts co = {.size = 64 << 20, .blob_size = -1};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 20};
	uint64_t a, s, mapped, excl, bsz = 64 << 10;
	struct tv_pool *p;
	uint8_t *buf = malloc(8 * bsz);

	memset(buf, 0x5a, 8 * bsz);
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, &oo, &p));
	CHECK_OK(tv_vol_create(p, "a", 16 * bsz, NULL, 0, &a));
	CHECK_OK(tv_vol_write(p, a, buf, 8 * bsz, 0, 0));
	CHECK_OK(tv_vol_usage(p, a, &mapped, &excl));
	CHECK_EQ(mapped, 8 * bsz);
	CHECK_EQ(excl, 8 * bsz);
	CHECK_OK(tv_vol_snapshot(p, a, "s", 0, NULL, 0, &s));
	CHECK_OK(tv_vol_usage(p, a, &mapped, &excl));
	CHECK_EQ(mapped, 8 * bsz);
	CHECK_EQ(excl, 0); /* all shared */
	CHECK_OK(tv_vol_usage(p, s, &mapped, &excl));
	CHECK_EQ(excl, 0);
	CHECK_OK(tv_vol_write(p, a, buf, 512, 3 * bsz, 0)); /* copy one */
	CHECK_OK(tv_vol_usage(p, a, &mapped, &excl));
	CHECK_EQ(mapped, 8 * bsz);
	CHECK_EQ(excl, bsz);
	CHECK_OK(tv_vol_usage(p, s, &mapped, &excl));
	CHECK_EQ(excl, bsz); /* the block a no longer uses */
	CHECK_OK(tv_vol_delete(p, s));
	for (int t = 0; t < 200; t++) {
		CHECK_OK(tv_vol_usage(p, a, &mapped, &excl));
		if (excl == 8 * bsz)
			break;
		usleep(20000);
	}
	CHECK_EQ(excl, 8 * bsz);
	CHECK_ERR(tv_vol_usage(p, 999, &mapped, &excl), -ENOENT);
	clean(p);
	CHECK_OK(tv_pool_close(p));
	unlink(path);
	rmdir(dir);
	free(buf);
}

/*
 * The mapping cache after snapshots (vio.c, C_OWN): a snapshot makes the
 * origin's cached blocks shared without visiting them, by a generation
 * that wraps round after 65536 snapshots.  Blocks read and written
 * through the cache before a snapshot still read right after it; a write
 * after it copies; and after exactly 65536 snapshots (the generation back
 * where it was) a write still copies, so the last snapshot keeps its data.
 */
static void snapshot_gen_test(void)
{
	enum { PER = 1024, ROUNDS = 65536 / PER };
	char dir[] = "/tmp/tv-gen-XXXXXX", path[256];
	struct tv_pool_create_opts co = {.size = 64 << 20, .blob_size = 0};
	struct tv_pool_open_opts oo = {.commit_interval_ms = 1000};
	struct tv_op *ops = calloc(PER, sizeof(*ops));
	char(*names)[16] = calloc(PER, sizeof(*names));
	uint8_t a_data[512], b_data[512], got[512];
	uint64_t a, s, keep = 0;
	struct tv_pool *p;

	CHECK(ops && names);
	memset(a_data, 'A', sizeof(a_data));
	memset(b_data, 'B', sizeof(b_data));
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, &oo, &p));
	CHECK_OK(tv_vol_create(p, "a", 1 << 20, NULL, 0, &a));
	/* cached as our own, then read through the cache after a snapshot */
	CHECK_OK(tv_vol_write(p, a, a_data, 512, 0, 0));
	CHECK_OK(tv_vol_write(p, a, a_data, 512, 0, 0));
	CHECK_OK(tv_vol_snapshot(p, a, "s", 0, NULL, 0, &s));
	CHECK_OK(tv_vol_read(p, a, got, 512, 0));
	CHECK(!memcmp(got, a_data, 512));
	CHECK_OK(tv_vol_write(p, a, b_data, 512, 0, 0)); /* copies */
	CHECK_OK(tv_vol_read(p, s, got, 512, 0));
	CHECK(!memcmp(got, a_data, 512));
	CHECK_OK(tv_vol_read(p, a, got, 512, 0));
	CHECK(!memcmp(got, b_data, 512));
	CHECK_OK(tv_vol_delete(p, s));
	/* a's block 0 is its own again, cached in this generation; now
	 * 65536 snapshots bring the generation round to it */
	CHECK_OK(tv_vol_write(p, a, a_data, 512, 0, 0));
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < PER; i++) {
			snprintf(names[i], sizeof(names[i]), "g%d", i);
			ops[i] = (struct tv_op){
			    .kind = TV_OP_SNAPSHOT, .id = a, .name = names[i]};
		}
		CHECK_OK(tv_batch(p, ops, PER, NULL));
		for (int i = 0; i < PER; i++) {
			uint64_t id = ops[i].result_id;
			ops[i] = (struct tv_op){.kind = TV_OP_DELETE, .id = id};
			if (r == ROUNDS - 1 && i == PER - 1)
				keep = id; /* the last one stays */
		}
		CHECK_OK(
		    tv_batch(p, ops, r == ROUNDS - 1 ? PER - 1 : PER, NULL));
	}
	CHECK_OK(tv_vol_write(p, a, b_data, 512, 0, 0));
	CHECK_OK(tv_vol_read(p, keep, got, 512, 0));
	CHECK(!memcmp(got, a_data, 512));
	CHECK_OK(tv_vol_read(p, a, got, 512, 0));
	CHECK(!memcmp(got, b_data, 512));
	clean(p);
	CHECK_OK(tv_pool_close(p));
	unlink(path);
	rmdir(dir);
	free(ops);
	free(names);
}

/*
 * A shrink while a long write is under way (in rounds of SLOW_BATCH
 * blocks, vio.c): the rounds after the shrink must stop, not map blocks
 * past the new end, which a later grow would show.
 */
struct shrink_writer {
	struct tv_pool *p;
	uint64_t id;
	const uint8_t *buf;
	size_t len;
	int r;
};

static void *shrink_writer(void *arg)
{
	struct shrink_writer *w = arg;

	w->r = tv_vol_write(w->p, w->id, w->buf, w->len, 0, 0);
	return NULL;
}

static void shrink_race_test(void)
{
	const size_t len = 64u << 20, small = 4u << 20;
	char dir[] = "/tmp/tv-shrink-XXXXXX", path[256];
	struct tv_pool_create_opts co = {.size = 512u << 20, .blob_size = 0};
	uint8_t *buf = malloc(len), *back = malloc(len);
	struct tv_pool *p;

	CHECK(buf && back);
	memset(buf, 0xab, len);
	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/p.pool", dir);
	CHECK_OK(tv_pool_create(path, &co));
	CHECK_OK(tv_pool_open(path, NULL, &p));
	for (int round = 0; round < 6; round++) {
		struct shrink_writer w = {.p = p, .buf = buf, .len = len};
		char name[16];
		pthread_t t;

		snprintf(name, sizeof(name), "s%d", round);
		CHECK_OK(tv_vol_create(p, name, len, NULL, 0, &w.id));
		CHECK(pthread_create(&t, NULL, shrink_writer, &w) == 0);
		usleep(200u * (unsigned int) round);
		CHECK_OK(tv_vol_resize(p, w.id, small));
		pthread_join(t, NULL);
		CHECK_OK(tv_vol_resize(p, w.id, len));
		CHECK_OK(tv_vol_read(p, w.id, back, len, 0));
		for (size_t i = small; i < len; i++)
			if (back[i]) {
				fprintf(stderr,
					"round %d: byte %zu past the "
					"shrink reads %#x (write: %d)\n",
					round, i, back[i], w.r);
				CHECK(0);
			}
		CHECK_OK(tv_vol_delete(p, w.id));
	}
	clean(p);
	CHECK_OK(tv_pool_close(p));
	unlink(path);
	rmdir(dir);
	free(buf);
	free(back);
}

int main(void)
{
	uint64_t seed = tseed("test-engine-io");
	unsigned int steps =
	    (unsigned int) ((tsanitized() ? 1500 : 4000) * tscale());

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	usage_test();
	snapshot_gen_test();
	shrink_race_test();
	run(4096, seed, steps);
	run(64 << 10, seed + 1, steps);
	printf(
	    "test-engine-io: creates %llu snapshots %llu deletes %llu "
	    "resizes %llu writes %llu discards %llu reads %llu\n",
	    (unsigned long long) ops_done[0], (unsigned long long) ops_done[1],
	    (unsigned long long) ops_done[2], (unsigned long long) ops_done[3],
	    (unsigned long long) ops_done[4], (unsigned long long) ops_done[5],
	    (unsigned long long) ops_done[6]);
	return 0;
}
