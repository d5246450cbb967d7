/* ferry-guest-check: verifies the pages of ferry-test-guest in a dump of guest physical
 * memory (raw, as QMP pmemsave writes it, or ELF, as dump-guest-memory writes it), or compares
 * two dumps page by page. See tests/guest/README.md.
 *
 *   ferry-guest-check [--fill SIZE] [--dirty SIZE] [--seed N] [--dump-base ADDR]
 *                     [--max-report N] DUMP
 *   ferry-guest-check --compare [--max-report N] A B
 *   ferry-guest-check --disk [--seed N] [--max-report N] IMAGE
 *
 * Exit: 0 the dump checks (or the two are identical), 1 it does not, 2 usage or I/O error. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "page-format.h"

#define MAX_SEGS 64

struct seg {
        uint64_t paddr;
        uint64_t len;
        const uint8_t *data;
};

struct image {
        const char *path;
        const uint8_t *map;
        size_t size;
        bool elf;
        int n_segs;
        struct seg segs[MAX_SEGS];
};

static unsigned max_report = 10;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
        va_list ap;
        fprintf(stderr, "ferry-guest-check: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(2);
}

static void add_seg(struct image *im, uint64_t paddr, uint64_t off, uint64_t len)
{
        if (im->n_segs == MAX_SEGS)
                die("%s: too many memory segments", im->path);
        if (off > im->size || len > im->size - off)
                die("%s: ELF segment beyond the end of the file", im->path);
        im->segs[im->n_segs++] = (struct seg){ paddr, len, im->map + off };
}

static void load_elf(struct image *im)
{
        const unsigned char *id = im->map;
        if (im->size < EI_NIDENT || id[EI_DATA] != ELFDATA2LSB)
                die("%s: not a little-endian ELF file", im->path);
        if (id[EI_CLASS] == ELFCLASS64) {
                Elf64_Ehdr eh;
                if (im->size < sizeof(eh))
                        die("%s: truncated ELF header", im->path);
                memcpy(&eh, im->map, sizeof(eh));
                for (unsigned i = 0; i < eh.e_phnum; i++) {
                        Elf64_Phdr ph;
                        uint64_t off = eh.e_phoff + (uint64_t)i * eh.e_phentsize;
                        if (off > im->size || im->size - off < sizeof(ph))
                                die("%s: truncated program headers", im->path);
                        memcpy(&ph, im->map + off, sizeof(ph));
                        if (ph.p_type == PT_LOAD && ph.p_filesz)
                                add_seg(im, ph.p_paddr, ph.p_offset, ph.p_filesz);
                }
        } else if (id[EI_CLASS] == ELFCLASS32) {
                Elf32_Ehdr eh;
                if (im->size < sizeof(eh))
                        die("%s: truncated ELF header", im->path);
                memcpy(&eh, im->map, sizeof(eh));
                for (unsigned i = 0; i < eh.e_phnum; i++) {
                        Elf32_Phdr ph;
                        uint64_t off = eh.e_phoff + (uint64_t)i * eh.e_phentsize;
                        if (off > im->size || im->size - off < sizeof(ph))
                                die("%s: truncated program headers", im->path);
                        memcpy(&ph, im->map + off, sizeof(ph));
                        if (ph.p_type == PT_LOAD && ph.p_filesz)
                                add_seg(im, ph.p_paddr, ph.p_offset, ph.p_filesz);
                }
        } else {
                die("%s: unknown ELF class", im->path);
        }
}

static void image_open(struct image *im, const char *path, uint64_t dump_base)
{
        memset(im, 0, sizeof(*im));
        im->path = path;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                die("cannot open %s: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0)
                die("cannot stat %s: %s", path, strerror(errno));
        im->size = (size_t)st.st_size;
        if (im->size) {
                void *m = mmap(NULL, im->size, PROT_READ, MAP_PRIVATE, fd, 0);
                if (m == MAP_FAILED)
                        die("cannot map %s: %s", path, strerror(errno));
                im->map = m;
        }
        close(fd);
        if (im->size >= 4 && memcmp(im->map, ELFMAG, SELFMAG) == 0) {
                im->elf = true;
                load_elf(im);
        } else {
                add_seg(im, dump_base, 0, im->size);
        }
}

/* The page of guest physical memory at paddr, or NULL when the dump lacks (part of) it. */
static const uint32_t *image_page(const struct image *im, uint64_t paddr)
{
        for (int i = 0; i < im->n_segs; i++) {
                const struct seg *s = &im->segs[i];
                if (paddr >= s->paddr && paddr - s->paddr <= s->len &&
                    s->len - (paddr - s->paddr) >= FERRY_PAGE_SIZE)
                        return (const uint32_t *)(const void *)(s->data + (paddr - s->paddr));
        }
        return NULL;
}

