/* ferry-test-guest: a multiboot kernel that fills guest RAM with self-verifying pages, keeps
 * rewriting a working set of them, checks them itself and reports on COM1.
 * Freestanding 32-bit C: protected mode, no interrupts, no paging (except while bulk=1 fills
 * RAM above 4 GiB through a PAE window). See README.md. */
#include <stddef.h>
#include <stdint.h>

#include "page-format.h"

#define VERSION "v1"
#define MB_BOOT_MAGIC 0x2BADB002u
#define MB_INFO_MEM 0x1u
#define MB_INFO_CMDLINE 0x4u
#define MB_INFO_MMAP 0x40u
#define MAX_CORRUPT_LINES 64u

struct multiboot_info {
        uint32_t flags;
        uint32_t mem_lower; /* KiB below 1 MiB */
        uint32_t mem_upper; /* KiB of contiguous RAM from 1 MiB */
        uint32_t boot_device;
        uint32_t cmdline;
        uint32_t mods_count, mods_addr;
        uint32_t syms[4];
        uint32_t mmap_length; /* bytes of the memory map at mmap_addr */
        uint32_t mmap_addr;
};

/* One memory map entry; size does not count itself. */
struct multiboot_mmap {
        uint32_t size;
        uint64_t addr, len;
        uint32_t type; /* 1: usable RAM */
} __attribute__((packed));

void guest_main(uint32_t magic, const struct multiboot_info *mbi);

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n)
{
        unsigned char *p = d;
        while (n--)
                *p++ = (unsigned char)c;
        return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
        unsigned char *p = d;
        const unsigned char *q = s;
        while (n--)
                *p++ = *q++;
        return d;
}

#define barrier() __asm__ __volatile__("" ::: "memory")

