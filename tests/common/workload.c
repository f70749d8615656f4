/* SPDX-License-Identifier: GPL-2.0-or-later */
/* workload - see workload.h */
#include "workload.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pdata/sm.h"
#include "tcheck.h"
#include "util/endian.h"

#define WL_TAG 0x4b4c5754u /* "TWLK" */

struct pair {
	uint64_t key, payload;
};

struct slot {
	struct pair *v;
	size_t n, cap;
};

struct state {
	uint64_t txn;
	struct slot s[WL_SLOTS];
};

struct wl {
	struct wl_opts o;
	struct trng rng;
	struct state cur, com, attempt;
	bool attempt_valid;
	uint64_t ops;
	uint64_t payload_seq;
	unsigned int max_height;
};

unsigned int wl_max_height(const struct wl *wl)
{
	return wl->max_height;
}

static void slot_copy(struct slot *d, const struct slot *s)
{
	if (d->cap < s->n) {
		d->v = realloc(d->v, s->n * sizeof(*d->v));
		if (!d->v)
			abort();
		d->cap = s->n;
	}
	if (s->n)
		memcpy(d->v, s->v, s->n * sizeof(*d->v));
	d->n = s->n;
}

static void state_copy(struct state *d, const struct state *s)
{
	d->txn = s->txn;
	for (int i = 0; i < WL_SLOTS; i++)
		slot_copy(&d->s[i], &s->s[i]);
}

static void state_free(struct state *st)
{
	for (int i = 0; i < WL_SLOTS; i++)
		free(st->s[i].v);
}

/* index of first pair with key >= key */
static size_t lower(const struct slot *s, uint64_t key)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (s->v[mid].key < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct pair *find(struct slot *s, uint64_t key)
{
	size_t i = lower(s, key);

	return i < s->n && s->v[i].key == key ? &s->v[i] : NULL;
}

static void model_put(struct slot *s, uint64_t key, uint64_t payload)
{
	size_t i = lower(s, key);

	if (i < s->n && s->v[i].key == key) {
		s->v[i].payload = payload;
		return;
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			abort();
	}
	if (i < s->n)
		memmove(&s->v[i + 1], &s->v[i], (s->n - i) * sizeof(*s->v));
	s->v[i].key = key;
	s->v[i].payload = payload;
	s->n++;
}

static void model_remove_range(struct slot *s, uint64_t lo, uint64_t hi)
{
	size_t a = lower(s, lo), b = lower(s, hi);

	if (b > a && b < s->n)
		memmove(&s->v[a], &s->v[b], (s->n - b) * sizeof(*s->v));
	s->n -= b - a;
}

/* ---- value type: {le64 block, le64 payload}, block counted ---- */

static int v_inc(void *ctx, const void *value)
{
	return sm_inc_block(tm_sm(ctx), get_le64(value));
}

static int v_dec(void *ctx, const void *value)
{
	return sm_dec_block(tm_sm(ctx), get_le64(value), NULL);
}

static void v_check(void *ctx, const void *value, struct check *ck)
{
	(void) ctx;
	check_data_ref(ck, get_le64(value));
}

void wl_info(struct wl *wl, struct tm *tm, struct btree_info *info)
{
	memset(info, 0, sizeof(*info));
	info->tm = tm;
	info->tag = WL_TAG;
	info->key_size = wl->o.key_size;
	info->value.size = wl->o.value_size;
	info->value.ctx = tm;
	info->value.inc = v_inc;
	info->value.dec = v_dec;
	info->value.check = v_check;
}

unsigned int wl_check_roots(struct wl *wl, struct tm *tm,
			    struct check_root *roots)
{
	static struct btree_info info; /* one tm at a time in tests */

	wl_info(wl, tm, &info);
	for (unsigned int i = 0; i < WL_SLOTS; i++) {
		roots[i].slot = i;
		roots[i].info = &info;
		roots[i].name = "workload";
	}
	return WL_SLOTS;
}

int wl_create(const struct wl_opts *o, struct wl **out)
{
	struct wl *wl = calloc(1, sizeof(*wl));

	if (!wl)
		return -ENOMEM;
	wl->o = *o;
	if (!wl->o.key_range)
		wl->o.key_range = 2000;
	if (!wl->o.commit_every)
		wl->o.commit_every = 20;
	if (!wl->o.key_size)
		wl->o.key_size = 8;
	if (!wl->o.value_size)
		wl->o.value_size = 16;
	if (wl->o.key_size < 8 || wl->o.key_size > BTREE_MAX_KEY ||
	    wl->o.value_size < 16 || wl->o.value_size > BTREE_MAX_VALUE) {
		free(wl);
		return -EINVAL;
	}
	trng_init(&wl->rng, o->seed);
	*out = wl;
	return 0;
}

void wl_destroy(struct wl *wl)
{
	if (!wl)
		return;
	state_free(&wl->cur);
	state_free(&wl->com);
	state_free(&wl->attempt);
	free(wl);
}

uint64_t wl_ops(const struct wl *wl)
{
	return wl->ops;
}

uint64_t wl_committed_txn(const struct wl *wl)
{
	return wl->com.txn;
}

/* Bytes after the first 8 of a key or value: a pattern of seed. */
static void pattern(uint8_t *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t) ((seed * 0x9E3779B97F4A7C15ull) >>
				  (8 * (i % 8))) ^
		       (uint8_t) i;
}

