/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bc.c - block cache of metadata nodes.  Contract in bc.h.
 *
 * Entries live in a chained hash table keyed by node number.  An entry is
 * on the LRU list exactly when it is not pinned; eviction takes the least
 * recently used unpinned entry, writing it first if it is dirty.
 */
#include "pdata/bc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/crc32c.h"
#include "util/log.h"

struct bc_entry {
	struct bc_node node; /* first: bc_node pointers convert back */
	struct bc_entry *hnext;
	struct bc_entry *lru_prev, *lru_next;
	uint32_t pins;
	bool dirty;
};

struct bc {
	struct io_dev *dev;
	uint64_t pool_tag;
	size_t max_nodes;
	size_t nr_nodes;
	size_t nr_dirty;
	size_t nr_pinned;
	struct bc_entry **buckets;
	size_t nr_buckets; /* power of two */
	/* LRU of unpinned entries: head = most recent */
	struct bc_entry *lru_head, *lru_tail;
	struct bc_stats st;
	uint8_t *wbuf; /* coalescing buffer for bc_write_dirty */
};

#define BC_MIN_NODES 16
#define BC_WRITE_BATCH 64 /* nodes per coalesced write */

static struct bc_entry *to_entry(struct bc_node *n)
{
	return (struct bc_entry *)n;
}

static size_t hash_slot(const struct bc *bc, uint64_t blocknr)
{
	return (size_t)((blocknr * 0x9E3779B97F4A7C15ull) >> 32) &
	       (bc->nr_buckets - 1);
}

static struct bc_entry *lookup(const struct bc *bc, uint64_t blocknr)
{
	struct bc_entry *e = bc->buckets[hash_slot(bc, blocknr)];

	while (e && e->node.blocknr != blocknr)
		e = e->hnext;
	return e;
}

static void hash_add(struct bc *bc, struct bc_entry *e)
{
	size_t s = hash_slot(bc, e->node.blocknr);

	e->hnext = bc->buckets[s];
	bc->buckets[s] = e;
}