static inline void outb(uint16_t port, uint8_t v)
{
        __asm__ __volatile__("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint8_t inb(uint16_t port)
{
        uint8_t v;
        __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}
static inline void outw(uint16_t port, uint16_t v)
{
        __asm__ __volatile__("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint16_t inw(uint16_t port)
{
        uint16_t v;
        __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}
static inline void outl(uint16_t port, uint32_t v)
{
        __asm__ __volatile__("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline uint32_t inl(uint16_t port)
{
        uint32_t v;
        __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port));
        return v;
}
static inline uint64_t rdtsc(void)
{
        uint32_t lo, hi;
        __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
        return ((uint64_t)hi << 32) | lo;
}
static inline void cpu_relax(void)
{
        __asm__ __volatile__("pause" ::: "memory");
}
static void halt_forever(void)
{
        for (;;)
                __asm__ __volatile__("cli; hlt");
}

/* 64-by-32-bit division without libgcc: two divl steps, each with a quotient that fits. */
static uint64_t div64(uint64_t n, uint32_t d, uint32_t *rem)
{
        uint32_t hi = (uint32_t)(n >> 32), lo = (uint32_t)n;
        uint32_t qhi = hi / d, r = hi % d, qlo;
        __asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
        if (rem)
                *rem = r;
        return ((uint64_t)qhi << 32) | qlo;
}

/* ---- COM1, polled ---- */
#define COM1 0x3f8

static void serial_init(void)
{
        outb(COM1 + 1, 0x00); /* no interrupts */
        outb(COM1 + 3, 0x80); /* DLAB */
        outb(COM1 + 0, 0x01); /* 115200 baud */
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03); /* 8N1 */
        outb(COM1 + 2, 0xc7); /* FIFO on, cleared */
        outb(COM1 + 4, 0x03); /* DTR, RTS */
}

static void putc_serial(char c)
{
        unsigned spins = 0;
        while (!(inb(COM1 + 5) & 0x20) && ++spins < 1000000)
                ;
        outb(COM1, (uint8_t)c);
}

static void puts_serial(const char *s)
{
        while (*s) {
                if (*s == '\n')
                        putc_serial('\r');
                putc_serial(*s++);
        }
}

static void put_u64(uint64_t v)
{
        char buf[24];
        int i = 0;
        do {
                uint32_t r;
                v = div64(v, 10, &r);
                buf[i++] = (char)('0' + r);
        } while (v);
        while (i)
                putc_serial(buf[--i]);
}

static void put_hex(uint32_t v)
{
        puts_serial("0x");
        for (int shift = 28; shift >= 0; shift -= 4)
                putc_serial("0123456789abcdef"[(v >> shift) & 0xf]);
}

static void put_kv(const char *key, uint64_t v)
{
        putc_serial(' ');
        puts_serial(key);
        putc_serial('=');
        put_u64(v);
}

/* ---- options ---- */
static struct {
        uint64_t fill;     /* bytes to fill from FERRY_FILL_BASE */
        uint64_t dirty;    /* bytes of the working set rewritten forever */
        uint32_t seed;
        uint64_t rate;     /* dirtying limit, bytes per second; 0: as fast as it goes */
        uint32_t verify;   /* pages verified per page dirtied (or per loop when dirty=0) */
        uint32_t recheck;  /* verify each working-set page before rewriting it */
        uint32_t alive_ms; /* interval between ALIVE lines */
        uint32_t bulk;     /* fill all other RAM with non-zero data, for throughput benchmarks */
        uint64_t disk_rate; /* bytes per second rewritten on the disk, if there is one; 0: leave it alone */
} opt = { 8u << 20, 1u << 20, 1, 0, 1, 1, 1000, 0, 256u << 10 };

static char cmdline[1024];

static int streq_n(const char *a, const char *b, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (a[i] != b[i])
                        return 0;
        return b[n] == '\0';
}

/* "123", "0x7b", with an optional K/M/G suffix (binary); returns 0 on a malformed value. */
static int parse_size(const char *s, size_t n, uint64_t *out)
{
        uint64_t v = 0;
        uint32_t base = 10;
        size_t i = 0;
        if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
                base = 16;
                i = 2;
        }
        size_t digits = 0;
        for (; i < n; i++, digits++) {
                char c = s[i];
                uint32_t d;
                if (c >= '0' && c <= '9')
                        d = (uint32_t)(c - '0');
                else if (base == 16 && c >= 'a' && c <= 'f')
                        d = (uint32_t)(c - 'a' + 10);
                else if (base == 16 && c >= 'A' && c <= 'F')
                        d = (uint32_t)(c - 'A' + 10);
                else
                        break;
                if (v > (UINT64_MAX >> 4) / 10)
                        return 0;
                v = v * base + d;
        }
        if (!digits)
                return 0;
        if (i < n) {
                unsigned shift;
                switch (s[i]) {
                case 'k': case 'K': shift = 10; break;
                case 'm': case 'M': shift = 20; break;
                case 'g': case 'G': shift = 30; break;
                default: return 0;
                }
                if (++i != n || v > (UINT64_MAX >> 34))
                        return 0;
                v <<= shift;
        }
        *out = v;
        return 1;
}

static void fatal(const char *what, const char *detail, size_t n)
{
        puts_serial("ERROR ");
        puts_serial(what);
        if (detail) {
                puts_serial(": ");
                for (size_t i = 0; i < n; i++)
                        putc_serial(detail[i]);
        }
        puts_serial("\n");
        halt_forever();
}

static void parse_cmdline(void)
{
        const char *p = cmdline;
        int first = 1;
        while (*p) {
                while (*p == ' ' || *p == '\t')
                        p++;
                if (!*p)
                        break;
                const char *tok = p;
                while (*p && *p != ' ' && *p != '\t')
                        p++;
                size_t len = (size_t)(p - tok), klen = 0;
                while (klen < len && tok[klen] != '=')
                        klen++;
                if (klen == len) {
                        /* QEMU and GRUB put the kernel's path first: skip it */
                        if (first) {
                                first = 0;
                                continue;
                        }
                        fatal("option without '='", tok, len);
                }
                first = 0;
                const char *val = tok + klen + 1;
                size_t vlen = len - klen - 1;
                uint64_t v;
                if (!parse_size(val, vlen, &v))
                        fatal("bad value", tok, len);
                if (streq_n(tok, "fill", klen))
                        opt.fill = v;
                else if (streq_n(tok, "dirty", klen))
                        opt.dirty = v;
                else if (streq_n(tok, "seed", klen) && v <= UINT32_MAX)
                        opt.seed = (uint32_t)v;
                else if (streq_n(tok, "rate", klen))
                        opt.rate = v;
                else if (streq_n(tok, "verify", klen) && v <= 1024)
                        opt.verify = (uint32_t)v;
                else if (streq_n(tok, "recheck", klen) && v <= 1)
                        opt.recheck = (uint32_t)v;
                else if (streq_n(tok, "alive", klen) && v >= 1 && v <= 3600000)
                        opt.alive_ms = (uint32_t)v;
                else if (streq_n(tok, "bulk", klen) && v <= 1)
                        opt.bulk = (uint32_t)v;
                else if (streq_n(tok, "disk-rate", klen))
                        opt.disk_rate = v;
                else
                        fatal("unknown option or value out of range", tok, len);
        }
}

/* ---- time: the TSC, calibrated against PIT channel 2 ---- */
static uint32_t tsc_khz;

static uint32_t calibrate_tsc(void)
{
        const uint32_t pit_hz = 1193182, ms = 20, count = pit_hz * ms / 1000;
        outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01)); /* gate on, speaker off */
        outb(0x43, 0xb0);                                  /* ch 2, lo/hi, mode 0 */
        outb(0x42, (uint8_t)(count & 0xff));
        outb(0x42, (uint8_t)(count >> 8));
        uint64_t t0 = rdtsc();
        uint32_t spins = 0;
        while (!(inb(0x61) & 0x20))
                if (++spins > 50000000u)
                        return 0; /* no PIT output to read */
        uint64_t dt = rdtsc() - t0;
        uint64_t khz = div64(dt, ms, NULL);
        return khz > 0 && khz < UINT32_MAX ? (uint32_t)khz : 0;
}

