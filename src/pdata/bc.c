/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * bc.c - block cache of metadata nodes.  Contract in bc.h.
 *
 * Layout (chosen for warm lookups, which are memory-latency bound: see
 * bench/README.md):
 *
 *   - Entries live in slots.  Slot i is entry ents[i & mask] of chunk
 *     i >> shift, and its node data is the 4 KiB at data + (i & mask) *
 *     4096 of the same chunk.  A chunk's data is one allocation (2 MiB,
 *     2 MiB-aligned and MADV_HUGEPAGE for big caches), so nodes cost no
 *     malloc each and few TLB entries.  Slots are never freed before
 *     bc_destroy: freed ones go on a free list and are reused, so the
 *     cache holds the memory of its peak node count (the budget, plus
 *     whatever pinned nodes pushed it over).
 *   - The index is an open-addressing hash table (linear probing,
 *     backward-shift deletion, at most half full) of { blocknr, slot }
 *     pairs (huge pages too once it reaches 2 MiB).  A probe compares
 *     blocknr in the table itself, and the slot number gives both the
 *     entry and the node data by arithmetic, so a hit costs one table
 *     miss and then the entry and data misses in parallel instead of a
 *     chain of dependent ones.
 *   - Eviction is CLOCK: a hit sets the entry's reference bit (no list is
 *     touched); make_room sweeps the slots, clears set bits, skips pinned
 *     entries, and evicts the first unpinned entry whose bit was clear,
 *     writing it first if it is dirty.  This approximates least recently
 *     used (bc.h): an entry used since the hand last passed survives.
 *   - Dirty entries are also on a doubly linked dirty list, so
 *     bc_write_dirty costs O(dirty log dirty), not O(cache).
 *
 * Rules kept by every function:
 *   1. An entry is live (in the hash table, counted in nr_nodes) or on the
 *      free list, never both.
 *   2. A live entry is on the dirty list exactly when e->dirty; nr_dirty
 *      is the list's length.  Free entries are never dirty.
 *   3. nr_pinned is the number of live entries with pins > 0.
 */
#include "pdata/bc.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "util/crc32c.h"
#include "util/log.h"

#if defined(__SANITIZE_ADDRESS__)
#define BC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BC_ASAN 1
#endif
#endif
#ifdef BC_ASAN
#include <sanitizer/asan_interface.h>
/* A free slot's node data is poisoned: a use after bc_put + eviction (or
 * bc_forget) is reported as it was when every node had its own malloc. */
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n)   ((void) (p), (void) (n))
#define UNPOISON(p, n) ((void) (p), (void) (n))
#endif

/* 32 bytes: two to a cache line, never straddling one. */
struct bc_entry {
	struct bc_node node; /* first: bc_node pointers convert back */
	uint32_t slot;	     /* own slot number */
	uint32_t pins : 29;
	uint32_t dirty : 1;
	uint32_t ref : 1; /* CLOCK reference bit */
	uint32_t live : 1;
	/* slots of the neighbours on the dirty list while dirty (BC_EMPTY:
	 * none); dnext links the free list while free */
	uint32_t dprev, dnext;
};
_Static_assert(sizeof(struct bc_entry) == 32, "bc_entry size");
#define BC_MAX_PINS ((1u << 29) - 1)

struct bc_chunk {
	struct bc_entry *ents;
	uint8_t *data;
	size_t len;
	size_t map_len; /* see big_alloc */
};

struct bc_hslot {
	uint64_t blocknr;
	uint32_t slot; /* BC_EMPTY: unused */
	uint32_t pad;
};

struct bc {
	struct io_dev *dev;
	uint64_t pool_tag;
	size_t max_nodes;
	size_t nr_nodes;
	size_t nr_dirty;
	size_t nr_pinned;
	/* hash table */
	struct bc_hslot *htab;
	size_t htab_map_len; /* see big_alloc */
	size_t hmask; /* nr of table slots - 1 (power of two minus one) */
	unsigned int hshift; /* 64 - log2(table size) */
	/* slots */
	struct bc_chunk *chunks;
	size_t nr_chunks, chunks_cap;
	unsigned int cshift; /* log2(nodes per chunk) */
	size_t nr_slots;     /* nr_chunks << cshift */
	uint32_t free_list;  /* slot, BC_EMPTY: none */
	size_t hand;	     /* CLOCK hand: next slot to look at */
	/* dirty list (unordered) */
	uint32_t dirty_head;	/* slot, BC_EMPTY: none */
	struct bc_entry **dvec; /* bc_write_dirty's sort buffer */
	size_t dvec_cap;
	struct bc_stats st;
	uint8_t *wbuf; /* coalescing buffer for bc_write_dirty */
	/* every node written since bc_written_clear, as byte ranges (runs
	 * of neighbours merged); incomplete when out of memory */
	struct io_range *wr;
	size_t nr_wr, wr_cap;
	bool wr_lost;
};