static void hash_del(struct bc *bc, struct bc_entry *e)
{
	struct bc_entry **pp = &bc->buckets[hash_slot(bc, e->node.blocknr)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
}

static void lru_del(struct bc *bc, struct bc_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		bc->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		bc->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_add_head(struct bc *bc, struct bc_entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = bc->lru_head;
	if (bc->lru_head)
		bc->lru_head->lru_prev = e;
	else
		bc->lru_tail = e;
	bc->lru_head = e;
}

static void entry_free(struct bc *bc, struct bc_entry *e)
{
	hash_del(bc, e);
	if (e->dirty)
		bc->nr_dirty--;
	bc->nr_nodes--;
	free(e->node.data);
	free(e);
}

void bc_seal(void *data)
{
	struct disk_node_header *h = data;

	h->csum = cpu_to_le32(crc32c(0, (uint8_t *)data + 4,
				     PD_NODE_SIZE - 4));
}

int bc_check_header(const void *data, uint64_t blocknr, uint64_t pool_tag,
		    const struct bc_expect *exp)
{
	const struct disk_node_header *h = data;
	uint32_t want = crc32c(0, (const uint8_t *)data + 4, PD_NODE_SIZE - 4);
	uint32_t got = le32_to_cpu(h->csum);

	if (got != want) {
		log_error("metadata node %" PRIu64
			  ": checksum mismatch (stored %08x, computed %08x)",
			  blocknr, got, want);
		return -EUCLEAN;
	}
	if (le64_to_cpu(h->blocknr) != blocknr) {
		log_error("metadata node %" PRIu64
			  ": holds node %" PRIu64 " (misdirected write)",
			  blocknr, (uint64_t)le64_to_cpu(h->blocknr));
		return -EUCLEAN;
	}
	if (le64_to_cpu(h->pool_tag) != pool_tag) {
		log_error("metadata node %" PRIu64 ": belongs to another pool "
			  "(tag %016" PRIx64 ", expected %016" PRIx64 ")",
			  blocknr, (uint64_t)le64_to_cpu(h->pool_tag),
			  pool_tag);
		return -EUCLEAN;
	}
	if (exp && le32_to_cpu(h->magic) != exp->magic) {
		log_error("metadata node %" PRIu64
			  ": wrong kind (magic %08x, expected %08x)",
			  blocknr, le32_to_cpu(h->magic), exp->magic);
		return -EUCLEAN;
	}
	if (exp && exp->gen && le64_to_cpu(h->gen) != exp->gen) {
		log_error("metadata node %" PRIu64 ": generation %" PRIu64
			  ", expected %" PRIu64 " (stale or lost write)",
			  blocknr, (uint64_t)le64_to_cpu(h->gen), exp->gen);
		return -EUCLEAN;
	}
	return 0;
}

/* The cheap part of the header check, for nodes already in memory. */
static int check_cached(const struct bc_entry *e, const struct bc_expect *exp)
{
	const struct disk_node_header *h = node_hdr(e->node.data);

	if (!exp)
		return 0;
	if (le32_to_cpu(h->magic) != exp->magic) {
		log_error("metadata node %" PRIu64
			  ": wrong kind (magic %08x, expected %08x)",
			  e->node.blocknr, le32_to_cpu(h->magic), exp->magic);
		return -EUCLEAN;
	}
	if (exp->gen && le64_to_cpu(h->gen) != exp->gen) {
		log_error("metadata node %" PRIu64 ": generation %" PRIu64
			  ", expected %" PRIu64 " (stale or lost write)",
			  e->node.blocknr, (uint64_t)le64_to_cpu(h->gen),
			  exp->gen);
		return -EUCLEAN;
	}
	return 0;
}

int bc_create(struct io_dev *dev, uint64_t pool_tag, size_t cache_bytes,
	      struct bc **out)
{
	struct bc *bc = calloc(1, sizeof(*bc));
	size_t nb = 1;

	if (!bc)
		return -ENOMEM;
	bc->dev = dev;
	bc->pool_tag = pool_tag;
	bc->max_nodes = cache_bytes / PD_NODE_SIZE;
	if (bc->max_nodes < BC_MIN_NODES)
		bc->max_nodes = BC_MIN_NODES;
	while (nb < bc->max_nodes)
		nb <<= 1;
	bc->nr_buckets = nb;
	bc->buckets = calloc(nb, sizeof(*bc->buckets));
	bc->wbuf = aligned_alloc(PD_NODE_SIZE,
				 (size_t)BC_WRITE_BATCH * PD_NODE_SIZE);
	if (!bc->buckets || !bc->wbuf) {
		free(bc->buckets);
		free(bc->wbuf);
		free(bc);
		return -ENOMEM;
	}
	*out = bc;
	return 0;
}

void bc_destroy(struct bc *bc)
{
	if (!bc)
		return;
	for (size_t i = 0; i < bc->nr_buckets; i++) {
		struct bc_entry *e = bc->buckets[i];
		while (e) {
			struct bc_entry *next = e->hnext;
			free(e->node.data);
			free(e);
			e = next;
		}
	}
	free(bc->buckets);
	free(bc->wbuf);
	free(bc);
}

void bc_set_pool_tag(struct bc *bc, uint64_t pool_tag)
{
	bc->pool_tag = pool_tag;
}

static int write_one(struct bc *bc, struct bc_entry *e)
{
	int r;

	bc_seal(e->node.data);
	r = io_write(bc->dev, e->node.data, PD_NODE_SIZE,
		     e->node.blocknr << PD_NODE_SHIFT);
	if (r < 0) {
		log_error("metadata node %" PRIu64 ": write failed: %s",
			  e->node.blocknr, strerror(-r));
		return r;
	}
	bc->st.writes++;
	e->dirty = false;
	bc->nr_dirty--;
	return 0;
}

/* Make room for one more entry: evict unpinned entries beyond the budget. */
static int make_room(struct bc *bc)
{
	while (bc->nr_nodes >= bc->max_nodes && bc->lru_tail) {
		struct bc_entry *e = bc->lru_tail;
		int r;

		if (e->dirty) {
			r = write_one(bc, e);
			if (r < 0)
				return r;
		}
		lru_del(bc, e);
		entry_free(bc, e);
		bc->st.evictions++;
	}
	return 0;
}

static int entry_alloc(struct bc *bc, uint64_t blocknr, struct bc_entry **out)
{
	struct bc_entry *e;
	int r = make_room(bc);

	if (r < 0)
		return r;
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->node.data = aligned_alloc(PD_NODE_SIZE, PD_NODE_SIZE);
	if (!e->node.data) {
		free(e);
		return -ENOMEM;
	}
	e->node.blocknr = blocknr;
	*out = e;
	return 0;
}

static void pin(struct bc *bc, struct bc_entry *e)
{
	if (!e->pins++) {
		lru_del(bc, e);
		bc->nr_pinned++;
	}
}

int bc_get(struct bc *bc, uint64_t blocknr, const struct bc_expect *exp,
	   struct bc_node **out)
{
	struct bc_entry *e = lookup(bc, blocknr);
	int r;

	if (e) {
		r = check_cached(e, exp);
		if (r < 0)
			return r;
		bc->st.hits++;
		pin(bc, e);
		*out = &e->node;
		return 0;
	}
	bc->st.misses++;
	if (blocknr >= (bc->dev->size >> PD_NODE_SHIFT)) {
		log_error("metadata node %" PRIu64
			  ": beyond the end of %s (%" PRIu64 " bytes)",
			  blocknr, bc->dev->name, bc->dev->size);
		return -EUCLEAN;
	}
	r = entry_alloc(bc, blocknr, &e);
	if (r < 0)
		return r;
	r = io_read(bc->dev, e->node.data, PD_NODE_SIZE,
		    blocknr << PD_NODE_SHIFT);
	if (r < 0) {
		log_error("metadata node %" PRIu64 ": read failed: %s",
			  blocknr, strerror(-r));
		goto fail;
	}
	bc->st.reads++;
	r = bc_check_header(e->node.data, blocknr, bc->pool_tag, exp);
	if (r < 0)
		goto fail;
	if (exp && exp->validate) {
		r = exp->validate(&e->node, exp->ctx);
		if (r < 0)
			goto fail;
	}
	hash_add(bc, e);
	bc->nr_nodes++;
	e->pins = 1;
	bc->nr_pinned++;
	*out = &e->node;
	return 0;
fail:
	free(e->node.data);
	free(e);
	return r;
}

int bc_new(struct bc *bc, uint64_t blocknr, uint32_t magic, uint64_t gen,
	   struct bc_node **out)
{
	struct bc_entry *e = lookup(bc, blocknr);
	struct disk_node_header *h;
	int r;

	if (e) {
		if (e->pins) {
			log_error("metadata node %" PRIu64
				  ": reallocated while still in use",
				  blocknr);
			return -EUCLEAN;
		}
		pin(bc, e);
	} else {
		r = entry_alloc(bc, blocknr, &e);
		if (r < 0)
			return r;
		hash_add(bc, e);
		bc->nr_nodes++;
		e->pins = 1;
		bc->nr_pinned++;
	}
	memset(e->node.data, 0, PD_NODE_SIZE);
	h = (struct disk_node_header *)e->node.data;
	h->magic = cpu_to_le32(magic);
	h->blocknr = cpu_to_le64(blocknr);
	h->gen = cpu_to_le64(gen);
	h->pool_tag = cpu_to_le64(bc->pool_tag);
	if (!e->dirty) {
		e->dirty = true;
		bc->nr_dirty++;
	}
	*out = &e->node;
	return 0;
}

void bc_put(struct bc *bc, struct bc_node *n)
{
	struct bc_entry *e = to_entry(n);

	if (!--e->pins) {
		bc->nr_pinned--;
		lru_add_head(bc, e);
	}
}

void bc_dirty(struct bc *bc, struct bc_node *n)
{
	struct bc_entry *e = to_entry(n);

	if (!e->dirty) {
		e->dirty = true;
		bc->nr_dirty++;
	}
}

static int cmp_entry(const void *a, const void *b)
{
	uint64_t x = (*(struct bc_entry *const *)a)->node.blocknr;
	uint64_t y = (*(struct bc_entry *const *)b)->node.blocknr;

	return x < y ? -1 : x > y;
}

int bc_write_dirty(struct bc *bc)
{
	struct bc_entry **v;
	size_t n = 0, i = 0;
	int r = 0;

	if (!bc->nr_dirty)
		return 0;
	v = malloc(bc->nr_dirty * sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (size_t b = 0; b < bc->nr_buckets; b++)
		for (struct bc_entry *e = bc->buckets[b]; e; e = e->hnext)
			if (e->dirty)
				v[n++] = e;
	qsort(v, n, sizeof(*v), cmp_entry);

	/* Coalesce runs of adjacent nodes into one write each. */
	while (i < n) {
		size_t run = 1;

		while (i + run < n && run < BC_WRITE_BATCH &&
		       v[i + run]->node.blocknr == v[i]->node.blocknr + run)
			run++;
		if (run == 1) {
			r = write_one(bc, v[i]);
			if (r < 0)
				break;
		} else {
			for (size_t k = 0; k < run; k++) {
				bc_seal(v[i + k]->node.data);
				memcpy(bc->wbuf + k * PD_NODE_SIZE,
				       v[i + k]->node.data, PD_NODE_SIZE);
			}
			r = io_write(bc->dev, bc->wbuf, run * PD_NODE_SIZE,
				     v[i]->node.blocknr << PD_NODE_SHIFT);
			if (r < 0) {
				log_error("metadata nodes %" PRIu64
					  "..%" PRIu64 ": write failed: %s",
					  v[i]->node.blocknr,
					  v[i]->node.blocknr + run - 1,
					  strerror(-r));
				break;
			}
			bc->st.writes += run;
			for (size_t k = 0; k < run; k++)
				v[i + k]->dirty = false;
			bc->nr_dirty -= run;
		}
		i += run;
	}
	free(v);
	return r;
}

void bc_forget_gen(struct bc *bc, uint64_t gen)
{
	for (size_t b = 0; b < bc->nr_buckets; b++) {
		struct bc_entry *e = bc->buckets[b];
		while (e) {
			struct bc_entry *next = e->hnext;
			if (!e->pins &&
			    le64_to_cpu(node_hdr(e->node.data)->gen) >= gen) {
				lru_del(bc, e);
				entry_free(bc, e);
			}
			e = next;
		}
	}
}

void bc_forget(struct bc *bc, uint64_t blocknr)
{
	struct bc_entry *e = lookup(bc, blocknr);

	if (e && !e->pins) {
		lru_del(bc, e);
		entry_free(bc, e);
	}
}

void bc_stats(const struct bc *bc, struct bc_stats *st)
{
	*st = bc->st;
	st->nodes = bc->nr_nodes;
	st->dirty = bc->nr_dirty;
	st->pinned = bc->nr_pinned;
}