/* ---- pages ---- */
static uint32_t n_pages, n_dirty;

static inline volatile uint32_t *page_ptr(uint32_t index)
{
        return (volatile uint32_t *)(uintptr_t)(FERRY_FILL_BASE + index * FERRY_PAGE_SIZE);
}

/* Rewrites page index to generation gen in the order page-format.h documents, so that the
 * page is checkable whenever the guest is paused. */
static void write_page(uint32_t index, uint32_t gen)
{
        volatile uint32_t *w = page_ptr(index);
        uint32_t addr = FERRY_FILL_BASE + index * FERRY_PAGE_SIZE;
        w[FERRY_H_STATE] = FERRY_STATE_WRITING;
        barrier();
        w[FERRY_H_GEN] = gen;
        w[FERRY_H_MAGIC] = FERRY_PAGE_MAGIC;
        w[FERRY_H_INDEX] = index;
        w[FERRY_H_ADDR] = addr;
        w[FERRY_H_SEED] = opt.seed;
        w[FERRY_H_PAGES] = n_pages;
        w[FERRY_H_DIRTY] = n_dirty;
        barrier();
        uint32_t x = ferry_body_start(addr, gen, opt.seed);
        uint32_t *body = (uint32_t *)(uintptr_t)addr; /* plain stores for speed, fenced */
        for (uint32_t k = FERRY_HDR_WORDS; k < FERRY_PAGE_WORDS; k++) {
                x = ferry_next(x);
                body[k] = x;
        }
        barrier();
        w[FERRY_H_STATE] = FERRY_STATE_DONE;
}

static uint32_t corrupt_count;

static void report_corrupt(uint32_t index, const char *reason, uint32_t got, uint32_t want)
{
        corrupt_count++;
        if (corrupt_count > MAX_CORRUPT_LINES)
                return; /* still counted in ALIVE's corrupt= */
        puts_serial("CORRUPT addr=");
        put_hex(FERRY_FILL_BASE + index * FERRY_PAGE_SIZE);
        put_kv("page", index);
        puts_serial(" reason=");
        puts_serial(reason);
        put_kv("got", got);
        put_kv("want", want);
        puts_serial("\n");
}

