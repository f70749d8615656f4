/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Batch atomicity: every metadata operation is all or nothing with its
 * transaction, against a rollback and against a power cut.
 *
 * Part 1, the cases of issue 14 (item 1) one by one: a shrink to a size
 * inside a block, in a batch that then fails, leaves the volume's bytes
 * as they were; a grow after a shrink reads zeroes past the old end
 * (committed or in the same batch, after a reopen, and when the tail
 * block is shared with a snapshot, which keeps its bytes).
 *
 * Part 2, a model test: rounds of random writes (flushed), then a random
 * batch of every operation (create, snapshot, delete, rename, grow,
 * shrink, set-blob), some with a refused operation at a random position.
 * The batch runs once to the end on a power-cut device (its outcome and
 * the state after it must equal the model), then again from the same
 * image with the power cut after each of its writes and flushes in turn;
 * every crash image (unflushed writes dropped, all applied, or a random
 * mix, torn and reordered) must open, check clean, and show exactly the
 * state before the batch or, for a batch that succeeds, the state after
 * it: every volume's id, name, size, flags, parent, blob and bytes.
 *
 * Seeded: TV_SEED replays a run; TV_SCALE=n runs n times the rounds;
 * TV_MODEL_ONLY=1 skips part 1 (to see what the model finds alone).
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/io.h"
#include "tcheck.h"
#include "tquiet.h"
#include "thin/thin-internal.h"
#include "thinvol.h"
#include "util/checked.h"
#include "util/log.h"

#define BLOB 16u
#define NS   6 /* volume slots of the model */
#define MAXB 6 /* blocks per volume at most */

static const struct tv_pool_open_opts oo = {.commit_interval_ms = 3600000};

/* ---- part 1 ---- */

static void expect_bytes(struct tv_pool *p, uint64_t id, uint64_t size,
			 uint64_t keep, uint8_t fill, const char *what)
{
	struct tv_vol_info vi;
	uint8_t *buf = malloc(size);

	CHECK(buf);
	CHECK_OK(tv_vol_info(p, id, &vi));
	if (vi.size != size) {
		fprintf(stderr, "%s: size %llu, want %llu\n", what,
			(unsigned long long) vi.size,
			(unsigned long long) size);
		CHECK(0);
	}
	CHECK_OK(tv_vol_read(p, id, buf, size, 0));
	for (uint64_t i = 0; i < size; i++) {
		uint8_t want = i < keep ? fill : 0;

		if (buf[i] != want) {
			fprintf(stderr, "%s: byte %llu is %#x, want %#x\n",
				what, (unsigned long long) i, buf[i], want);
			CHECK(0);
		}
	}
	free(buf);
}

static void clean(struct tv_pool *p)
{
	struct tv_check_report rep;

	CHECK_OK(tv_pool_check(p, stderr, &rep));
	CHECK(rep.clean);
}

