/* SPDX-License-Identifier: GPL-2.0-or-later */
/* CRC-32C: known vectors, hardware == software, incremental == one-shot. */
#include "tcheck.h"
#include "util/crc32c.h"

int main(void)
{
	static const uint8_t zeros[32];
	uint8_t ones[32], inc[32], buf[4096 + 16];
	struct trng r;

	/* RFC 3720 appendix B.4 test vectors */
	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t) i;
	CHECK_EQ(crc32c(0, "123456789", 9), 0xE3069283u);
	CHECK_EQ(crc32c(0, zeros, 32), 0x8A9136AAu);
	CHECK_EQ(crc32c(0, ones, 32), 0x62A8AB43u);
	CHECK_EQ(crc32c(0, inc, 32), 0x46DD794Eu);
	CHECK_EQ(crc32c_sw(0, "123456789", 9), 0xE3069283u);
	CHECK_EQ(crc32c(0, "", 0), 0);

	trng_init(&r, tseed("test-crc32c"));
	for (int iter = 0; iter < 2000; iter++) {
		size_t off = trng_below(&r, 16);
		size_t len = trng_below(&r, 4096);
		size_t cut = len ? trng_below(&r, len) : 0;
		uint32_t whole;

		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t) trng_next(&r);
		whole = crc32c(0, buf + off, len);
		CHECK_EQ(whole, crc32c_sw(0, buf + off, len));
		CHECK_EQ(whole, crc32c(crc32c(0, buf + off, cut),
				       buf + off + cut, len - cut));
	}
	/* long buffers: the hardware path joins three chains per 4080
	 * bytes; a node's checksum covers 4092 bytes from offset 4 */
	{
		static uint8_t big[3 * 4096 + 16];
		static const size_t lens[] = {4079, 4080, 4081, 4088, 4092,
					      4096, 8159, 8160, 8168, 3 * 4096};

		for (size_t i = 0; i < sizeof(big); i++)
			big[i] = (uint8_t) trng_next(&r);
		for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
			for (size_t off = 0; off < 16; off++) {
				uint32_t whole = crc32c(0, big + off, lens[i]);

				CHECK_EQ(whole,
					 crc32c_sw(0, big + off, lens[i]));
				CHECK_EQ(whole,
					 crc32c(crc32c(0, big + off, 100),
						big + off + 100,
						lens[i] - 100));
			}
		for (int iter = 0; iter < 500; iter++) {
			size_t off = trng_below(&r, 16);
			size_t len = trng_below(&r, 3 * 4096);

			CHECK_EQ(crc32c(0, big + off, len),
				 crc32c_sw(0, big + off, len));
		}
		memset(big, 0, sizeof(big));
		CHECK_EQ(crc32c(0, big, 4096), crc32c_sw(0, big, 4096));
	}
	printf("crc32c: hardware path %s\n",
	       crc32c_hw_available() ? "in use" : "not available");
	return 0;
}