/* Checks a page against what it must hold: exactly generation want_gen, DONE. */
static void verify_page(uint32_t index, uint32_t want_gen)
{
        const volatile uint32_t *w = page_ptr(index);
        uint32_t addr = FERRY_FILL_BASE + index * FERRY_PAGE_SIZE;
        if (w[FERRY_H_MAGIC] != FERRY_PAGE_MAGIC)
                return report_corrupt(index, "magic", w[FERRY_H_MAGIC], FERRY_PAGE_MAGIC);
        if (w[FERRY_H_STATE] != FERRY_STATE_DONE)
                return report_corrupt(index, "state", w[FERRY_H_STATE], FERRY_STATE_DONE);
        if (w[FERRY_H_INDEX] != index)
                return report_corrupt(index, "index", w[FERRY_H_INDEX], index);
        if (w[FERRY_H_ADDR] != addr)
                return report_corrupt(index, "addr", w[FERRY_H_ADDR], addr);
        if (w[FERRY_H_SEED] != opt.seed)
                return report_corrupt(index, "seed", w[FERRY_H_SEED], opt.seed);
        if (w[FERRY_H_PAGES] != n_pages || w[FERRY_H_DIRTY] != n_dirty)
                return report_corrupt(index, "geometry", w[FERRY_H_PAGES], n_pages);
        if (w[FERRY_H_GEN] != want_gen)
                return report_corrupt(index, want_gen > w[FERRY_H_GEN] ? "stale-gen" : "gen",
                                      w[FERRY_H_GEN], want_gen);
        uint32_t x = ferry_body_start(addr, want_gen, opt.seed);
        const uint32_t *body = (const uint32_t *)(uintptr_t)addr;
        for (uint32_t k = FERRY_HDR_WORDS; k < FERRY_PAGE_WORDS; k++) {
                x = ferry_next(x);
                if (body[k] != x)
                        return report_corrupt(index, "body-word", k, x);
        }
}

/* ---- bulk=1: every other byte of RAM non-zero ---- */

/* Migration skips zero pages, so a benchmark needs RAM that holds data. Each word gets its own
 * physical address (odd, so never zero): cheap to write, distinct per page, not checked. */
static void bulk_fill(uint32_t virt, uint64_t phys, uint32_t bytes)
{
        volatile uint32_t *w = (volatile uint32_t *)(uintptr_t)virt;
        uint32_t hi = (uint32_t)(phys >> 32) << 8, lo = (uint32_t)phys;
        for (uint32_t i = 0; i < bytes / 4; i++)
                w[i] = ((lo + i * 4) | 1) ^ hi;
}

/* RAM above 4 GiB is reached through a 1 GiB window of 2 MiB PAE pages at virtual 1 GiB; the
 * first GiB (this kernel, its stack, the page tables) is identity-mapped. Paging is on only
 * here, so everything else keeps using physical addresses. */
#define WINDOW 0x40000000u
#define PDE_2M 0x83u /* present, writable, 2 MiB page */
static uint64_t pdpt[4] __attribute__((aligned(32)));
static uint64_t pd_low[512] __attribute__((aligned(4096)));
static uint64_t pd_window[512] __attribute__((aligned(4096)));

static inline uint32_t read_cr(int n)
{
        uint32_t v = 0;
        if (n == 0)
                __asm__ __volatile__("mov %%cr0, %0" : "=r"(v));
        else
                __asm__ __volatile__("mov %%cr4, %0" : "=r"(v));
        return v;
}

static void bulk_fill_high(uint64_t base, uint64_t len)
{
        for (uint32_t i = 0; i < 512; i++)
                pd_low[i] = ((uint64_t)i << 21) | PDE_2M;
        pdpt[0] = (uint32_t)(uintptr_t)pd_low | 1u;
        pdpt[1] = (uint32_t)(uintptr_t)pd_window | 1u;
        pdpt[2] = pdpt[3] = 0;
        __asm__ __volatile__("mov %0, %%cr3" : : "r"((uint32_t)(uintptr_t)pdpt) : "memory");
        __asm__ __volatile__("mov %0, %%cr4" : : "r"(read_cr(4) | 0x20u) : "memory"); /* PAE */
        __asm__ __volatile__("mov %0, %%cr0" : : "r"(read_cr(0) | 0x80000000u) : "memory"); /* PG */
        while (len) {
                uint64_t chunk = base & ~0x1fffffull; /* 2 MiB aligned */
                uint32_t off = (uint32_t)(base - chunk);
                uint32_t n = len > WINDOW - off ? WINDOW - off : (uint32_t)len;
                for (uint32_t i = 0; i < 512; i++)
                        pd_window[i] = (chunk + ((uint64_t)i << 21)) | PDE_2M;
                /* reloading CR3 flushes the old window's translations */
                __asm__ __volatile__("mov %0, %%cr3" : : "r"((uint32_t)(uintptr_t)pdpt) : "memory");
                bulk_fill(WINDOW + off, base, n);
                base += n;
                len -= n;
        }
        __asm__ __volatile__("mov %0, %%cr0" : : "r"(read_cr(0) & ~0x80000000u) : "memory");
        __asm__ __volatile__("mov %0, %%cr4" : : "r"(read_cr(4) & ~0x20u) : "memory");
}