static void part1(uint32_t bs)
{
	struct tv_pool_create_opts co = {.block_size = bs, .blob_size = BLOB};
	const uint64_t M = 1 << 20;
	struct io_dev *mem;
	struct tv_pool *p;
	uint64_t a, s, other;
	uint8_t *aa = malloc(M);
	size_t failed = 99;

	CHECK(aa);
	memset(aa, 0xaa, M);
	CHECK_OK(io_mem_create(32 << 20, &mem));
	CHECK_OK(pool_format_dev(mem, &co));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	CHECK_OK(tv_vol_create(p, "a", M, NULL, 0, &a));
	CHECK_OK(tv_vol_write(p, a, aa, M, 0, 0));
	CHECK_OK(tv_pool_flush(p));

	/* the batch: the shrink is rolled back with the batch */
	{
		struct tv_op ops[2] = {
		    {.kind = TV_OP_RESIZE, .id = a, .size = 1024},
		    {.kind = TV_OP_CREATE, .name = "a", .size = M},
		};
		CHECK_ERR(tv_batch(p, ops, 2, &failed), -EEXIST);
		CHECK_EQ(failed, 1);
		expect_bytes(p, a, M, M, 0xaa, "shrink in a failed batch");
	}
	/* shrink and grow in one batch that fails: still all 0xaa */
	{
		struct tv_op ops[3] = {
		    {.kind = TV_OP_RESIZE, .id = a, .size = 1024},
		    {.kind = TV_OP_RESIZE, .id = a, .size = M},
		    {.kind = TV_OP_RENAME, .id = 987654321, .name = "x"},
		};
		CHECK_ERR(tv_batch(p, ops, 3, &failed), -ENOENT);
		CHECK_EQ(failed, 2);
		expect_bytes(p, a, M, M, 0xaa, "shrink+grow, failed batch");
	}
	/* a snapshot shares the tail block */
	CHECK_OK(tv_vol_snapshot(p, a, "s", 0, NULL, 0, &s));
	/* shrink and grow in one batch that commits: zeroes past 1024 */
	{
		struct tv_op ops[2] = {
		    {.kind = TV_OP_RESIZE, .id = a, .size = 1024},
		    {.kind = TV_OP_RESIZE, .id = a, .size = M},
		};
		CHECK_OK(tv_batch(p, ops, 2, &failed));
		expect_bytes(p, a, M, 1024, 0xaa, "shrink+grow, one batch");
		expect_bytes(p, s, M, M, 0xaa, "snapshot of the origin");
	}
	/* the snapshot: shrink (committed), reopen, grow in a batch that
	 * fails, then grow: the origin never changes */
	CHECK_OK(tv_vol_resize(p, s, 3 * 512 + 2 * bs));
	CHECK_OK(tv_pool_close(p));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	expect_bytes(p, s, 3 * 512 + 2 * bs, 3 * 512 + 2 * bs, 0xaa,
		     "shrunk snapshot, reopened");
	{
		struct tv_op ops[2] = {
		    {.kind = TV_OP_RESIZE, .id = s, .size = M},
		    {.kind = TV_OP_CREATE, .name = "s", .size = M},
		};
		CHECK_ERR(tv_batch(p, ops, 2, &failed), -EEXIST);
		expect_bytes(p, s, 3 * 512 + 2 * bs, 3 * 512 + 2 * bs, 0xaa,
			     "grow of the snapshot rolled back");
	}
	CHECK_OK(tv_vol_resize(p, s, M));
	expect_bytes(p, s, M, 3 * 512 + 2 * bs, 0xaa, "snapshot grown");
	expect_bytes(p, a, M, 1024, 0xaa, "origin after the snapshot grew");
	/* an unshared block shrunk (committed) then grown: zeroed in place,
	 * and a grow that fails after it leaves the old size */
	CHECK_OK(tv_vol_create(p, "o", M, NULL, 0, &other));
	CHECK_OK(tv_vol_write(p, other, aa, M, 0, 0));
	CHECK_OK(tv_vol_resize(p, other, 512));
	{
		struct tv_op ops[2] = {
		    {.kind = TV_OP_RESIZE, .id = other, .size = M},
		    {.kind = TV_OP_RESIZE, .id = other, .size = 0},
		};
		CHECK_ERR(tv_batch(p, ops, 2, &failed), -EINVAL);
		expect_bytes(p, other, 512, 512, 0xaa, "grow rolled back");
	}
	CHECK_OK(tv_vol_resize(p, other, M));
	expect_bytes(p, other, M, 512, 0xaa, "shrunk to 512, grown");
	clean(p);
	CHECK_OK(tv_pool_close(p));
	io_close(mem);
	free(aa);
	printf("  block size %u: shrink rolled back with its batch, grow "
	       "after shrink reads zeroes, snapshots keep their bytes\n",
	       bs);
}

/* ---- part 2: the model ---- */

struct mvol {
	bool live;
	uint64_t id;
	char name[16];
	uint64_t size;
	uint32_t flags;
	uint64_t parent;
	uint8_t blob[BLOB];
	uint8_t *data; /* MAXB blocks */
};

struct model {
	struct mvol v[NS];
};

struct ctx {
	struct trng rng;
	uint32_t bs;
	unsigned int names;
	uint64_t cuts, images, batches, failing;
};

static void model_init(struct model *m, uint32_t bs)
{
	memset(m, 0, sizeof(*m));
	for (int i = 0; i < NS; i++) {
		m->v[i].data = calloc(MAXB, bs);
		CHECK(m->v[i].data);
	}
}

