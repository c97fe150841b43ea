/* qemu_insn_count.c — a qemu TCG plugin that counts the guest instructions a program executes (Debian's
 * qemu-user has plugin support but ships no plugins). Built by bench/arm64_instructions.py with the host
 * compiler as a shared object and loaded with `qemu-aarch64 -plugin ./libqemu_insn_count.so`; at exit it prints
 * "qemu_insn_count: N" to stderr.
 *
 * Method: every translated block gets an inline counter increment of its instruction count, run each time
 * the block is entered (qemu_plugin_register_vcpu_tb_exec_inline), the method of qemu's contrib insn plugin.
 * One counter for all threads (not atomic): run the measured program with one thread. A block left early by
 * an exception is counted whole (none occur in the measured code).
 *
 * The declarations below are the few entries of QEMU's plugin API (include/qemu/qemu-plugin.h, API
 * version 1, as in QEMU 7.2) this plugin uses; qemu resolves them when it loads the plugin. */
#include <stdint.h>
#include <stdio.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id,
                                           void (*cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb));
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr,
                                              uint64_t imm);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, void (*cb)(qemu_plugin_id_t id, void *userdata),
                                    void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static uint64_t executed;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &executed, qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *userdata) {
    fprintf(stderr, "qemu_insn_count: %llu\n", (unsigned long long)executed);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info,
                                                               int argc, char **argv) {
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
