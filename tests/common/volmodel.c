/* SPDX-License-Identifier: GPL-2.0-or-later */
/* volmodel - see volmodel.h */
#include "volmodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tcheck.h"

uint64_t vm_zero_hash;

static uint64_t fnv(const uint8_t *p)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (unsigned int i = 0; i < VM_SECT; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

uint64_t vm_hash(const uint8_t *p)
{
	if (!vm_zero_hash) {
		static const uint8_t zero[VM_SECT];
		vm_zero_hash = fnv(zero);
	}
	return fnv(p);
}

void vm_free(struct vm_model *m)
{
	for (int i = 0; i < VM_NV; i++)
		free(m->v[i].s);
	memset(m, 0, sizeof(*m));
}

void vm_copy(struct vm_model *d, const struct vm_model *s)
{
	*d = *s;
	for (int i = 0; i < VM_NV; i++) {
		if (!s->v[i].s)
			continue;
		d->v[i].s = malloc(s->v[i].sectors * sizeof(struct vm_sect));
		CHECK(d->v[i].s);
		memcpy(d->v[i].s, s->v[i].s,
		       s->v[i].sectors * sizeof(struct vm_sect));
	}
}

void vm_settle(struct vm_model *m)
{
	for (int i = 0; i < VM_NV; i++)
		for (uint64_t k = 0; m->v[i].live && k < m->v[i].sectors; k++) {
			struct vm_sect *s = &m->v[i].s[k];
			s->c[0] = s->c[s->n - 1];
			s->n = 1;
			s->lost = false;
		}
}

void vm_add(struct vm_sect *s, uint64_t h)
{
	if (s->c[s->n - 1] == h)
		return;
	if (s->n == VM_MAXC) { /* keep the durable one and the newest */
		memmove(&s->c[1], &s->c[2], (VM_MAXC - 2) * sizeof(s->c[0]));
		s->n--;
		s->lost = true;
	}
	s->c[s->n++] = h;
}

bool vm_matches(struct tv_pool *p, const struct vm_model *m, bool verbose)
{
	struct tv_pool_info pi;
	uint64_t live = 0;
	uint8_t *buf;

	CHECK_OK(tv_pool_info(p, &pi));
	if (pi.next_id <= m->max_id) {
		if (verbose)
			fprintf(stderr, "next id %llu went back (max %llu)\n",
				(unsigned long long) pi.next_id,
				(unsigned long long) m->max_id);
		return false;
	}
	for (int i = 0; i < VM_NV; i++)
		live += m->v[i].live;
	if (pi.nr_volumes != live) {
		if (verbose)
			fprintf(stderr, "%llu volumes, model %llu\n",
				(unsigned long long) pi.nr_volumes,
				(unsigned long long) live);
		return false;
	}
	for (int i = 0; i < VM_NV; i++) {
		const struct vm_vol *v = &m->v[i];
		struct tv_vol_info vi;

		if (!v->live)
			continue;
		if (tv_vol_info(p, v->id, &vi) || strcmp(vi.name, v->name) ||
		    vi.size != v->sectors * VM_SECT) {
			if (verbose)
				fprintf(stderr,
					"volume %s (#%llu) missing or "
					"different\n",
					v->name, (unsigned long long) v->id);
			return false;
		}
		buf = malloc(v->sectors * VM_SECT);
		CHECK(buf);
		CHECK_OK(tv_vol_read(p, v->id, buf, v->sectors * VM_SECT, 0));
		for (uint64_t k = 0; k < v->sectors; k++) {
			uint64_t h = vm_hash(buf + k * VM_SECT);
			bool ok = false;
			for (int c = 0; c < v->s[k].n; c++)
				ok |= v->s[k].c[c] == h;
			ok |= v->s[k].lost;
			if (!ok) {
				if (verbose)
					fprintf(stderr,
						"volume %s sector %llu: "
						"content it never had "
						"(%d candidates, "
						"zero=%d)\n",
						v->name, (unsigned long long) k,
						v->s[k].n, h == vm_zero_hash);
				free(buf);
				return false;
			}
		}
		free(buf);
	}
	return true;
}

int vm_pick(const struct vm_model *m, struct trng *rng, bool live)
{
	for (int k = 0; k < 16; k++) {
		int i = (int) trng_below(rng, VM_NV);

		if (m->v[i].live == live)
			return i;
	}
	return -1;
}

void vm_begin_meta(struct vm_model *m, struct vm_model *before)
{
	vm_free(before);
	vm_copy(before, m);
	vm_settle(m);
}

uint64_t vm_create(struct vm_model *m, int i, const char *name,
		   uint64_t sectors)
{
	struct vm_vol *v = &m->v[i];

	snprintf(v->name, sizeof(v->name), "%s", name);
	v->live = true;
	v->id = m->next_id++;
	v->sectors = sectors;
	v->s = calloc(sectors, sizeof(struct vm_sect));
	CHECK(v->s);
	for (uint64_t k = 0; k < sectors; k++) {
		v->s[k].n = 1;
		v->s[k].c[0] = vm_zero_hash;
	}
	m->max_id = v->id;
	return v->id;
}

uint64_t vm_snapshot(struct vm_model *m, int i, int o, const char *name)
{
	struct vm_vol *v = &m->v[i];

	snprintf(v->name, sizeof(v->name), "%s", name);
	v->live = true;
	v->id = m->next_id++;
	v->sectors = m->v[o].sectors;
	v->s = malloc(v->sectors * sizeof(struct vm_sect));
	CHECK(v->s);
	memcpy(v->s, m->v[o].s, v->sectors * sizeof(struct vm_sect));
	m->max_id = v->id;
	return v->id;
}

void vm_delete(struct vm_model *m, int i)
{
	m->v[i].live = false;
	free(m->v[i].s);
	m->v[i].s = NULL;
}

uint8_t *vm_random_data(struct trng *rng, uint64_t n)
{
	uint8_t *buf = malloc(n * VM_SECT);

	CHECK(buf);
	for (uint64_t k = 0; k < n * VM_SECT; k += 8) {
		uint64_t x = trng_next(rng);

		memcpy(buf + k, &x, 8);
	}
	return buf;
}

void vm_write(struct vm_model *m, int i, uint64_t first, uint64_t n,
	      const uint8_t *buf)
{
	for (uint64_t k = 0; k < n; k++)
		vm_add(&m->v[i].s[first + k],
		       buf ? vm_hash(buf + k * VM_SECT) : vm_zero_hash);
}