static void model_copy(struct model *d, const struct model *s, uint32_t bs)
{
	for (int i = 0; i < NS; i++) {
		uint8_t *keep = d->v[i].data;

		d->v[i] = s->v[i];
		d->v[i].data = keep;
		memcpy(keep, s->v[i].data, (size_t) MAXB * bs);
	}
}

static void model_free(struct model *m)
{
	for (int i = 0; i < NS; i++)
		free(m->v[i].data);
}

/* Does pool p show exactly model m?  verbose: say what differs. */
static bool matches(struct tv_pool *p, const struct model *m, uint32_t bs,
		    bool verbose)
{
	struct tv_vol_info list[NS + 1];
	uint64_t cursor = 0;
	uint8_t blob[BLOB], *buf = malloc((size_t) MAXB * bs);
	int n = tv_vol_list(p, &cursor, list, NS + 1), live = 0;
	bool ok = true;

	CHECK(buf && n >= 0);
	for (int i = 0; i < NS; i++)
		live += m->v[i].live;
	if (n != live) {
		if (verbose)
			fprintf(stderr, "  %d volumes, the model has %d\n", n,
				live);
		ok = false;
	}
	for (int i = 0; ok && i < NS; i++) {
		const struct mvol *v = &m->v[i];
		struct tv_vol_info vi;

		if (!v->live)
			continue;
		if (tv_vol_info(p, v->id, &vi) < 0 ||
		    strcmp(vi.name, v->name) || vi.size != v->size ||
		    vi.flags != v->flags || vi.parent != v->parent) {
			if (verbose)
				fprintf(stderr,
					"  volume #%llu (%s, %llu "
					"bytes): record differs\n",
					(unsigned long long) v->id, v->name,
					(unsigned long long) v->size);
			ok = false;
			break;
		}
		CHECK_OK(tv_vol_get_blob(p, v->id, blob, BLOB));
		if (memcmp(blob, v->blob, BLOB)) {
			if (verbose)
				fprintf(stderr, "  volume %s: blob differs\n",
					v->name);
			ok = false;
		}
		CHECK_OK(tv_vol_read(p, v->id, buf, v->size, 0));
		if (memcmp(buf, v->data, v->size)) {
			uint64_t k = 0;

			while (buf[k] == v->data[k])
				k++;
			if (verbose)
				fprintf(stderr,
					"  volume %s: byte %llu is "
					"%#x, want %#x\n",
					v->name, (unsigned long long) k, buf[k],
					v->data[k]);
			ok = false;
		}
	}
	free(buf);
	return ok;
}

static int pick_slot(struct ctx *c, const struct model *m, bool live)
{
	int start = (int) trng_below(&c->rng, NS);

	for (int k = 0; k < NS; k++) {
		int i = (start + k) % NS;

		if (m->v[i].live == live)
			return i;
	}
	return -1;
}

static uint64_t rand_size(struct ctx *c)
{
	/* mostly inside a block, sometimes on a boundary */
	uint64_t sectors = 1 + trng_below(&c->rng, MAXB * c->bs / 512);

	if (trng_below(&c->rng, 4) == 0)
		sectors = (1 + trng_below(&c->rng, MAXB)) * (c->bs / 512);
	return sectors * 512;
}

static void rand_bytes(struct ctx *c, uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t) trng_next(&c->rng);
}

/*
 * A batch for model m: ops[] and, in after, the state it leaves if it
 * succeeds.  Returns the index of the refused op, or -1.  The ops name
 * only volumes that exist before the batch (as the CLI requires); blobs
 * and names point into store.  slot_of[i] is the model slot op i
 * creates, or -1.
 */
struct batch {
	struct tv_op ops[8];
	size_t n;
	int slot_of[8];
	int fail; /* index of the refused op, or -1 */
	int err;  /* its error */
	char names[8][16];
	uint8_t blobs[8][BLOB + 1];
};

static void gen_batch(struct ctx *c, const struct model *m, struct model *after,
		      struct batch *b)
{
	bool pre[NS];
	size_t n = 1 + trng_below(&c->rng, 6);

