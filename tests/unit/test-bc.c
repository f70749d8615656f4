/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Block cache: validation of every header field, eviction, writeback. */
#include <errno.h>

#include "io/io.h"
#include "pdata/bc.h"
#include "tcheck.h"
#include "util/log.h"

#define TAG   0x1122334455667788ull
#define MAGIC 0x54534554u

static int validate_first_byte(const struct bc_node *n, const void *ctx)
{
	(void) ctx;
	return n->data[100] == 0xEE ? -EUCLEAN : 0;
}

static void fill(struct bc_node *n, uint64_t v)
{
	memset(n->data + 64, (int) (v & 0xff), PD_NODE_SIZE - 64);
}

int main(void)
{
	struct bc_expect exp = {.magic = MAGIC};
	struct io_dev *dev;
	struct bc *bc;
	struct bc_node *n;
	struct bc_stats st;
	uint8_t *img;

	log_set_level(LOG_LVL_ERROR + (getenv("V") ? 3 : 0));
	CHECK_OK(io_mem_create(1024 * PD_NODE_SIZE, &dev));
	img = io_mem_data(dev);

	/* write 200 nodes through a 64-node cache: eviction writes back */
	CHECK_OK(bc_create(dev, TAG, 64 * PD_NODE_SIZE, &bc));
	for (uint64_t b = 10; b < 210; b++) {
		CHECK_OK(bc_new(bc, b, MAGIC, 7, &n));
		fill(n, b);
		bc_put(bc, n);
	}
	bc_stats(bc, &st);
	CHECK(st.nodes <= 64);
	CHECK(st.evictions >= 136);
	CHECK_OK(bc_write_dirty(bc));
	bc_stats(bc, &st);
	CHECK_EQ(st.dirty, 0);
	bc_destroy(bc);

	/* read them all back through a fresh cache: every one validates */
	CHECK_OK(bc_create(dev, TAG, 64 * PD_NODE_SIZE, &bc));
	for (uint64_t b = 10; b < 210; b++) {
		exp.gen = 7;
		CHECK_OK(bc_get(bc, b, &exp, &n));
		CHECK_EQ(n->data[200], b & 0xff);
		bc_put(bc, n);
	}
	/* pinned nodes are not evicted */
	{
		struct bc_node *pinned[70];
		exp.gen = 0;
		for (int i = 0; i < 70; i++)
			CHECK_OK(
			    bc_get(bc, 10 + (uint64_t) i, &exp, &pinned[i]));
		for (int i = 0; i < 70; i++)
			CHECK_EQ(pinned[i]->data[200], (10 + i) & 0xff);
		for (int i = 0; i < 70; i++)
			bc_put(bc, pinned[i]);
	}
	bc_destroy(bc);

	/* each kind of damage is -EUCLEAN, not a crash */
	CHECK_OK(bc_create(dev, TAG, 64 * PD_NODE_SIZE, &bc));
	exp.gen = 0;
	img[20 * PD_NODE_SIZE + 300] ^= 1; /* flipped bit */
	CHECK_ERR(bc_get(bc, 20, &exp, &n), -EUCLEAN);
	img[20 * PD_NODE_SIZE + 300] ^= 1;
	CHECK_OK(bc_get(bc, 20, &exp, &n));
	bc_put(bc, n);
	/* misdirected: node 30's image at 31 */
	memcpy(img + 31 * PD_NODE_SIZE, img + 30 * PD_NODE_SIZE, PD_NODE_SIZE);
	CHECK_ERR(bc_get(bc, 31, &exp, &n), -EUCLEAN);
	/* zeroed */
	memset(img + 32 * PD_NODE_SIZE, 0, PD_NODE_SIZE);
	CHECK_ERR(bc_get(bc, 32, &exp, &n), -EUCLEAN);
	/* wrong magic, wrong generation (stale), wrong pool (cache hit and
	 * miss both checked) */
	exp.magic = MAGIC + 1;
	CHECK_ERR(bc_get(bc, 33, &exp, &n), -EUCLEAN);
	exp.magic = MAGIC;
	exp.gen = 8;
	CHECK_ERR(bc_get(bc, 34, &exp, &n), -EUCLEAN);
	exp.gen = 7;
	CHECK_OK(bc_get(bc, 34, &exp, &n));
	bc_put(bc, n);
	exp.gen = 6;
	CHECK_ERR(bc_get(bc, 34, &exp, &n), -EUCLEAN); /* hit */
	exp.gen = 0;
	bc_set_pool_tag(bc, TAG + 1);
	CHECK_ERR(bc_get(bc, 35, &exp, &n), -EUCLEAN);
	bc_set_pool_tag(bc, TAG);
	/* beyond the device */
	CHECK_ERR(bc_get(bc, 1024, &exp, &n), -EUCLEAN);
	CHECK_ERR(bc_get(bc, UINT64_MAX, &exp, &n), -EUCLEAN);
	/* type-specific validator */
	CHECK_OK(bc_new(bc, 500, MAGIC, 9, &n));
	n->data[100] = 0xEE;
	bc_put(bc, n);
	CHECK_OK(bc_write_dirty(bc));
	bc_forget(bc, 500);
	exp.validate = validate_first_byte;
	CHECK_ERR(bc_get(bc, 500, &exp, &n), -EUCLEAN);
	exp.validate = NULL;

	/* forget_gen drops nodes of an abandoned transaction */
	CHECK_OK(bc_new(bc, 600, MAGIC, 12, &n));
	bc_put(bc, n);
	bc_forget_gen(bc, 12);
	bc_stats(bc, &st);
	CHECK_EQ(st.dirty, 0);
	CHECK_ERR(bc_get(bc, 600, &exp, &n), -EUCLEAN); /* never written */
	bc_destroy(bc);

	/* write errors surface and keep the node dirty */
	{
		struct io_dev *fdev;
		struct io_fault_cfg cfg = {
		    .fail_at = 1, .error = -EIO, .op_mask = IO_OP_WRITE};
		CHECK_OK(io_fault_wrap(dev, false, &fdev));
		CHECK_OK(bc_create(fdev, TAG, 64 * PD_NODE_SIZE, &bc));
		CHECK_OK(bc_new(bc, 700, MAGIC, 3, &n));
		bc_put(bc, n);
		io_fault_arm(fdev, &cfg);
		CHECK_ERR(bc_write_dirty(bc), -EIO);
		bc_stats(bc, &st);
		CHECK_EQ(st.dirty, 1);
		CHECK_OK(bc_write_dirty(bc));
		bc_destroy(bc);
		io_close(fdev);
	}
	io_close(dev);
	printf("test-bc: ok\n");
	return 0;
}
