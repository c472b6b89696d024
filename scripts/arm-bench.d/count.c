/* A qemu-user TCG plugin that counts the guest instructions executed, per translation block start address.
 * Written against QEMU's plugin API version 1 (qemu 7.2, Debian bookworm's dynamically linked qemu-user);
 * the few functions it calls are declared here rather than taken from QEMU's header.
 *
 *   qemu-aarch64 -plugin ./count.so,out=FILE[,mark=ADDRESS] -cpu cortex-a72 -L /usr/aarch64-linux-gnu BINARY ARGS...
 *
 * At exit FILE holds one line per block that ran: its start address and the instructions executed there, in
 * hex and decimal. With `mark=` (a guest address, hex), every call of the function there is noted too: FILE
 * then also holds a line `mark TOTAL` per call, in order, TOTAL the instructions executed until then, so that
 * the program can bracket the parts it wants counted. With `window=N` too, FILE also holds a line `window ADDRESS
 * EXECUTED` per block that ran between calls N and N + 1 (from 0): the blocks of one bracketed part. Counts are added inline by the generated code; a guest with
 * several threads running at once may lose a few of its increments to races, so count single-threaded runs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                                     void *ptr, uint64_t imm);
extern void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags, void *userdata);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Open addressing by start address; a block translated again (after a flush) finds its counter. */
struct block { uint64_t vaddr; uint64_t executed; };
static struct block *blocks;
static size_t capacity = 1 << 20;
static size_t used;
static char out[4096];
/* All instructions so far, and its value at each call of the marked function. */
static uint64_t total;
static uint64_t mark_address;
static uint64_t *marks;
static size_t marks_used, marks_capacity;
static long window = -1;
/* Each block's count at the window's opening, then what it executed within the window. */
static uint64_t *window_counts;

static void marked(unsigned int vcpu_index, void *userdata) {
    (void)vcpu_index;
    (void)userdata;
    if (marks_used == marks_capacity) {
        marks_capacity = marks_capacity ? 2 * marks_capacity : 1024;
        marks = realloc(marks, marks_capacity * sizeof *marks);
        if (!marks) {
            fprintf(stderr, "count.so: out of memory for marks\n");
            exit(3);
        }
    }
    if ((long)marks_used == window || (long)marks_used == window + 1) {
        int opening = (long)marks_used == window;
        for (size_t i = 0; i < capacity; i++)
            window_counts[i] = opening ? blocks[i].executed : blocks[i].executed - window_counts[i];
    }
    marks[marks_used++] = total;
}

static struct block *find(uint64_t vaddr) {
    size_t slot = (size_t)((vaddr >> 2) * 0x9E3779B97F4A7C15ull) & (capacity - 1);
    while (blocks[slot].vaddr != 0 && blocks[slot].vaddr != vaddr) slot = (slot + 1) & (capacity - 1);
    return &blocks[slot];
}

static void translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    uint64_t vaddr = qemu_plugin_tb_vaddr(tb);
    struct block *block = find(vaddr);
    if (block->vaddr == 0) {
        if (++used > capacity / 2) {
            /* Blocks already translated hold pointers into the table: it cannot move, so stop rather than lie. */
            fprintf(stderr, "count.so: more than %zu blocks; raise capacity\n", capacity / 2);
            exit(3);
        }
        block->vaddr = vaddr;
    }
    size_t instructions = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->executed, instructions);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &total, instructions);
    if (mark_address && vaddr == mark_address)
        qemu_plugin_register_vcpu_tb_exec_cb(tb, marked, QEMU_PLUGIN_CB_NO_REGS, NULL);
}

static void finished(qemu_plugin_id_t id, void *userdata) {
    (void)id;
    (void)userdata;
    FILE *file = fopen(out, "w");
    if (!file) {
        perror(out);
        return;
    }
    for (size_t i = 0; i < capacity; i++)
        if (blocks[i].executed) fprintf(file, "%llx %llu\n", (unsigned long long)blocks[i].vaddr,
                                        (unsigned long long)blocks[i].executed);
    for (size_t i = 0; i < marks_used; i++) fprintf(file, "mark %llu\n", (unsigned long long)marks[i]);
    if (window >= 0 && (long)marks_used > window + 1)
        for (size_t i = 0; i < capacity; i++)
            if (window_counts[i]) fprintf(file, "window %llx %llu\n", (unsigned long long)blocks[i].vaddr,
                                          (unsigned long long)window_counts[i]);
    fclose(file);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0)
            snprintf(out, sizeof out, "%s", argv[i] + 4);
        else if (strncmp(argv[i], "mark=", 5) == 0)
            mark_address = strtoull(argv[i] + 5, NULL, 16);
        else if (strncmp(argv[i], "window=", 7) == 0)
            window = strtol(argv[i] + 7, NULL, 10);
    if (!out[0]) {
        fprintf(stderr, "count.so: give out=FILE\n");
        return -1;
    }
    blocks = calloc(capacity, sizeof *blocks);
    window_counts = calloc(capacity, sizeof *window_counts);
    if (!blocks || !window_counts) return -1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