/* Fills [fill_end, mem_end) below 4 GiB and every usable region of the memory map above it;
 * returns the bytes written. */
static uint64_t bulk_fill_all(const struct multiboot_info *mbi, uint32_t fill_end, uint64_t mem_end)
{
        uint64_t done = 0;
        if (mem_end > fill_end) {
                bulk_fill(fill_end, fill_end, (uint32_t)(mem_end - fill_end));
                done += mem_end - fill_end;
        }
        if (!(mbi->flags & MB_INFO_MMAP))
                return done;
        for (uint32_t p = mbi->mmap_addr; p < mbi->mmap_addr + mbi->mmap_length;) {
                const struct multiboot_mmap *e = (const struct multiboot_mmap *)(uintptr_t)p;
                uint64_t start = e->addr, end = e->addr + e->len;
                if (e->type == 1 && end > 0x100000000ull) {
                        if (start < 0x100000000ull)
                                start = 0x100000000ull;
                        bulk_fill_high(start, end - start);
                        done += end - start;
                }
                p += e->size + 4;
        }
        return done;
}

/* ---- the disk: the first legacy virtio-blk PCI device, polled, one request at a time ----
 * Its queue and buffers live between the kernel and the fill (below 2 MiB), in RAM that is
 * migrated like the rest. */
#define VQ_BASE 0x1c0000u          /* up to 64 KiB: a queue of up to 1024 entries */
#define VQ_HDR 0x1e0000u           /* request header, 16 bytes */
#define VQ_STATUS 0x1e0100u        /* status byte */
#define VQ_BUF 0x1e1000u           /* one block */
#define VIRTIO_PCI_QUEUE_PFN 0x08
#define VIRTIO_PCI_QUEUE_NUM 0x0c
#define VIRTIO_PCI_QUEUE_SEL 0x0e
#define VIRTIO_PCI_QUEUE_NOTIFY 0x10
#define VIRTIO_PCI_STATUS 0x12
#define VIRTIO_PCI_CONFIG 0x14     /* without MSI-X, which we never enable */

struct vring_desc {
        uint64_t addr;
        uint32_t len;
        uint16_t flags;
        uint16_t next;
};

static uint16_t vio_base, vq_num, vq_last_used;
static volatile struct vring_desc *vq_desc;
static volatile uint16_t *vq_avail, *vq_used;
static uint32_t disk_blocks;

static uint32_t pci_read(uint32_t dev, uint32_t reg)
{
        outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
        return inl(0xcfc);
}

static void pci_write(uint32_t dev, uint32_t reg, uint32_t v)
{
        outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
        outl(0xcfc, v);
}

