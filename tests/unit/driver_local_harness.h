/*
 * driver_local_harness.h - the fixture the local driver's tests share: a
 * libuv loop, a temporary state directory and the driver's answers and
 * events, with calls that wait for their answer (bounded), readers of a
 * VM's vm.json and a few file helpers. Each test gets a fresh fixture
 * from dlh_setup (cmocka's *state); dlh_teardown kills every agent a
 * vm.json names, even when the test failed.
 */
#ifndef CFM_DRIVER_LOCAL_HARNESS_H
#define CFM_DRIVER_LOCAL_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <uv.h>

#include "driver.h"

#define WAIT_MS 10000 /* the most any answer may take (terminate: 3 s + SIGKILL) */
#define FAIL_MS 3500  /* kill -9 noticed within this (poll is 1 s) */

/* Formats a path, failing the test if it does not fit. */
#define PATHF(buf, ...) assert_true(snprintf(buf, sizeof buf, __VA_ARGS__) < (int)sizeof buf)

struct dlh_fx {
    char dir[PATH_MAX];
    int port;
    uv_loop_t loop;
    struct cfm_driver *d;
    int answers;
    enum cfm_err err;
    struct cfm_vm_info vm;
    char why[CFM_WHY_MAX];
    int events;
    struct cfm_vm_info event;
    int lists;
    struct cfm_vm_info list[16];
    size_t nlist;
};

/* cmocka's setup: a new fixture in *state (its own loop, a new directory
 * under $TMPDIR, a closed loopback port for the agents' broker). */
int dlh_setup(void **state);

/* cmocka's teardown: closes the driver, kills every agent a vm.json names,
 * removes the directory and frees the fixture; fails when a handle of the
 * loop was left open. */
int dlh_teardown(void **state);

/* The driver's on_event (arg is the fixture): counted in events, kept in
 * event; stops the loop so that dlh_run_until looks at once. */
void dlh_on_event(void *arg, const struct cfm_vm_info *vm);

/* Keeps an answer (vm NULL on error) in *err_out, *vm_out and why_out. */
void dlh_keep_answer(enum cfm_err err, const struct cfm_vm_info *vm, const char *why,
                     enum cfm_err *err_out, struct cfm_vm_info *vm_out, char why_out[CFM_WHY_MAX]);

/* A call's callback (arg is the fixture): counted in answers, kept in err,
 * vm and why; stops the loop. */
void dlh_on_vm(void *arg, enum cfm_err err, const struct cfm_vm_info *vm, const char *why);

/* Runs the loop until *count reaches want, or ms pass. The callbacks call
 * uv_stop, so UV_RUN_ONCE does not then block until the next timer. */
bool dlh_run_until(struct dlh_fx *fx, const int *count, int want, uint64_t ms);

/* Waits for the answer of the call just made; never given inside the call. */
enum cfm_err dlh_answer(struct dlh_fx *fx, enum cfm_err call);

/* Opens the local driver for site-a in the fixture's directory, with
 * config_text (JSON; NULL for none) and the real agent. */
enum cfm_err dlh_open_driver(struct dlh_fx *fx, const char *config_text, struct cfm_why *why);

/* dlh_open_driver, failing the test if it fails. */
void dlh_open_ok(struct dlh_fx *fx, const char *config_text);

/* Closes the driver and lets its handles close (a manager stopping). */
void dlh_close_driver(struct dlh_fx *fx);

/* Runs a VM of system "shop" and waits for the answer. */
enum cfm_err dlh_run_vm(struct dlh_fx *fx, const char *key, const char *cls, int cpu, int mem);

/* Runs a "web" VM (1 CPU, 512 MiB), failing the test unless it is RUNNING. */
void dlh_run_ok(struct dlh_fx *fx, const char *key, struct cfm_vm_info *out);

/* Terminates VM id and waits for the answer. */
enum cfm_err dlh_terminate(struct dlh_fx *fx, const char *id);

/* Describes VM id and waits for the answer. */
enum cfm_err dlh_describe(struct dlh_fx *fx, const char *id);

/* VM id's vm.json: a new reference, NULL when it cannot be read. */
json_t *dlh_read_vm_json(const struct dlh_fx *fx, const char *id);

/* The agent pid recorded in VM id's vm.json (0 when none). */
int dlh_vm_pid(const struct dlh_fx *fx, const char *id);

/* Nothing is at path, not even a dangling link. */
bool dlh_absent(const char *path);

/* Writes text into the file path (made or emptied), failing the test on error. */
void dlh_write_text(const char *path, const char *text);

/* Fails the test unless the first line of the file path is want. */
void dlh_assert_text(const char *path, const char *want);

#endif