	memset(b, 0, sizeof(*b));
	model_copy(after, m, c->bs);
	for (int i = 0; i < NS; i++)
		pre[i] = m->v[i].live;
	b->fail =
	    trng_below(&c->rng, 3) == 0 ? (int) trng_below(&c->rng, n) : -1;
	for (size_t k = 0; k < n; k++) {
		struct tv_op *op = &b->ops[k];
		unsigned int kind = (unsigned int) trng_below(&c->rng, 7);
		int i = pick_slot(c, after, true);

		b->slot_of[k] = -1;
		if (i >= 0 && !pre[i])
			i = -1; /* made in this batch: not nameable */
		if ((int) k == b->fail) {
			/* a request the engine refuses */
			int j = pick_slot(c, after, true);
			unsigned int why =
			    (unsigned int) trng_below(&c->rng, 4);

			if (why == 0 && j < 0)
				why = 1; /* no name to take */
			switch (why) {
			case 0:
				op->kind = TV_OP_CREATE;
				op->name = after->v[j].name;
				op->size = 4096;
				b->err = -EEXIST;
				break;
			case 1:
				op->kind = TV_OP_DELETE;
				op->id = 4000000000ull + k;
				b->err = -ENOENT;
				break;
			case 2:
				op->kind = TV_OP_RESIZE;
				op->id = i >= 0 ? after->v[i].id : 1;
				op->size = 0;
				b->err = -EINVAL;
				break;
			default:
				op->kind = TV_OP_SET_BLOB;
				op->id = i >= 0 ? after->v[i].id : 1;
				op->blob = b->blobs[k];
				op->blob_len = BLOB + 1;
				b->err = -EINVAL;
				break;
			}
			b->n = k + 1;
			return;
		}
		if (i < 0)
			kind = 0; /* nothing to name: create */
		if (kind <= 1 && pick_slot(c, after, false) < 0)
			kind = 6; /* no free slot: set-blob */
		if ((kind == 4 || kind == 5) &&
		    (after->v[i].flags & TV_VOL_READ_ONLY))
			kind = 6;
		if (kind == 6 && i < 0) {
			/* every slot taken by this batch: stop here */
			b->n = k;
			if (b->fail >= (int) k)
				b->fail = -1;
			return;
		}
		switch (kind) {
		case 0:	  /* create */
		case 1: { /* snapshot */
			int t = pick_slot(c, after, false);
			struct mvol *v = &after->v[t];

			snprintf(b->names[k], 16, "v%u", c->names++);
			op->name = b->names[k];
			if (trng_below(&c->rng, 2)) {
				rand_bytes(c, b->blobs[k], BLOB);
				op->blob = b->blobs[k];
				op->blob_len = BLOB;
			}
			v->live = true;
			v->id = 0; /* known after the reference run */
			snprintf(v->name, 16, "%s", op->name);
			memcpy(v->blob, b->blobs[k], BLOB);
			if (kind == 0) {
				op->kind = TV_OP_CREATE;
				op->size = rand_size(c);
				v->size = op->size;
				v->flags = 0;
				v->parent = 0;
				memset(v->data, 0, (size_t) MAXB * c->bs);
			} else {
				const struct mvol *o = &after->v[i];

				op->kind = TV_OP_SNAPSHOT;
				op->id = o->id;
				op->flags = trng_below(&c->rng, 4) == 0
						? TV_VOL_READ_ONLY
						: 0;
				v->size = o->size;
				v->flags = op->flags;
				v->parent = o->id;
				memcpy(v->data, o->data, (size_t) MAXB * c->bs);
			}
			b->slot_of[k] = t;
			break;
		}
		case 2: /* delete */
			op->kind = TV_OP_DELETE;
			op->id = after->v[i].id;
			after->v[i].live = false;
			pre[i] = false; /* a create may take the slot */
			break;
		case 3: /* rename: a new name or its own */
			op->kind = TV_OP_RENAME;
			op->id = after->v[i].id;
			if (trng_below(&c->rng, 4))
				snprintf(b->names[k], 16, "r%u", c->names++);
			else
				snprintf(b->names[k], 16, "%s",
					 after->v[i].name);
			op->name = b->names[k];
			snprintf(after->v[i].name, 16, "%s", op->name);
			break;
		case 4: /* grow or shrink */
		case 5: {
			struct mvol *v = &after->v[i];
			uint64_t ns = rand_size(c);

			op->kind = TV_OP_RESIZE;
			op->id = v->id;
			op->size = ns;
			if (ns > v->size)
				memset(v->data + v->size, 0, ns - v->size);
			v->size = ns;
			break;
		}
		default: /* set-blob */
			op->kind = TV_OP_SET_BLOB;
			op->id = after->v[i].id;
			rand_bytes(c, b->blobs[k], BLOB);
			op->blob = b->blobs[k];
			op->blob_len = BLOB;
			memcpy(after->v[i].blob, b->blobs[k], BLOB);
			break;
		}
	}
	b->n = n;
}

