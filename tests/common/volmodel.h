/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * volmodel - what every sector of a few volumes may read after a crash or
 * a failed I/O, for the engine's power-cut and fault tests.
 *
 * Each sector keeps the hashes of the contents it may hold: the durable
 * one (the first) and every newer one written since the last flush point
 * (writes not yet flushed read as old or new).  vm_settle() is a flush
 * point: each sector keeps only its newest content.
 */
#ifndef TV_TESTS_VOLMODEL_H
#define TV_TESTS_VOLMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "thinvol.h"

#define VM_NV	5    /* volumes a model tracks */
#define VM_SECT 512u /* sector size */
#define VM_MAXC 32   /* contents kept per sector */

/* A sector's possible contents: c[0] the durable one, then every one
 * written since, in order.  A crash image may show any of them (unflushed
 * writes land in any subset, in any order), so none may be dropped; when
 * more than VM_MAXC were written since the last flush, lost is set and
 * the sector is not checked until the next flush. */
struct vm_sect {
	uint8_t n;
	bool lost;
	uint64_t c[VM_MAXC];
};

struct vm_vol {
	bool live;
	uint64_t id;
	uint64_t sectors;
	struct vm_sect *s;
	char name[16];
};

struct vm_model {
	struct vm_vol v[VM_NV];
	uint64_t max_id;  /* highest id committed */
	uint64_t next_id; /* the id the next create or snapshot gets */
};

/* The hash of an all-zero sector (set by the first vm_hash call). */
extern uint64_t vm_zero_hash;

uint64_t vm_hash(const uint8_t *sector);
void vm_free(struct vm_model *m);
void vm_copy(struct vm_model *d, const struct vm_model *s);
void vm_settle(struct vm_model *m);
void vm_add(struct vm_sect *s, uint64_t h);
/* Does pool p match m (volume count, ids, names, sizes, every sector)?
 * verbose: say what differs first. */
bool vm_matches(struct tv_pool *p, const struct vm_model *m, bool verbose);

/*
 * The model's side of the workload steps the engine tests share.  A step
 * moves the model first and then calls the engine, so that a crash or a
 * failure in the call finds both states in the model.
 */
struct trng;

/* A slot that is live (or free), tried 16 times at random; -1: none. */
int vm_pick(const struct vm_model *m, struct trng *rng, bool live);
/* Before a metadata operation (it commits): before receives a copy of m,
 * the state the device keeps if the operation's commit does not land;
 * then m is settled (its commit flushes every write before it). */
void vm_begin_meta(struct vm_model *m, struct vm_model *before);
/* Slot i becomes volume name, of sectors zero sectors, with the next id;
 * returns the id. */
uint64_t vm_create(struct vm_model *m, int i, const char *name,
		   uint64_t sectors);
/* Slot i becomes a snapshot name of slot o, with the next id; returns
 * the id. */
uint64_t vm_snapshot(struct vm_model *m, int i, int o, const char *name);
void vm_delete(struct vm_model *m, int i);
/* n sectors of random bytes from rng (malloc'd; the caller frees). */
uint8_t *vm_random_data(struct trng *rng, uint64_t n);
/* Sectors [first, first + n) of slot i were written with buf (or, buf
 * NULL, discarded: they read zeroes).  A write that failed may have
 * landed in part: its sectors are old or new, as for any write not yet
 * flushed, so a failed one is recorded too. */
void vm_write(struct vm_model *m, int i, uint64_t first, uint64_t n,
	      const uint8_t *buf);

#endif