static bool pattern_ok(const uint8_t *p, size_t len, uint64_t seed)
{
	uint8_t want[BTREE_MAX_VALUE];

	pattern(want, len, seed);
	return !memcmp(p, want, len);
}

#define key_be(k, key) make_key(wl, k, key)
static void make_key(const struct wl *wl, uint8_t *k, uint64_t key)
{
	put_be64(k, key);
	pattern(k + 8, wl->o.key_size - 8, key);
}

static int new_value(struct wl *wl, struct tm *tm, uint8_t *v,
		     uint64_t *payload)
{
	uint64_t block;
	int r = sm_alloc_block(tm_sm(tm), &block);

	if (r < 0)
		return r;
	*payload = ++wl->payload_seq;
	put_le64(v, block);
	put_le64(v + 8, *payload);
	pattern(v + 16, wl->o.value_size - 16, *payload);
	return 0;
}

int wl_commit(struct wl *wl, struct tm *tm)
{
	int r;

	state_copy(&wl->attempt, &wl->cur);
	wl->attempt.txn = tm_txn(tm);
	wl->attempt_valid = true;
	/* every other commit a ranged one (only the transaction's nodes
	 * are synced; the same as a full one on a device without ranged
	 * syncs) */
	r = wl->attempt.txn % 2 ? tm_commit_ranged(tm, NULL, 0) : tm_commit(tm);
	if (r < 0)
		return r;
	state_copy(&wl->com, &wl->attempt);
	wl->attempt_valid = false;
	wl->cur.txn = tm_txn(tm);
	return 0;
}

void wl_abort(struct wl *wl)
{
	state_copy(&wl->cur, &wl->com);
	wl->attempt_valid = false;
}

int wl_sync_to(struct wl *wl, uint64_t txn)
{
	if (wl->attempt_valid && txn == wl->attempt.txn)
		state_copy(&wl->com, &wl->attempt);
	else if (txn != wl->com.txn && !(wl->com.txn == 0 && txn <= 1))
		return -EUCLEAN;
	wl->com.txn = txn;
	wl->attempt_valid = false;
	state_copy(&wl->cur, &wl->com);
	return 0;
}

int wl_step(struct wl *wl, struct tm *tm, bool *committed)
{
	struct btree_info info;
	struct trng *g = &wl->rng;
	/* most work on slot 0, which grows large; the others come and go */
	unsigned int si =
	    trng_below(g, 4) ? 0 : (unsigned int) trng_below(g, WL_SLOTS);
	struct slot *s = &wl->cur.s[si];
	struct tm_ref *root = tm_root(tm, si);
	uint64_t key = trng_below(g, wl->o.key_range), payload;
	unsigned int op = (unsigned int) trng_below(g, 200);
	uint8_t k[BTREE_MAX_KEY], v[BTREE_MAX_VALUE];
	int r = 0;

	*committed = false;
	wl->ops++;
	if (!wl->cur.txn)
		wl->cur.txn = tm_txn(tm);
	if (!wl->com.txn)
		wl->com.txn = tm_committed_txn(tm);
	wl_info(wl, tm, &info);
	key_be(k, key);

	if (trng_below(g, wl->o.commit_every) == 0) {
		r = wl_commit(wl, tm);
		*committed = r == 0;
		return r;
	}
	if (op < 90) { /* insert */
		bool exists = find(s, key) != NULL;
		r = new_value(wl, tm, v, &payload);
		if (r < 0)
			return r;
		r = btree_insert(&info, root, k, v);
		if (exists) {
			if (r != -EEXIST) {
				fprintf(stderr, "insert of present key: %d\n",
					r);
				return r ? r : -EUCLEAN;
			}
			/* the reference stayed with us */
			return sm_dec_block(tm_sm(tm), get_le64(v), NULL);
		}
		if (r == 0)
			model_put(s, key, payload);
	} else if (op < 115) { /* update an existing key, or a missing one */
		bool exists;
		if (s->n && trng_below(g, 4)) {
			key = s->v[trng_below(g, s->n)].key;
			key_be(k, key);
		}
		exists = find(s, key) != NULL;
		r = new_value(wl, tm, v, &payload);
		if (r < 0)
			return r;
		r = btree_update(&info, root, k, v);
		if (!exists) {
			if (r != -ENOENT)
				return r ? r : -EUCLEAN;
			return sm_dec_block(tm_sm(tm), get_le64(v), NULL);
		}
		if (r == 0)
			model_put(s, key, payload);
	} else if (op < 130) { /* put */
		r = new_value(wl, tm, v, &payload);
		if (r < 0)
			return r;
		r = btree_put(&info, root, k, v, NULL);
		if (r == 0)
			model_put(s, key, payload);
	} else if (op < 166) { /* remove */
		bool exists;
		if (s->n && trng_below(g, 4)) {
			key = s->v[trng_below(g, s->n)].key;
			key_be(k, key);
		}
		exists = find(s, key) != NULL;
		r = btree_remove(&info, root, k, NULL);
		if (!exists)
			return r == -ENOENT ? 0 : (r ? r : -EUCLEAN);
		if (r == 0)
			model_remove_range(s, key, key + 1);
	} else if (op < 172) { /* remove_range */
		uint64_t span = trng_below(g, wl->o.key_range / 16 + 1);
		uint8_t hk[BTREE_MAX_KEY];
		key_be(hk, key + span);
		r = btree_remove_range(&info, root, k, hk, NULL);
		if (r == 0)
			model_remove_range(s, key, key + span);
	} else if (op < 192) { /* lookup */
		struct pair *p = find(s, key);
		r = btree_lookup(&info, root, k, v);
		if (!p)
			return r == -ENOENT ? 0 : (r ? r : -EUCLEAN);
		if (r == 0 &&
		    (get_le64(v + 8) != p->payload ||
		     !pattern_ok(v + 16, wl->o.value_size - 16, p->payload))) {
			fprintf(stderr,
				"lookup slot %u key %" PRIu64
				": payload %" PRIu64 ", model %" PRIu64 "\n",
				si, key, get_le64(v + 8), p->payload);
			return -EUCLEAN;
		}
	} else if (op < 197) { /* clone slot si into another slot */
		/* never over slot 0: it is the big tree that keeps growing */
		unsigned int di =
		    1 + (unsigned int) trng_below(g, WL_SLOTS - 1);
		if (di == si)
			return 0;
		struct tm_ref *droot = tm_root(tm, di);
		r = btree_del(&info, droot);
		if (r == 0)
			r = btree_clone(&info, root, droot);
		if (r == 0)
			slot_copy(&wl->cur.s[di], s);
	} else { /* delete a tree, not slot 0 */
		if (si == 0) {
			si = 1 + (unsigned int) trng_below(g, WL_SLOTS - 1);
			s = &wl->cur.s[si];
			root = tm_root(tm, si);
		}
		r = btree_del(&info, root);
		if (r == 0)
			s->n = 0;
	}
	return r;
}