/* Random writes into the writable volumes, then a flush: the state
 * before the next batch, durable. */
static void scribble(struct ctx *c, struct tv_pool *p, struct model *m)
{
	uint8_t *buf = malloc((size_t) MAXB * c->bs);

	CHECK(buf);
	for (int i = 0; i < NS; i++) {
		struct mvol *v = &m->v[i];
		uint64_t off, len;

		if (!v->live || (v->flags & TV_VOL_READ_ONLY) ||
		    trng_below(&c->rng, 3) == 0)
			continue;
		if (trng_below(&c->rng, 2)) { /* all of it */
			off = 0;
			len = v->size;
		} else {
			off = trng_below(&c->rng, v->size / 512) * 512;
			len = (1 + trng_below(&c->rng, (v->size - off) / 512)) *
			      512;
		}
		rand_bytes(c, buf, len);
		CHECK_OK(tv_vol_write(p, v->id, buf, len, off, 0));
		memcpy(v->data + off, buf, len);
	}
	CHECK_OK(tv_pool_flush(p));
	free(buf);
}

/* Open a crash image and compare: before, or (ok_after) after. */
static void verify_image(struct ctx *c, struct io_dev *img,
			 const struct model *before, const struct model *after,
			 bool ok_after, uint64_t cut)
{
	struct tv_pool *p;
	bool ok;

	CHECK_OK(pool_open_dev(img, false, "image", &oo, &p));
	ok = matches(p, before, c->bs, false) ||
	     (ok_after && matches(p, after, c->bs, false));
	if (!ok) {
		fprintf(stderr,
			"cut after write %llu: the image is neither "
			"the state before the batch nor after it\n",
			(unsigned long long) cut);
		fprintf(stderr, " against the state before:\n");
		matches(p, before, c->bs, true);
		if (ok_after) {
			fprintf(stderr, " against the state after:\n");
			matches(p, after, c->bs, true);
		}
		CHECK(0);
	}
	clean(p);
	CHECK_OK(tv_pool_close(p));
	c->images++;
}

/* One round: writes, then a batch, cut at each of its writes.  base is
 * the durable image before; returns the image after. */
static struct io_dev *round_once(struct ctx *c, struct io_dev *base,
				 struct model *m, uint64_t seed)
{
	struct model after;
	struct batch b;
	struct io_dev *mem, *pc, *img, *next;
	struct tv_pool *p;
	uint64_t total;
	size_t failed = 99;
	int r;

	/* the writes, durable */
	CHECK_OK(io_mem_create_from(io_mem_data(base), base->size, &mem));
	CHECK_OK(pool_open_dev(mem, false, "mem", &oo, &p));
	scribble(c, p, m);
	CHECK_OK(tv_pool_close(p));
	io_close(base);
	base = mem;

	model_init(&after, c->bs);
	gen_batch(c, m, &after, &b);
	c->batches++;
	c->failing += b.fail >= 0;