/* Finds and sets up the disk; 0 when there is none (or it cannot be used). */
static int disk_init(void)
{
        uint32_t dev = 32;
        for (uint32_t i = 0; i < 32; i++)
                if (pci_read(i, 0) == 0x10011af4u) { /* Red Hat, legacy virtio-blk */
                        dev = i;
                        break;
                }
        if (dev == 32)
                return 0;
        uint32_t bar = pci_read(dev, 0x10);
        if (!(bar & 1))
                return 0;
        vio_base = (uint16_t)(bar & ~3u);
        pci_write(dev, 0x04, pci_read(dev, 0x04) | 0x5); /* I/O space, bus master */
        outb(vio_base + VIRTIO_PCI_STATUS, 0);
        outb(vio_base + VIRTIO_PCI_STATUS, 1 | 2);      /* ACKNOWLEDGE, DRIVER; no features */
        outw(vio_base + VIRTIO_PCI_QUEUE_SEL, 0);
        vq_num = inw(vio_base + VIRTIO_PCI_QUEUE_NUM);
        if (vq_num == 0 || vq_num > 1024)
                return 0;
        memset((void *)(uintptr_t)VQ_BASE, 0, 0x10000);
        vq_desc = (volatile struct vring_desc *)(uintptr_t)VQ_BASE;
        vq_avail = (volatile uint16_t *)(uintptr_t)(VQ_BASE + 16u * vq_num);
        uint32_t used = (VQ_BASE + 16u * vq_num + 6u + 2u * vq_num + 4095u) & ~4095u;
        vq_used = (volatile uint16_t *)(uintptr_t)used;
        outl(vio_base + VIRTIO_PCI_QUEUE_PFN, VQ_BASE >> 12);
        outb(vio_base + VIRTIO_PCI_STATUS, 1 | 2 | 4);  /* DRIVER_OK */
        uint32_t sectors = inl(vio_base + VIRTIO_PCI_CONFIG);
        if (inl(vio_base + VIRTIO_PCI_CONFIG + 4))
                sectors = 0xfffffff8u; /* over 2 TiB: more than we ever use */
        disk_blocks = sectors / (FERRY_DISK_BLOCK / 512);
        return disk_blocks > 0;
}

/* One request on block index, reading (write=0) or writing VQ_BUF; 0 when the device says OK. */
static int disk_io(uint32_t index, int write)
{
        volatile uint32_t *hdr = (volatile uint32_t *)(uintptr_t)VQ_HDR;
        volatile uint8_t *status = (volatile uint8_t *)(uintptr_t)VQ_STATUS;
        uint64_t sector = (uint64_t)index * (FERRY_DISK_BLOCK / 512);

        hdr[0] = write ? 1 : 0; /* VIRTIO_BLK_T_OUT / _IN */
        hdr[1] = 0;
        hdr[2] = (uint32_t)sector;
        hdr[3] = (uint32_t)(sector >> 32);
        *status = 0xff;
        vq_desc[0] = (struct vring_desc){ VQ_HDR, 16, 1, 1 };                       /* NEXT */
        vq_desc[1] = (struct vring_desc){ VQ_BUF, FERRY_DISK_BLOCK, (uint16_t)(write ? 1 : 1 | 2), 2 };
        vq_desc[2] = (struct vring_desc){ VQ_STATUS, 1, 2, 0 };                     /* WRITE */
        uint16_t idx = vq_avail[1];
        vq_avail[2 + idx % vq_num] = 0;
        barrier();
        vq_avail[1] = (uint16_t)(idx + 1);
        barrier();
        outw(vio_base + VIRTIO_PCI_QUEUE_NOTIFY, 0);
        while (vq_used[1] == vq_last_used)
                cpu_relax();
        vq_last_used++;
        barrier();
        return *status == 0 ? 0 : -1;
}

static void disk_write_block(uint32_t index, uint32_t g)
{
        uint32_t *w = (uint32_t *)(uintptr_t)VQ_BUF;
        uint32_t addr = ferry_disk_addr(index);
        w[FERRY_H_MAGIC] = FERRY_DISK_MAGIC;
        w[FERRY_H_STATE] = FERRY_STATE_DONE;
        w[FERRY_H_GEN] = g;
        w[FERRY_H_INDEX] = index;
        w[FERRY_H_ADDR] = addr;
        w[FERRY_H_SEED] = opt.seed;
        w[FERRY_H_PAGES] = disk_blocks;
        w[FERRY_H_DIRTY] = 0;
        uint32_t x = ferry_body_start(addr, g, opt.seed);
        for (uint32_t k = FERRY_HDR_WORDS; k < FERRY_PAGE_WORDS; k++) {
                x = ferry_next(x);
                w[k] = x;
        }
        if (disk_io(index, 1) < 0)
                fatal("disk write failed", NULL, 0);
}

static uint32_t disk_corrupt;

static void disk_report(uint32_t index, const char *reason, uint32_t got, uint32_t want)
{
        corrupt_count++;
        if (++disk_corrupt > MAX_CORRUPT_LINES)
                return;
        puts_serial("CORRUPT disk");
        put_kv("block", index);
        puts_serial(" reason=");
        puts_serial(reason);
        put_kv("got", got);
        put_kv("want", want);
        puts_serial("\n");
}

