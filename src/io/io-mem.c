/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * io-mem.c - a byte array in memory.  Contract in io.h.
 *
 * A rwlock makes concurrent requests safe: reads share it, everything that
 * changes the bytes takes it exclusively (so overlapping writes from two
 * threads land one after the other, never interleaved byte by byte).
 * Writes are "durable" at once; flush does nothing.
 */
#include "io/io.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/log.h"

struct io_mem {
	struct io_dev dev; /* first: io_dev pointers convert back */
	pthread_rwlock_t lock;
	uint8_t *data; /* dev.size bytes, at least 1 allocated */
};

static const struct io_ops mem_ops;

static struct io_mem *to_mem(struct io_dev *dev)
{
	return (struct io_mem *) ((char *) dev - offsetof(struct io_mem, dev));
}

static int mem_read(struct io_dev *dev, void *buf, size_t len, uint64_t off)
{
	struct io_mem *m = to_mem(dev);

	pthread_rwlock_rdlock(&m->lock);
	memcpy(buf, m->data + off, len);
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

static int mem_write(struct io_dev *dev, const void *buf, size_t len,
		     uint64_t off)
{
	struct io_mem *m = to_mem(dev);

	pthread_rwlock_wrlock(&m->lock);
	memcpy(m->data + off, buf, len);
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

static int mem_flush(struct io_dev *dev)
{
	(void) dev;
	return 0;
}

/* The front door checked the range against dev.size, which fits size_t. */
static int mem_zero(struct io_dev *dev, uint64_t off, uint64_t len)
{
	struct io_mem *m = to_mem(dev);

	pthread_rwlock_wrlock(&m->lock);
	memset(m->data + off, 0, (size_t) len);
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

static int mem_resize(struct io_dev *dev, uint64_t new_size)
{
	struct io_mem *m = to_mem(dev);
	uint8_t *p;

	if (new_size > SIZE_MAX - 1) {
		log_error("%s: size %" PRIu64 " too large", dev->name,
			  new_size);
		return -ENOMEM;
	}
	pthread_rwlock_wrlock(&m->lock);
	p = realloc(m->data, new_size ? (size_t) new_size : 1);
	if (!p) {
		pthread_rwlock_unlock(&m->lock);
		log_error("%s: resize to %" PRIu64 " bytes: out of memory",
			  dev->name, new_size);
		return -ENOMEM;
	}
	if (new_size > dev->size)
		memset(p + dev->size, 0, (size_t) (new_size - dev->size));
	m->data = p;
	dev->size = new_size;
	pthread_rwlock_unlock(&m->lock);
	return 0;
}

static void mem_close(struct io_dev *dev)
{
	struct io_mem *m = to_mem(dev);

	pthread_rwlock_destroy(&m->lock);
	free(m->data);
	free(m);
}

static const struct io_ops mem_ops = {
    .read = mem_read,
    .write = mem_write,
    .flush = mem_flush,
    .discard = mem_zero,
    .write_zeroes = mem_zero,
    .resize = mem_resize,
    .close = mem_close,
};

int io_mem_create(uint64_t size, struct io_dev **out)
{
	struct io_mem *m;
	int r;

	if (size > SIZE_MAX - 1) {
		log_error("mem: size %" PRIu64 " too large", size);
		return -ENOMEM;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		goto err_nomem;
	/* calloc(0) may return NULL; keep one byte so data is never NULL */
	m->data = calloc(size ? (size_t) size : 1, 1);
	if (!m->data)
		goto err_free;
	r = pthread_rwlock_init(&m->lock, NULL);
	if (r) {
		log_error("mem: pthread_rwlock_init: %s", strerror(r));
		free(m->data);
		free(m);
		return -r;
	}
	m->dev.ops = &mem_ops;
	m->dev.size = size;
	m->dev.flags = 0;
	snprintf(m->dev.name, sizeof(m->dev.name), "mem");
	*out = &m->dev;
	return 0;

err_free:
	free(m);
err_nomem:
	log_error("mem: allocating %" PRIu64 " bytes: out of memory", size);
	return -ENOMEM;
}

int io_mem_create_from(const void *buf, uint64_t size, struct io_dev **out)
{
	struct io_dev *dev;
	int r;

	r = io_mem_create(size, &dev);
	if (r)
		return r;
	if (size)
		memcpy(to_mem(dev)->data, buf, (size_t) size);
	*out = dev;
	return 0;
}

uint8_t *io_mem_data(struct io_dev *dev)
{
	if (dev->ops != &mem_ops)
		return NULL;
	return to_mem(dev)->data;
}