	/* the reference run, to the end */
	CHECK_OK(io_mem_create_from(io_mem_data(base), base->size, &mem));
	CHECK_OK(io_pc_wrap(mem, true, &pc));
	CHECK_OK(pool_open_dev(pc, false, "pc", &oo, &p));
	r = tv_batch(p, b.ops, b.n, &failed);
	total = io_pc_ops(pc);
	if (b.fail >= 0) {
		if (r != b.err || failed != (size_t) b.fail) {
			fprintf(stderr,
				"batch of %zu: op %zu failed with %d "
				"(%s), want op %d with %d\n",
				b.n, failed, r, tv_last_error(), b.fail, b.err);
			CHECK(0);
		}
	} else {
		if (r) {
			fprintf(stderr, "batch of %zu failed at op %zu: %s\n",
				b.n, failed, tv_last_error());
			CHECK(0);
		}
		for (size_t k = 0; k < b.n; k++)
			if (b.slot_of[k] >= 0)
				after.v[b.slot_of[k]].id = b.ops[k].result_id;
	}
	if (!matches(p, b.fail >= 0 ? m : &after, c->bs, true)) {
		fprintf(stderr, "after the batch (%s), without a crash\n",
			b.fail >= 0 ? "refused" : "committed");
		CHECK(0);
	}
	CHECK_OK(tv_pool_close(p));
	CHECK_OK(io_pc_crash_image(pc, IO_PC_DROP_ALL, 0, &next));
	io_close(pc);

	/* the same batch, the power cut after each of its writes */
	for (uint64_t k = 1; k <= total; k++) {
		CHECK_OK(
		    io_mem_create_from(io_mem_data(base), base->size, &mem));
		CHECK_OK(io_pc_wrap(mem, true, &pc));
		CHECK_OK(pool_open_dev(pc, false, "pc", &oo, &p));
		io_pc_set_cut_after(pc, k);
		for (size_t i = 0; i < b.n; i++)
			b.ops[i].result_id = 0;
		tv_batch(p, b.ops, b.n, NULL);
		tv_pool_close(p);
		c->cuts++;
		CHECK_OK(io_pc_crash_image(pc, IO_PC_DROP_ALL, 0, &img));
		verify_image(c, img, m, &after, b.fail < 0, k);
		io_close(img);
		CHECK_OK(io_pc_crash_image(pc, IO_PC_APPLY_ALL, 0, &img));
		verify_image(c, img, m, &after, b.fail < 0, k);
		io_close(img);
		if (io_pc_pending(pc)) {
			CHECK_OK(io_pc_crash_image(pc, IO_PC_RANDOM,
						   seed ^ (k * 7919), &img));
			verify_image(c, img, m, &after, b.fail < 0, k);
			io_close(img);
		}
		io_close(pc);
	}
	if (b.fail < 0)
		model_copy(m, &after, c->bs);
	model_free(&after);
	io_close(base);
	return next;
}

static void part2(uint32_t bs, uint64_t seed, unsigned int rounds,
		  uint64_t *cuts, uint64_t *images)
{
	struct tv_pool_create_opts co = {.block_size = bs, .blob_size = BLOB};
	struct ctx c = {.bs = bs};
	struct io_dev *base;
	struct model m;

	trng_init(&c.rng, seed ^ bs);
	model_init(&m, bs);
	CHECK_OK(io_mem_create(8 << 20, &base));
	CHECK_OK(pool_format_dev(base, &co));
	for (unsigned int r = 0; r < rounds; r++)
		base = round_once(&c, base, &m, seed + r);
	io_close(base);
	model_free(&m);
	printf("  block size %u: %llu batches (%llu with a refused op), "
	       "%llu power cuts, %llu crash images\n",
	       bs, (unsigned long long) c.batches,
	       (unsigned long long) c.failing, (unsigned long long) c.cuts,
	       (unsigned long long) c.images);
	*cuts += c.cuts;
	*images += c.images;
}

int main(void)
{
	uint64_t seed = tseed("test-engine-atomic");
	unsigned int rounds =
	    (unsigned int) ((tsanitized() ? 12 : 40) * tscale());
	uint64_t cuts = 0, images = 0;

	if (!getenv("V"))
		log_set_sink(tquiet, NULL);
	volume_id_clock = NULL; /* ids from the counter: predictable */
	if (!getenv("TV_MODEL_ONLY")) {
		part1(4096);
		part1(65536);
	}
	part2(4096, seed, rounds, &cuts, &images);
	part2(16384, seed, rounds, &cuts, &images);
	printf("test-engine-atomic: ok (%llu power cuts, %llu crash images "
	       "checked)\n",
	       (unsigned long long) cuts, (unsigned long long) images);
	return 0;
}