/* Reads block index back: it must hold exactly generation want (what this guest wrote last). */
static void disk_verify_block(uint32_t index, uint32_t want)
{
        const uint32_t *w = (const uint32_t *)(uintptr_t)VQ_BUF;
        if (disk_io(index, 0) < 0)
                return disk_report(index, "io", 0, 0);
        if (w[FERRY_H_MAGIC] != FERRY_DISK_MAGIC)
                return disk_report(index, "magic", w[FERRY_H_MAGIC], FERRY_DISK_MAGIC);
        if (w[FERRY_H_INDEX] != index)
                return disk_report(index, "index", w[FERRY_H_INDEX], index);
        if (w[FERRY_H_GEN] != want)
                return disk_report(index, want > w[FERRY_H_GEN] ? "stale-gen" : "gen", w[FERRY_H_GEN], want);
        uint32_t x = ferry_body_start(ferry_disk_addr(index), want, opt.seed);
        for (uint32_t k = FERRY_HDR_WORDS; k < FERRY_PAGE_WORDS; k++) {
                x = ferry_next(x);
                if (w[k] != x)
                        return disk_report(index, "body-word", k, x);
        }
}

/* The dirtying loop's state. gen: the generation being written; dirty pages [0, cursor)
 * hold gen, the rest of the working set gen - 1, pages past the working set 0. */
static uint32_t gen = 1, cursor, vcursor;
static uint64_t dirtied, verified, last_alive;

/* Verifies the next page of the fill region, round robin, against its exact generation. */
static void verify_next(void)
{
        uint32_t want = vcursor >= n_dirty ? 0 : vcursor < cursor ? gen : gen - 1;
        verify_page(vcursor, want);
        verified++;
        if (++vcursor == n_pages)
                vcursor = 0;
}