static uint64_t image_bytes(const struct image *im)
{
        uint64_t n = 0;
        for (int i = 0; i < im->n_segs; i++)
                n += im->segs[i].len;
        return n;
}

static bool parse_u64(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 0);
        if (errno || end == s)
                return false;
        unsigned shift = 0;
        if (*end == 'k' || *end == 'K')
                shift = 10;
        else if (*end == 'm' || *end == 'M')
                shift = 20;
        else if (*end == 'g' || *end == 'G')
                shift = 30;
        if (shift)
                end++;
        if (*end || (shift && v > (UINT64_MAX >> shift)))
                return false;
        *out = (uint64_t)v << shift;
        return true;
}

/* ---- checking one dump ---- */

static unsigned bad_pages;

static void bad(uint32_t index, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad(uint32_t index, const char *fmt, ...)
{
        if (bad_pages++ >= max_report)
                return;
        printf("BAD addr=0x%08" PRIx32 " page=%" PRIu32 " ", FERRY_FILL_BASE + index * FERRY_PAGE_SIZE,
               index);
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
}

/* Checks the body of a page against generation gen; for a page caught being written (state
 * WRITING), a prefix of generation gen followed by a suffix of gen - 1 (zeroes for gen 0). */
static bool check_body(uint32_t index, const uint32_t *w, uint32_t addr, uint32_t gen, uint32_t seed,
                       bool writing)
{
        uint32_t x = ferry_body_start(addr, gen, seed);
        uint32_t y = gen ? ferry_body_start(addr, gen - 1, seed) : 0;
        bool in_new = true;
        for (uint32_t k = FERRY_HDR_WORDS; k < FERRY_PAGE_WORDS; k++) {
                x = ferry_next(x);
                if (gen)
                        y = ferry_next(y);
                if (in_new && w[k] == x)
                        continue;
                if (!writing) {
                        bad(index, "body word %" PRIu32 " is 0x%08" PRIx32 ", want 0x%08" PRIx32
                                   " (gen %" PRIu32 ")", k, w[k], x, gen);
                        return false;
                }
                in_new = false;
                if (w[k] != y) {
                        bad(index, "torn page: body word %" PRIu32 " is 0x%08" PRIx32
                                   ", neither gen %" PRIu32 " nor gen %" PRIu32 " (0x%08" PRIx32 ")",
                            k, w[k], gen, gen ? gen - 1 : 0, y);
                        return false;
                }
        }
        return true;
}

static int check_dump(const char *path, uint64_t dump_base, const uint64_t *want_fill,
                      const uint64_t *want_dirty, const uint64_t *want_seed)
{
        struct image im;
        image_open(&im, path, dump_base);

        const uint32_t *first = image_page(&im, FERRY_FILL_BASE);
        if (!first) {
                printf("FAIL dump %s does not hold the page at 0x%08x\n", path, FERRY_FILL_BASE);
                return 1;
        }
        if (first[FERRY_H_MAGIC] != FERRY_PAGE_MAGIC && !(want_fill && want_seed)) {
                printf("FAIL no ferry-test-guest page at 0x%08x (magic 0x%08" PRIx32
                       "); give --fill and --seed to check anyway\n",
                       FERRY_FILL_BASE, first[FERRY_H_MAGIC]);
                return 1;
        }
        uint64_t pages64 = want_fill ? (*want_fill + FERRY_PAGE_SIZE - 1) / FERRY_PAGE_SIZE
                                     : first[FERRY_H_PAGES];
        uint64_t dirty64 = want_dirty ? (*want_dirty + FERRY_PAGE_SIZE - 1) / FERRY_PAGE_SIZE
                                      : first[FERRY_H_DIRTY];
        uint32_t seed = want_seed ? (uint32_t)*want_seed : first[FERRY_H_SEED];
        if (pages64 == 0 || FERRY_FILL_BASE + pages64 * FERRY_PAGE_SIZE > 0x100000000ull) {
                printf("FAIL impossible fill of %" PRIu64 " pages\n", pages64);
                return 1;
        }
        uint32_t pages = (uint32_t)pages64;
        uint32_t dirty = dirty64 < pages ? (uint32_t)dirty64 : pages;
        uint64_t need = FERRY_FILL_BASE + (uint64_t)pages * FERRY_PAGE_SIZE;

        uint32_t *gens = calloc(pages, sizeof(*gens));
        if (!gens)
                die("%s", "out of memory");
        bool *ok = calloc(pages, sizeof(*ok));
        if (!ok)
                die("%s", "out of memory");
        uint32_t writing = 0, writing_index = 0, max_gen = 0;

        for (uint32_t i = 0; i < pages; i++) {
                uint32_t addr = FERRY_FILL_BASE + i * FERRY_PAGE_SIZE;
                const uint32_t *w = image_page(&im, addr);
                if (!w) {
                        printf("FAIL dump %s ends before the fill region does (page %" PRIu32
                               " at 0x%08" PRIx32 "; a raw dump needs %" PRIu64 " bytes from 0)\n",
                               path, i, addr, need);
                        free(gens);
                        free(ok);
                        return 1;
                }
                if (w[FERRY_H_MAGIC] != FERRY_PAGE_MAGIC) {
                        bad(i, "magic 0x%08" PRIx32 ", want 0x%08x", w[FERRY_H_MAGIC], FERRY_PAGE_MAGIC);
                        continue;
                }
                if (w[FERRY_H_INDEX] != i || w[FERRY_H_ADDR] != addr) {
                        bad(i, "header names page %" PRIu32 " at 0x%08" PRIx32 " (a page moved)",
                            w[FERRY_H_INDEX], w[FERRY_H_ADDR]);
                        continue;
                }
                if (w[FERRY_H_SEED] != seed) {
                        bad(i, "seed %" PRIu32 ", want %" PRIu32, w[FERRY_H_SEED], seed);
                        continue;
                }
                if (w[FERRY_H_PAGES] != pages || w[FERRY_H_DIRTY] != dirty) {
                        bad(i, "geometry pages=%" PRIu32 " dirty-pages=%" PRIu32 ", want %" PRIu32
                               " and %" PRIu32, w[FERRY_H_PAGES], w[FERRY_H_DIRTY], pages, dirty);
                        continue;
                }
                uint32_t state = w[FERRY_H_STATE], gen = w[FERRY_H_GEN];
                if (state != FERRY_STATE_DONE && state != FERRY_STATE_WRITING) {
                        bad(i, "state 0x%08" PRIx32, state);
                        continue;
                }
                bool is_writing = state == FERRY_STATE_WRITING;
                if (!check_body(i, w, addr, gen, seed, is_writing))
                        continue;
                if (is_writing) {
                        writing++;
                        writing_index = i;
                }
                gens[i] = gen;
                ok[i] = true;
                if (i < dirty && gen > max_gen)
                        max_gen = gen;
        }

        /* Generations: the guest rewrites the working set in index order, one page at a time,
         * so pages [0, c) hold max-gen and [c, dirty) max-gen - 1; pages past it stay at 0.
         * A page below that is stale: an old copy (what a migration that lost a dirty page
         * leaves behind). */
        uint32_t c = 0;
        for (uint32_t i = 0; i < dirty; i++)
                if (ok[i] && gens[i] == max_gen)
                        c = i + 1;
        for (uint32_t i = 0; i < pages; i++) {
                if (!ok[i])
                        continue;
                uint32_t want = i >= dirty ? 0 : i < c ? max_gen : max_gen - 1;
                if (i < dirty && max_gen == 0)
                        want = 0;
                if (gens[i] != want)
                        bad(i, "%s: gen %" PRIu32 ", want %" PRIu32 " (working set %" PRIu32
                               " pages, max-gen %" PRIu32 ")",
                            gens[i] < want ? "stale page" : "generation out of order", gens[i], want,
                            dirty, max_gen);
        }
        if (writing > 1)
                printf("BAD %" PRIu32 " pages are being written at once (a guest with one CPU "
                       "writes one)\n", writing), bad_pages++;
        else if (writing == 1 && (writing_index >= dirty ||
                                  !(writing_index + 1 == c || writing_index == c ||
                                    (c == dirty && writing_index == 0))))
                bad(writing_index, "caught being written, but it is not at the working set's "
                                   "cursor (page %" PRIu32 ")", c);

        free(gens);
        free(ok);
        if (bad_pages) {
                if (bad_pages > max_report)
                        printf("... %u more\n", bad_pages - max_report);
                printf("FAIL bad=%u pages=%" PRIu32 " max-gen=%" PRIu32 "\n", bad_pages, pages,
                       max_gen);
                return 1;
        }
        printf("OK pages=%" PRIu32 " max-gen=%" PRIu32 " dirty-pages=%" PRIu32 " writing=%" PRIu32
               " seed=%" PRIu32 "\n", pages, max_gen, dirty, writing, seed);
        return 0;
}

/* ---- comparing two dumps ---- */

static void describe(const uint32_t *w)
{
        if (!w)
                printf("absent");
        else if (w[FERRY_H_MAGIC] == FERRY_PAGE_MAGIC)
                printf("gen=%" PRIu32 " state=%s", w[FERRY_H_GEN],
                       w[FERRY_H_STATE] == FERRY_STATE_DONE ? "done"
                       : w[FERRY_H_STATE] == FERRY_STATE_WRITING ? "writing" : "?");
        else
                printf("not-a-test-page");
}

static int compare_dumps(const char *a_path, const char *b_path, uint64_t dump_base)
{
        struct image a, b;
        image_open(&a, a_path, dump_base);
        image_open(&b, b_path, dump_base);
        uint64_t pages = 0, differ = 0;
        for (int s = 0; s < a.n_segs; s++) {
                const struct seg *sg = &a.segs[s];
                for (uint64_t off = 0; off < sg->len; off += FERRY_PAGE_SIZE) {
                        uint64_t paddr = sg->paddr + off;
                        uint64_t n = sg->len - off < FERRY_PAGE_SIZE ? sg->len - off : FERRY_PAGE_SIZE;
                        const uint32_t *pa = n == FERRY_PAGE_SIZE ? image_page(&a, paddr) : NULL;
                        const uint32_t *pb = image_page(&b, paddr);
                        pages++;
                        bool same = pb && memcmp(sg->data + off, pb, n) == 0;
                        if (same)
                                continue;
                        if (differ++ < max_report) {
                                size_t first = 0;
                                while (pb && first < n &&
                                       ((const uint8_t *)pb)[first] == sg->data[off + first])
                                        first++;
                                printf("DIFF addr=0x%08" PRIx64 " first-byte=+0x%zx A:", paddr, first);
                                describe(pa);
                                printf(" B:");
                                describe(pb);
                                putchar('\n');
                        }
                }
        }
        uint64_t a_bytes = image_bytes(&a), b_bytes = image_bytes(&b);
        if (differ || a_bytes != b_bytes) {
                if (differ > max_report)
                        printf("... %" PRIu64 " more\n", differ - max_report);
                printf("FAIL differing-pages=%" PRIu64 " pages=%" PRIu64 " bytes=%" PRIu64
                       "/%" PRIu64 "\n", differ, pages, a_bytes, b_bytes);
                return 1;
        }
        printf("OK identical pages=%" PRIu64 " bytes=%" PRIu64 "\n", pages, a_bytes);
        return 0;
}

/* A raw image of the guest's disk: every 4 KiB block holds one generation of its own content,
 * and the generations form the rewrite staircase: blocks [0, c) at G, [c, n) at G - 1. */
static int check_disk(const char *path, const uint64_t *want_seed)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                die("%s: %s", path, strerror(errno));
        if (st.st_size < (off_t)FERRY_DISK_BLOCK || st.st_size % FERRY_DISK_BLOCK)
                die("%s: not a whole number of 4 KiB blocks", path);
        const uint32_t *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED)
                die("%s: mmap: %s", path, strerror(errno));
        close(fd);
        uint32_t n = (uint32_t)(st.st_size / FERRY_DISK_BLOCK);
        uint32_t seed = want_seed ? (uint32_t)*want_seed : map[FERRY_H_SEED];
        uint32_t max_gen = 0, boundaries = 0, blocks = map[FERRY_H_PAGES];
        if (blocks == 0 || blocks > n)
                blocks = n;
        for (uint32_t i = 0; i < blocks; i++) {
                const uint32_t *w = map + (size_t)i * FERRY_PAGE_WORDS;
                uint32_t addr = ferry_disk_addr(i), g = w[FERRY_H_GEN];
                if (w[FERRY_H_MAGIC] != FERRY_DISK_MAGIC || w[FERRY_H_STATE] != FERRY_STATE_DONE ||
                    w[FERRY_H_INDEX] != i || w[FERRY_H_ADDR] != addr || w[FERRY_H_SEED] != seed ||
                    w[FERRY_H_PAGES] != blocks) {
                        if (++bad_pages <= max_report)
                                printf("BAD block=%" PRIu32 " header (magic 0x%08" PRIx32 " index %" PRIu32 ")\n",
                                       i, w[FERRY_H_MAGIC], w[FERRY_H_INDEX]);
                        continue;
                }
                uint32_t x = ferry_body_start(addr, g, seed);
                for (uint32_t k = FERRY_HDR_WORDS; k < FERRY_PAGE_WORDS; k++) {
                        x = ferry_next(x);
                        if (w[k] != x) {
                                if (++bad_pages <= max_report)
                                        printf("BAD block=%" PRIu32 " body word %" PRIu32 " (gen %" PRIu32 ")\n", i, k, g);
                                break;
                        }
                }
                if (g > max_gen)
                        max_gen = g;
                if (i > 0 && g != map[(size_t)(i - 1) * FERRY_PAGE_WORDS + FERRY_H_GEN])
                        boundaries++;
        }
        /* The staircase: at most one step, of one generation, downwards. */
        for (uint32_t i = 0; i < blocks && bad_pages == 0; i++) {
                uint32_t g = map[(size_t)i * FERRY_PAGE_WORDS + FERRY_H_GEN];
                if (g != max_gen && g + 1 != max_gen) {
                        bad_pages++;
                        printf("BAD block=%" PRIu32 " stale: gen %" PRIu32 ", max-gen %" PRIu32 "\n", i, g, max_gen);
                }
        }
        if (bad_pages == 0 && boundaries > 1) {
                bad_pages++;
                printf("BAD generations change %" PRIu32 " times (a lost write)\n", boundaries);
        }
        if (bad_pages) {
                printf("FAIL bad=%u blocks=%" PRIu32 " max-gen=%" PRIu32 "\n", bad_pages, blocks, max_gen);
                return 1;
        }
        printf("OK disk blocks=%" PRIu32 " max-gen=%" PRIu32 " seed=%" PRIu32 "\n", blocks, max_gen, seed);
        return 0;
}