int wl_verify(struct wl *wl, struct tm *tm, uint64_t txn)
{
	struct check_root roots[WL_SLOTS];
	struct check_report rep;
	const struct state *st;
	struct btree_info info;
	unsigned int nr;
	int r;

	if (txn == wl->com.txn)
		st = &wl->com;
	else if (wl->attempt_valid && txn == wl->attempt.txn)
		st = &wl->attempt;
	else if (txn == wl->cur.txn)
		st = &wl->cur;
	else {
		fprintf(stderr,
			"verify: txn %" PRIu64
			" is neither the committed %" PRIu64
			" nor the attempted one\n",
			txn, wl->com.txn);
		return -EUCLEAN;
	}
	wl_info(wl, tm, &info);
	for (unsigned int i = 0; i < WL_SLOTS; i++) {
		const struct slot *s = &st->s[i];
		struct btree_cursor c;
		unsigned int h;
		size_t n = 0;

		if (btree_height(&info, tm_root(tm, i), &h) == 0 &&
		    h > wl->max_height)
			wl->max_height = h;
		r = btree_cursor_seek(&info, tm_root(tm, i), NULL, &c);
		while (r == 0 && c.valid) {
			const uint8_t *kp = btree_cursor_key(&c);
			const uint8_t *vp = btree_cursor_value(&c);
			uint64_t key = get_be64(kp);
			uint64_t pl = get_le64(vp + 8);
			if (n >= s->n || s->v[n].key != key ||
			    s->v[n].payload != pl ||
			    !pattern_ok(kp + 8, wl->o.key_size - 8, key) ||
			    !pattern_ok(vp + 16, wl->o.value_size - 16, pl)) {
				fprintf(stderr,
					"verify txn %" PRIu64 " slot %u entry "
					"%zu: store has %" PRIu64 "=%" PRIu64
					", model %s\n",
					txn, i, n, key, pl,
					n >= s->n ? "ends" : "differs");
				btree_cursor_close(&c);
				return -EUCLEAN;
			}
			n++;
			r = btree_cursor_next(&c);
		}
		btree_cursor_close(&c);
		if (r < 0)
			return r;
		if (n != s->n) {
			fprintf(stderr,
				"verify txn %" PRIu64 " slot %u: store "
				"has %zu entries, model %zu\n",
				txn, i, n, s->n);
			return -EUCLEAN;
		}
	}
	nr = wl_check_roots(wl, tm, roots);
	r = check_run(tm, roots, nr, stderr, 20, &rep);
	if (r < 0)
		return r;
	if (!check_clean(&rep)) {
		fprintf(stderr, "verify txn %" PRIu64 ": check not clean\n",
			txn);
		return -EUCLEAN;
	}
	return 0;
}