void guest_main(uint32_t magic, const struct multiboot_info *mbi)
{
        serial_init();
        if (magic != MB_BOOT_MAGIC)
                fatal("not booted by a multiboot loader", NULL, 0);
        if (mbi->flags & MB_INFO_CMDLINE) {
                const char *c = (const char *)(uintptr_t)mbi->cmdline;
                size_t i = 0;
                for (; c[i] && i < sizeof(cmdline) - 1; i++)
                        cmdline[i] = c[i];
                cmdline[i] = '\0';
        }
        if (!(mbi->flags & MB_INFO_MEM))
                fatal("no memory size from the boot loader", NULL, 0);
        uint64_t mem_end = 0x100000ull + (uint64_t)mbi->mem_upper * 1024;
        parse_cmdline();

        uint64_t pages = (opt.fill + FERRY_PAGE_SIZE - 1) / FERRY_PAGE_SIZE;
        uint64_t dpages = (opt.dirty + FERRY_PAGE_SIZE - 1) / FERRY_PAGE_SIZE;
        if (FERRY_FILL_BASE + pages * FERRY_PAGE_SIZE > mem_end) {
                puts_serial("ERROR fill too large:");
                put_kv("fill", opt.fill);
                put_kv("max", mem_end - FERRY_FILL_BASE);
                puts_serial("\n");
                halt_forever();
        }
        n_pages = (uint32_t)pages;
        n_dirty = (uint32_t)(dpages < pages ? dpages : pages);

        tsc_khz = calibrate_tsc();
        uint32_t khz = tsc_khz ? tsc_khz : 1000000; /* no PIT: assume 1 GHz */

        puts_serial("FERRY-GUEST " VERSION);
        put_kv("fill", (uint64_t)n_pages * FERRY_PAGE_SIZE);
        put_kv("dirty", (uint64_t)n_dirty * FERRY_PAGE_SIZE);
        put_kv("seed", opt.seed);
        put_kv("rate", opt.rate);
        put_kv("verify", opt.verify);
        put_kv("recheck", opt.recheck);
        put_kv("alive", opt.alive_ms);
        puts_serial(" base=");
        put_hex(FERRY_FILL_BASE);
        put_kv("pages", n_pages);
        put_kv("dirty-pages", n_dirty);
        put_kv("mem", mem_end);
        put_kv("tsc-khz", tsc_khz);
        put_kv("bulk", opt.bulk);
        puts_serial("\n");

        uint64_t t0 = rdtsc();
        for (uint32_t i = 0; i < n_pages; i++)
                write_page(i, 0);
        int disk = opt.disk_rate && disk_init();
        if (disk) {
                /* The whole disk at generation 0, then rewritten block by block forever. */
                for (uint32_t i = 0; i < disk_blocks; i++)
                        disk_write_block(i, 0);
                puts_serial("DISK");
                put_kv("blocks", disk_blocks);
                put_kv("queue", vq_num);
                puts_serial("\n");
        }
        uint64_t t1 = rdtsc();
        puts_serial("READY");
        put_kv("pages", n_pages);
        put_kv("fill-ms", div64(t1 - t0, khz, NULL));
        puts_serial("\n");

        if (opt.bulk) {
                uint64_t b0 = rdtsc();
                uint64_t bytes = bulk_fill_all(mbi, FERRY_FILL_BASE + n_pages * FERRY_PAGE_SIZE, mem_end);
                puts_serial("FILLED");
                put_kv("bytes", bytes);
                put_kv("fill-ms", div64(rdtsc() - b0, khz, NULL));
                puts_serial("\n");
        }

        uint64_t alive_ticks = (uint64_t)khz * opt.alive_ms;
        uint64_t page_ticks = 0; /* TSC ticks per dirtied page under rate= */
        if (opt.rate)
                page_ticks = div64((uint64_t)khz * 1000 * FERRY_PAGE_SIZE,
                                   opt.rate > UINT32_MAX ? UINT32_MAX : (uint32_t)opt.rate, NULL);
        uint64_t disk_ticks = disk ? div64((uint64_t)khz * 1000 * FERRY_DISK_BLOCK,
                                           opt.disk_rate > UINT32_MAX ? UINT32_MAX : (uint32_t)opt.disk_rate, NULL) : 0;
        uint32_t disk_gen = 1, disk_cursor = 0;
        uint64_t disk_written = 0, disk_next = rdtsc();
        uint64_t start = rdtsc(), paced = 0; /* pages dirtied since start */
        last_alive = start;
        for (;;) {
                uint64_t now = rdtsc();
                int may_dirty = n_dirty != 0;
                if (may_dirty && page_ticks) {
                        uint64_t due = paced * page_ticks;
                        if (now - start < due)
                                may_dirty = 0;
                        else if (now - start > due + alive_ticks)
                                start = now - due; /* long stall (paused?): no burst after it */
                }
                if (may_dirty) {
                        if (opt.recheck) {
                                /* it must still hold what the last pass wrote: this finds a
                                 * lost write (a migration that missed a dirty page) within
                                 * one pass over the working set */
                                verify_page(cursor, gen - 1);
                                verified++;
                        }
                        write_page(cursor, gen);
                        dirtied++;
                        paced++;
                        if (++cursor == n_dirty) {
                                cursor = 0;
                                gen++;
                        }
                } else if (!opt.verify || !n_pages) {
                        cpu_relax();
                }
                for (uint32_t v = 0; v < opt.verify && n_pages; v++)
                        verify_next();
                if (disk && now >= disk_next) {
                        /* The block must still hold the last pass's generation (a lost disk
                         * write shows here), then it gets this pass's. */
                        disk_verify_block(disk_cursor, disk_gen - 1);
                        disk_write_block(disk_cursor, disk_gen);
                        disk_written++;
                        if (++disk_cursor == disk_blocks) {
                                disk_cursor = 0;
                                disk_gen++;
                        }
                        disk_next += disk_ticks;
                        if (now > disk_next + alive_ticks)
                                disk_next = now; /* long stall (paused?): no burst after it */
                }
                if (now - last_alive >= alive_ticks) {
                        last_alive = now;
                        puts_serial("ALIVE");
                        put_kv("gen", gen);
                        put_kv("dirtied", dirtied);
                        put_kv("verified", verified);
                        put_kv("corrupt", corrupt_count);
                        if (disk) {
                                put_kv("disk-gen", disk_gen);
                                put_kv("disk-written", disk_written);
                        }
                        puts_serial("\n");
                }
        }
}