static void usage(FILE *f)
{
        fprintf(f,
                "usage: ferry-guest-check [--fill SIZE] [--dirty SIZE] [--seed N]\n"
                "                         [--dump-base ADDR] [--max-report N] DUMP\n"
                "       ferry-guest-check --compare [--max-report N] A B\n"
                "       ferry-guest-check --disk [--seed N] [--max-report N] IMAGE\n"
                "Checks every page ferry-test-guest filled in a dump of guest physical memory\n"
                "(raw from address 0, as QMP pmemsave val=0 writes it, or ELF from\n"
                "dump-guest-memory). Without --fill/--dirty/--seed they are read from the first\n"
                "page at 0x%x. Sizes take K, M, G suffixes. --compare: the two dumps must\n"
                "be identical. --disk: a raw image of the guest's disk must check.\nExit 0 OK, 1 bad, 2 usage or I/O error.\n",
                FERRY_FILL_BASE);
}

int main(int argc, char **argv)
{
        static const struct option longopts[] = {
                { "fill", required_argument, NULL, 'f' },
                { "dirty", required_argument, NULL, 'd' },
                { "seed", required_argument, NULL, 's' },
                { "dump-base", required_argument, NULL, 'b' },
                { "max-report", required_argument, NULL, 'm' },
                { "compare", no_argument, NULL, 'c' },
                { "disk", no_argument, NULL, 'D' },
                { "help", no_argument, NULL, 'h' },
                { NULL, 0, NULL, 0 },
        };
        uint64_t fill, dirty, seed, dump_base = 0, v;
        bool have_fill = false, have_dirty = false, have_seed = false, compare = false, disk = false;
        int o;
        while ((o = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
                switch (o) {
                case 'f':
                        if (!parse_u64(optarg, &fill))
                                die("bad --fill %s", optarg);
                        have_fill = true;
                        break;
                case 'd':
                        if (!parse_u64(optarg, &dirty))
                                die("bad --dirty %s", optarg);
                        have_dirty = true;
                        break;
                case 's':
                        if (!parse_u64(optarg, &seed) || seed > UINT32_MAX)
                                die("bad --seed %s", optarg);
                        have_seed = true;
                        break;
                case 'b':
                        if (!parse_u64(optarg, &dump_base) || dump_base % FERRY_PAGE_SIZE)
                                die("bad --dump-base %s (a multiple of 4096)", optarg);
                        break;
                case 'm':
                        if (!parse_u64(optarg, &v) || v > 1000000)
                                die("bad --max-report %s", optarg);
                        max_report = (unsigned)v;
                        break;
                case 'c':
                        compare = true;
                        break;
                case 'D':
                        disk = true;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (disk) {
                if (argc - optind != 1 || compare || have_fill || have_dirty) {
                        usage(stderr);
                        return 2;
                }
                return check_disk(argv[optind], have_seed ? &seed : NULL);
        }
        if (compare) {
                if (argc - optind != 2 || have_fill || have_dirty || have_seed) {
                        usage(stderr);
                        return 2;
                }
                return compare_dumps(argv[optind], argv[optind + 1], dump_base);
        }
        if (argc - optind != 1) {
                usage(stderr);
                return 2;
        }
        return check_dump(argv[optind], dump_base, have_fill ? &fill : NULL,
                          have_dirty ? &dirty : NULL, have_seed ? &seed : NULL);
}