#define BC_MIN_NODES	   16
#define BC_WRITE_BATCH	   64 /* nodes per coalesced write */
#define BC_EMPTY	   UINT32_MAX
#define BC_CHUNK_SHIFT_MAX 9 /* 512 nodes = 2 MiB: one huge page */
#define BC_HUGE		   (2u << 20)
#define BC_HTAB_MIN	   64
/* the slot number must fit a uint32_t below BC_EMPTY */
#define BC_MAX_SLOTS ((size_t) UINT32_MAX >> 1)

static struct bc_entry *to_entry(struct bc_node *n)
{
	return (struct bc_entry *) n;
}

static struct bc_entry *slot_entry(const struct bc *bc, size_t slot)
{
	size_t mask = ((size_t) 1 << bc->cshift) - 1;

	return &bc->chunks[slot >> bc->cshift].ents[slot & mask];
}

static uint8_t *slot_data(const struct bc *bc, size_t slot)
{
	size_t mask = ((size_t) 1 << bc->cshift) - 1;

	return bc->chunks[slot >> bc->cshift].data +
	       (slot & mask) * PD_NODE_SIZE;
}

/*
 * len bytes (4096-aligned if len is a multiple of 4096).  A multiple of
 * 2 MiB comes from mmap, 2 MiB-aligned and advised into huge pages (warm
 * lookups are bound by cache and TLB misses).  *map_len says which: 0 for
 * the C library.  big_free undoes.
 */
