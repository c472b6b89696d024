/* A qemu-user TCG plugin that counts the guest instructions executed, per translation block start address.
 * Written against QEMU's plugin API version 1 (qemu 7.2, Debian bookworm's dynamically linked qemu-user);
 * the few functions it calls are declared here rather than taken from QEMU's header.
 *
 *   qemu-aarch64 -plugin ./count.so,out=FILE -cpu cortex-a72 -L /usr/aarch64-linux-gnu BINARY ARGS...
 *
 * At exit FILE holds one line per block that ran: its start address and the instructions executed there, in
 * hex and decimal. Counts are added inline by the generated code; a guest with several threads running at once
 * may lose a few of its increments to races, so count single-threaded runs. */
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

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
extern uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
                                                     void *ptr, uint64_t imm);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Open addressing by start address; a block translated again (after a flush) finds its counter. */
struct block { uint64_t vaddr; uint64_t executed; };
static struct block *blocks;
static size_t capacity = 1 << 20;
static size_t used;
static char out[4096];

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
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->executed,
                                             qemu_plugin_tb_n_insns(tb));
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
    fclose(file);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                                               int argc, char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++)
        if (strncmp(argv[i], "out=", 4) == 0) snprintf(out, sizeof out, "%s", argv[i] + 4);
    if (!out[0]) {
        fprintf(stderr, "count.so: give out=FILE\n");
        return -1;
    }
    blocks = calloc(capacity, sizeof *blocks);
    if (!blocks) return -1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, translated);
    qemu_plugin_register_atexit_cb(id, finished, NULL);
    return 0;
}
