/* The self-verifying page format of ferry-test-guest, shared by the guest (freestanding,
 * 32-bit) and the host checker. See tests/guest/README.md.
 *
 * A filled page is 1024 little-endian 32-bit words at physical address
 *   addr = FERRY_FILL_BASE + index * 4096
 * words 0..7 are the header, words 8..1023 the body:
 *   body[k] = x_k, x_0 = ferry_body_start(addr, gen, seed), x_{k+1} = ferry_next(x_k),
 *   the first body word (word 8) being x_1.
 * A page being rewritten from generation G-1 to G goes through (in this store order):
 *   state = WRITING; gen = G; body words 8..1023 in increasing order; state = DONE.
 * So a page seen at any instant (the guest paused between two instructions) is either DONE
 * with a body entirely of its gen, or WRITING with a body that is a prefix of generation gen
 * followed by a suffix of generation gen-1 (of zeroes when gen is 0: fresh RAM).
 */
#ifndef FERRY_PAGE_FORMAT_H
#define FERRY_PAGE_FORMAT_H

#include <stdint.h>

#define FERRY_PAGE_SIZE 4096u
#define FERRY_PAGE_WORDS 1024u
#define FERRY_HDR_WORDS 8u
#define FERRY_FILL_BASE 0x200000u /* 2 MiB: the kernel lives at 1 MiB, below it */

#define FERRY_PAGE_MAGIC 0x31595246u    /* bytes "FRY1" */
#define FERRY_STATE_DONE 0x454e4f44u    /* bytes "DONE" */
#define FERRY_STATE_WRITING 0x54495257u /* bytes "WRIT" */

enum {
        FERRY_H_MAGIC = 0, /* FERRY_PAGE_MAGIC */
        FERRY_H_STATE = 1, /* FERRY_STATE_DONE or FERRY_STATE_WRITING */
        FERRY_H_GEN = 2,   /* generation: 0 after the fill, +1 per rewrite */
        FERRY_H_INDEX = 3, /* page index in the fill region */
        FERRY_H_ADDR = 4,  /* physical address of the page */
        FERRY_H_SEED = 5,  /* seed= option */
        FERRY_H_PAGES = 6, /* number of filled pages (fill= / 4096) */
        FERRY_H_DIRTY = 7, /* number of pages in the dirty working set (dirty= / 4096) */
};

static inline uint32_t ferry_mix32(uint32_t h)
{
        /* MurmurHash3's finaliser */
        h ^= h >> 16;
        h *= 0x85ebca6bu;
        h ^= h >> 13;
        h *= 0xc2b2ae35u;
        h ^= h >> 16;
        return h;
}

static inline uint32_t ferry_body_start(uint32_t addr, uint32_t gen, uint32_t seed)
{
        uint32_t x = ferry_mix32(addr ^ ferry_mix32(seed ^ 0x9e3779b9u) ^
                                 ferry_mix32(gen + 0x7f4a7c15u));
        return x ? x : 0x6d2b79f5u; /* xorshift32 must not start at 0 */
}

static inline uint32_t ferry_next(uint32_t x)
{
        /* xorshift32 (Marsaglia 13/17/5) */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        return x;
}

/* Disk blocks (the guest's virtio-blk disk, if it has one): 4 KiB blocks of the same layout,
 * header words with their own magic, word 4 holding ferry_disk_addr(index) (what the body is
 * made from, so that no block looks like a RAM page), word 6 the number of blocks, word 7 0.
 * Each block is written whole by one request, so a block is always of a single generation. */
#define FERRY_DISK_MAGIC 0x44595246u    /* bytes "FRYD" */
#define FERRY_DISK_BLOCK 4096u

static inline uint32_t ferry_disk_addr(uint32_t index)
{
        return 0x80000000u | index;
}

#endif