static void *big_alloc(size_t len, size_t *map_len)
{
	if (len >= BC_HUGE && len % BC_HUGE == 0) {
		size_t ml = len + BC_HUGE;
		uint8_t *p = mmap(NULL, ml, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		uintptr_t a;

		if (p != MAP_FAILED) {
			/* trim to a 2 MiB-aligned run of len bytes */
			a = ((uintptr_t) p + BC_HUGE - 1) &
			    ~(uintptr_t) (BC_HUGE - 1);
			if (a > (uintptr_t) p)
				munmap(p, a - (uintptr_t) p);
			if ((uintptr_t) p + ml > a + len)
				munmap((uint8_t *) (a + len),
				       (uintptr_t) p + ml - (a + len));
#ifdef MADV_HUGEPAGE
			/* advice only: without it we just get 4 KiB pages */
			(void) madvise((void *) a, len, MADV_HUGEPAGE);
#endif
			*map_len = len;
			return (void *) a;
		}
		/* fall back to the C library */
	}
	*map_len = 0;
	/* C11: aligned_alloc wants a multiple of the alignment */
	if (len % PD_NODE_SIZE)
		return malloc(len);
	return aligned_alloc(PD_NODE_SIZE, len);
}

static void big_free(void *p, size_t map_len)
{
	if (map_len)
		munmap(p, map_len);
	else
		free(p);
}

/* ---- hash table ---- */

static size_t hash_home(const struct bc *bc, uint64_t blocknr)
{
	return (size_t) ((blocknr * 0x9E3779B97F4A7C15ull) >> bc->hshift);
}

/* The table slot holding blocknr, or the empty slot where it would go. */
static size_t hash_find(const struct bc *bc, uint64_t blocknr)
{
	size_t i = hash_home(bc, blocknr);

	for (;;) {
		const struct bc_hslot *h = &bc->htab[i];

		if (h->slot == BC_EMPTY || h->blocknr == blocknr)
			return i;
		i = (i + 1) & bc->hmask;
	}
}

static struct bc_entry *lookup(const struct bc *bc, uint64_t blocknr)
{
	const struct bc_hslot *h = &bc->htab[hash_find(bc, blocknr)];

	return h->slot == BC_EMPTY ? NULL : slot_entry(bc, h->slot);
}

static int htab_alloc(struct bc *bc, size_t size)
{
	size_t map_len;
	struct bc_hslot *t = big_alloc(size * sizeof(*t), &map_len);
	unsigned int bits = 0;

	if (!t)
		return -ENOMEM;
	bc->htab_map_len = map_len;
	for (size_t i = 0; i < size; i++)
		t[i].slot = BC_EMPTY;
	while (((size_t) 1 << bits) < size)
		bits++;
	bc->htab = t;
	bc->hmask = size - 1;
	bc->hshift = 64 - bits;
	return 0;
}

/* Keep the table at most half full after one more insert. */
static int hash_reserve(struct bc *bc)
{
	struct bc_hslot *old = bc->htab;
	size_t old_size = bc->hmask + 1, old_map_len = bc->htab_map_len;
	int r;

	if ((bc->nr_nodes + 1) * 2 <= old_size)
		return 0;
	r = htab_alloc(bc, old_size * 2);
	if (r < 0)
		return r;
	for (size_t i = 0; i < old_size; i++)
		if (old[i].slot != BC_EMPTY)
			bc->htab[hash_find(bc, old[i].blocknr)] = old[i];
	big_free(old, old_map_len);
	return 0;
}

/* Insert (hash_reserve was called: there is room). */
static void hash_add(struct bc *bc, uint64_t blocknr, uint32_t slot)
{
	struct bc_hslot *h = &bc->htab[hash_find(bc, blocknr)];

	h->blocknr = blocknr;
	h->slot = slot;
}

/* Backward-shift deletion: no tombstones, probes stay short. */
static void hash_del(struct bc *bc, uint64_t blocknr)
{
	size_t i = hash_find(bc, blocknr), j = i;

	for (;;) {
		size_t home;

		j = (j + 1) & bc->hmask;
		if (bc->htab[j].slot == BC_EMPTY)
			break;
		home = hash_home(bc, bc->htab[j].blocknr);
		/* move j back to i unless its home lies in (i, j] */
		if (((j - home) & bc->hmask) >= ((j - i) & bc->hmask)) {
			bc->htab[i] = bc->htab[j];
			i = j;
		}
	}
	bc->htab[i].slot = BC_EMPTY;
}

/* ---- dirty list ---- */

static void dirty_add(struct bc *bc, struct bc_entry *e)
{
	if (e->dirty)
		return;
	e->dirty = 1;
	e->dprev = BC_EMPTY;
	e->dnext = bc->dirty_head;
	if (bc->dirty_head != BC_EMPTY)
		slot_entry(bc, bc->dirty_head)->dprev = e->slot;
	bc->dirty_head = e->slot;
	bc->nr_dirty++;
}

static void dirty_del(struct bc *bc, struct bc_entry *e)
{
	if (e->dprev != BC_EMPTY)
		slot_entry(bc, e->dprev)->dnext = e->dnext;
	else
		bc->dirty_head = e->dnext;
	if (e->dnext != BC_EMPTY)
		slot_entry(bc, e->dnext)->dprev = e->dprev;
	e->dprev = e->dnext = BC_EMPTY;
	e->dirty = 0;
	bc->nr_dirty--;
}

/* ---- slots ---- */

static void chunk_free(struct bc_chunk *c)
{
	free(c->ents);
	UNPOISON(c->data, c->len);
	big_free(c->data, c->map_len);
}

/* Add a chunk of free slots. */
static int chunk_add(struct bc *bc)
{
	size_t n = (size_t) 1 << bc->cshift;
	struct bc_chunk *c;
	size_t base;

	if (bc->nr_slots + n > BC_MAX_SLOTS)
		return -ENOMEM;
	if (bc->nr_chunks == bc->chunks_cap) {
		size_t cap = bc->chunks_cap ? bc->chunks_cap * 2 : 16;
		struct bc_chunk *v = realloc(bc->chunks, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		bc->chunks = v;
		bc->chunks_cap = cap;
	}
	c = &bc->chunks[bc->nr_chunks];
	c->ents = aligned_alloc(64, n * sizeof(*c->ents));
	if (!c->ents)
		return -ENOMEM;
	memset(c->ents, 0, n * sizeof(*c->ents));
	c->len = n * PD_NODE_SIZE;
	c->data = big_alloc(c->len, &c->map_len);
	if (!c->data) {
		free(c->ents);
		return -ENOMEM;
	}
	POISON(c->data, c->len);
	base = bc->nr_slots;
	bc->nr_chunks++;
	bc->nr_slots += n;
	/* push in reverse so that slots are handed out in address order */
	for (size_t i = n; i-- > 0;) {
		struct bc_entry *e = &c->ents[i];

		e->node.data = c->data + i * PD_NODE_SIZE;
		e->slot = (uint32_t) (base + i);
		e->dprev = BC_EMPTY;
		e->dnext = bc->free_list;
		bc->free_list = e->slot;
	}
	return 0;
}

/* Return a live entry's slot to the free list (rule 1). */
static void entry_free(struct bc *bc, struct bc_entry *e)
{
	hash_del(bc, e->node.blocknr);
	if (e->dirty)
		dirty_del(bc, e);
	bc->nr_nodes--;
	e->live = 0;
	e->ref = 0;
	POISON(e->node.data, PD_NODE_SIZE);
	e->dnext = bc->free_list;
	bc->free_list = e->slot;
}

void bc_seal(void *data)
{
	struct disk_node_header *h = data;

	h->csum =
	    cpu_to_le32(crc32c(0, (uint8_t *) data + 4, PD_NODE_SIZE - 4));
}

int bc_check_header(const void *data, uint64_t blocknr, uint64_t pool_tag,
		    const struct bc_expect *exp)
{
	const struct disk_node_header *h = data;
	uint32_t want = crc32c(0, (const uint8_t *) data + 4, PD_NODE_SIZE - 4);
	uint32_t got = le32_to_cpu(h->csum);

	if (got != want) {
		log_error("metadata node %" PRIu64
			  ": checksum mismatch (stored %08x, computed %08x)",
			  blocknr, got, want);
		return -EUCLEAN;
	}
	if (le64_to_cpu(h->blocknr) != blocknr) {
		log_error("metadata node %" PRIu64 ": holds node %" PRIu64
			  " (misdirected write)",
			  blocknr, (uint64_t) le64_to_cpu(h->blocknr));
		return -EUCLEAN;
	}
	if (le64_to_cpu(h->pool_tag) != pool_tag) {
		log_error("metadata node %" PRIu64 ": belongs to another pool "
			  "(tag %016" PRIx64 ", expected %016" PRIx64 ")",
			  blocknr, (uint64_t) le64_to_cpu(h->pool_tag),
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
			  blocknr, (uint64_t) le64_to_cpu(h->gen), exp->gen);
		return -EUCLEAN;
	}
	return 0;
}

/* The cheap part of the header check, for nodes already in memory. */
static int check_cached(const uint8_t *data, uint64_t blocknr,
			const struct bc_expect *exp)
{
	const struct disk_node_header *h = node_hdr(data);

	if (!exp)
		return 0;
	if (le32_to_cpu(h->magic) != exp->magic) {
		log_error("metadata node %" PRIu64
			  ": wrong kind (magic %08x, expected %08x)",
			  blocknr, le32_to_cpu(h->magic), exp->magic);
		return -EUCLEAN;
	}
	if (exp->gen && le64_to_cpu(h->gen) != exp->gen) {
		log_error("metadata node %" PRIu64 ": generation %" PRIu64
			  ", expected %" PRIu64 " (stale or lost write)",
			  blocknr, (uint64_t) le64_to_cpu(h->gen), exp->gen);
		return -EUCLEAN;
	}
	return 0;
}

int bc_create(struct io_dev *dev, uint64_t pool_tag, size_t cache_bytes,
	      struct bc **out)
{
	struct bc *bc = calloc(1, sizeof(*bc));
	size_t hsize = BC_HTAB_MIN;

	if (!bc)
		return -ENOMEM;
	bc->dev = dev;
	bc->pool_tag = pool_tag;
	bc->free_list = BC_EMPTY;
	bc->dirty_head = BC_EMPTY;
	bc->max_nodes = cache_bytes / PD_NODE_SIZE;
	if (bc->max_nodes < BC_MIN_NODES)
		bc->max_nodes = BC_MIN_NODES;
	/* chunks: the budget rounded up to a power of two, at most 2 MiB */
	while (bc->cshift < BC_CHUNK_SHIFT_MAX &&
	       ((size_t) 1 << bc->cshift) < bc->max_nodes)
		bc->cshift++;
	/* the table grows with the entries; start near the budget if small */
	while (hsize < 2 * bc->max_nodes && hsize < 4096)
		hsize <<= 1;
	bc->wbuf =
	    aligned_alloc(PD_NODE_SIZE, (size_t) BC_WRITE_BATCH * PD_NODE_SIZE);
	if (!bc->wbuf || htab_alloc(bc, hsize) < 0) {
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
	for (size_t i = 0; i < bc->nr_chunks; i++)
		chunk_free(&bc->chunks[i]);
	free(bc->chunks);
	big_free(bc->htab, bc->htab_map_len);
	free(bc->dvec);
	free(bc->wbuf);
	free(bc->wr);
	free(bc);
}

/* Note nr nodes written from blocknr on. */
static void note_written(struct bc *bc, uint64_t blocknr, size_t nr)
{
	uint64_t off = blocknr << PD_NODE_SHIFT,
		 len = (uint64_t) nr << PD_NODE_SHIFT;
	struct io_range *last = bc->nr_wr ? &bc->wr[bc->nr_wr - 1] : NULL;

	if (last && last->off + last->len == off) {
		last->len += len;
		return;
	}
	if (bc->nr_wr == bc->wr_cap) {
		size_t cap = bc->wr_cap ? bc->wr_cap * 2 : 64;
		struct io_range *v = realloc(bc->wr, cap * sizeof(*v));

		if (!v) {
			bc->wr_lost = true;
			return;
		}
		bc->wr = v;
		bc->wr_cap = cap;
	}
	bc->wr[bc->nr_wr++] = (struct io_range){off, len};
}

bool bc_written(const struct bc *bc, const struct io_range **v, size_t *n)
{
	*v = bc->wr;
	*n = bc->nr_wr;
	return !bc->wr_lost;
}

void bc_written_clear(struct bc *bc)
{
	bc->nr_wr = 0;
	bc->wr_lost = false;
	if (bc->wr_cap > 4096) { /* do not keep a big one forever */
		free(bc->wr);
		bc->wr = NULL;
		bc->wr_cap = 0;
	}
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
	note_written(bc, e->node.blocknr, 1);
	dirty_del(bc, e);
	return 0;
}

/*
 * Make room for one more entry: evict unpinned entries beyond the budget,
 * by CLOCK.  Every unpinned entry is found within two turns of the hand
 * (the first may only clear its reference bit).
 */
static int make_room(struct bc *bc)
{
	while (bc->nr_nodes >= bc->max_nodes && bc->nr_pinned < bc->nr_nodes) {
		struct bc_entry *e;
		int r;

		if (bc->hand >= bc->nr_slots)
			bc->hand = 0;
		e = slot_entry(bc, bc->hand++);
		if (!e->live || e->pins)
			continue;
		if (e->ref) {
			e->ref = 0;
			continue;
		}
		if (e->dirty) {
			r = write_one(bc, e);
			if (r < 0)
				return r;
		}
		entry_free(bc, e);
		bc->st.evictions++;
	}
	return 0;
}

/*
 * Take a free slot for blocknr (not yet in the table, not live).  Its data
 * is undefined.  Undo with slot_release.
 */
static int entry_alloc(struct bc *bc, uint64_t blocknr, struct bc_entry **out)
{
	struct bc_entry *e;
	int r = make_room(bc);

	if (r < 0)
		return r;
	r = hash_reserve(bc);
	if (r < 0)
		return r;
	if (bc->free_list == BC_EMPTY) {
		r = chunk_add(bc);
		if (r < 0)
			return r;
	}
	e = slot_entry(bc, bc->free_list);
	bc->free_list = e->dnext;
	e->dnext = e->dprev = BC_EMPTY;
	e->node.blocknr = blocknr;
	e->pins = 0;
	e->dirty = 0;
	e->ref = 1;
	UNPOISON(e->node.data, PD_NODE_SIZE);
	*out = e;
	return 0;
}

static void slot_release(struct bc *bc, struct bc_entry *e)
{
	POISON(e->node.data, PD_NODE_SIZE);
	e->dnext = bc->free_list;
	bc->free_list = e->slot;
}

/* Make an allocated entry live and pinned once. */
static void entry_insert(struct bc *bc, struct bc_entry *e)
{
	hash_add(bc, e->node.blocknr, e->slot);
	e->live = 1;
	bc->nr_nodes++;
	e->pins = 1;
	bc->nr_pinned++;
}

static void pin(struct bc *bc, struct bc_entry *e)
{
	e->ref = 1;
	assert(e->pins < BC_MAX_PINS);
	if (!e->pins++)
		bc->nr_pinned++;
}

int bc_get(struct bc *bc, uint64_t blocknr, const struct bc_expect *exp,
	   struct bc_node **out)
{
	const struct bc_hslot *h = &bc->htab[hash_find(bc, blocknr)];
	struct bc_entry *e;
	int r;

	if (h->slot != BC_EMPTY) {
		/* entry and data addresses both come from the slot number,
		 * so their cache misses overlap */
		r = check_cached(slot_data(bc, h->slot), blocknr, exp);
		if (r < 0)
			return r;
		e = slot_entry(bc, h->slot);
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
		log_error("metadata node %" PRIu64 ": read failed: %s", blocknr,
			  strerror(-r));
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
	entry_insert(bc, e);
	*out = &e->node;
	return 0;
fail:
	slot_release(bc, e);
	return r;
}

/* bc_new and bc_new_copy: the payload is src's, or zeroes. */
static int new_entry(struct bc *bc, uint64_t blocknr, uint32_t magic,
		     uint64_t gen, const void *src, struct bc_node **out)
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
		entry_insert(bc, e);
	}
	/* src is pinned, so making room above did not evict it */
	if (src)
		memcpy(e->node.data + sizeof(*h),
		       (const uint8_t *) src + sizeof(*h),
		       PD_NODE_SIZE - sizeof(*h));
	else
		memset(e->node.data + sizeof(*h), 0, PD_NODE_SIZE - sizeof(*h));
	h = (struct disk_node_header *) e->node.data;
	h->csum = 0;
	h->magic = cpu_to_le32(magic);
	h->blocknr = cpu_to_le64(blocknr);
	h->gen = cpu_to_le64(gen);
	h->pool_tag = cpu_to_le64(bc->pool_tag);
	dirty_add(bc, e);
	*out = &e->node;
	return 0;
}

int bc_new(struct bc *bc, uint64_t blocknr, uint32_t magic, uint64_t gen,
	   struct bc_node **out)
{
	return new_entry(bc, blocknr, magic, gen, NULL, out);
}

int bc_new_copy(struct bc *bc, uint64_t blocknr, uint32_t magic, uint64_t gen,
		const void *src, struct bc_node **out)
{
	return new_entry(bc, blocknr, magic, gen, src, out);
}

void bc_put(struct bc *bc, struct bc_node *n)
{
	struct bc_entry *e = to_entry(n);

	if (!--e->pins)
		bc->nr_pinned--;
}

void bc_dirty(struct bc *bc, struct bc_node *n)
{
	dirty_add(bc, to_entry(n));
}

static int cmp_entry(const void *a, const void *b)
{
	uint64_t x = (*(struct bc_entry *const *) a)->node.blocknr;
	uint64_t y = (*(struct bc_entry *const *) b)->node.blocknr;

	return x < y ? -1 : x > y;
}

int bc_write_dirty(struct bc *bc)
{
	struct bc_entry **v;
	size_t n = 0, i = 0;
	int r = 0;

	if (!bc->nr_dirty)
		return 0;
	if (bc->dvec_cap < bc->nr_dirty) {
		size_t cap = bc->nr_dirty + bc->nr_dirty / 2;

		v = realloc(bc->dvec, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		bc->dvec = v;
		bc->dvec_cap = cap;
	}
	v = bc->dvec;
	for (uint32_t s = bc->dirty_head; s != BC_EMPTY;
	     s = slot_entry(bc, s)->dnext)
		v[n++] = slot_entry(bc, s);
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
				log_error("metadata nodes %" PRIu64 "..%" PRIu64
					  ": write failed: %s",
					  v[i]->node.blocknr,
					  v[i]->node.blocknr + run - 1,
					  strerror(-r));
				break;
			}
			bc->st.writes += run;
			note_written(bc, v[i]->node.blocknr, run);
			for (size_t k = 0; k < run; k++)
				dirty_del(bc, v[i + k]);
		}
		i += run;
	}
	return r;
}

/*
 * O(cache), but only on abort: the nodes of an aborted transaction are the
 * dirty ones and also clean ones (written by a failed bc_write_dirty, or
 * evicted with writeback and read back), so the dirty list is not enough.
 */
void bc_forget_gen(struct bc *bc, uint64_t gen)
{
	for (size_t s = 0; s < bc->nr_slots; s++) {
		struct bc_entry *e = slot_entry(bc, s);

		if (e->live && !e->pins &&
		    le64_to_cpu(node_hdr(e->node.data)->gen) >= gen)
			entry_free(bc, e);
	}
}

void bc_forget(struct bc *bc, uint64_t blocknr)
{
	struct bc_entry *e = lookup(bc, blocknr);

	if (e && !e->pins)
		entry_free(bc, e);
}

void bc_stats(const struct bc *bc, struct bc_stats *st)
{
	*st = bc->st;
	st->nodes = bc->nr_nodes;
	st->dirty = bc->nr_dirty;
	st->pinned = bc->nr_pinned;
}
