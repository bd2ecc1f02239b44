/*
 * test_driver_local_resources.c - what the local cloud driver lends its
 * VMs, and what it is given: volumes (attach, detach, their data following
 * them from a failed VM, a restart after a move cut short), public
 * addresses, and the config and environment open refuses. Real cfm-agent
 * processes on a real loop (driver_local_harness.h).
 */
#include "driver_local_harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct cfm_driver_ops *ops = &cfm_driver_local_ops;

/* A directory itself, not a link to one. */
static bool is_dir(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static enum cfm_err attach(struct dlh_fx *fx, const char *id, const char *volume)
{
    return dlh_answer(fx, ops->attach_volume(fx->d, id, volume, "v-1", dlh_on_vm, fx));
}

static enum cfm_err detach(struct dlh_fx *fx, const char *id, const char *volume)
{
    return dlh_answer(fx, ops->detach_volume(fx->d, id, volume, "v-2", dlh_on_vm, fx));
}

static enum cfm_err associate(struct dlh_fx *fx, const char *id, const char *address,
                              const char *token)
{
    return dlh_answer(fx, ops->associate_address(fx->d, id, address, token, dlh_on_vm, fx));
}

static enum cfm_err disassociate(struct dlh_fx *fx, const char *id, const char *address,
                                 const char *token)
{
    return dlh_answer(fx, ops->disassociate_address(fx->d, id, address, token, dlh_on_vm, fx));
}

/* ---- tests ------------------------------------------------------------------ */

static void test_volumes(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_info a, b;
    char in_a[PATH_MAX], in_b[PATH_MAX], home[PATH_MAX], file[PATH_MAX];

    dlh_open_ok(fx, NULL);
    dlh_run_ok(fx, "k-1", &a);
    dlh_run_ok(fx, "k-2", &b);
    PATHF(in_a, "%s/volumes/data", a.disk);
    PATHF(in_b, "%s/volumes/data", b.disk);
    PATHF(home, "%s/volumes/shop/data", fx->dir);
    assert_int_equal(attach(fx, a.id, "data"), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 1);
    assert_string_equal(fx->vm.volumes[0], "data");
    /* Attached, the volume is a directory of the VM's disk, not a link out. */
    assert_true(is_dir(in_a));
    assert_true(dlh_absent(home));
    PATHF(file, "%s/hello", in_a);
    dlh_write_text(file, "hi\n");
    /* Idempotent. */
    assert_int_equal(attach(fx, a.id, "data"), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 1);
    {
        json_t *j = dlh_read_vm_json(fx, a.id);
        assert_int_equal(json_array_size(json_object_get(j, "volumes")), 1);
        json_decref(j);
    }
    /* One VM at a time. */
    assert_int_equal(attach(fx, b.id, "data"), CFM_EINVAL);
    assert_non_null(strstr(fx->why, a.id));
    /* Detach moves it out of the disk to its home, data and all; twice is fine. */
    assert_int_equal(detach(fx, a.id, "data"), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_true(dlh_absent(in_a));
    assert_true(is_dir(home));
    PATHF(file, "%s/hello", home);
    dlh_assert_text(file, "hi\n");
    assert_int_equal(detach(fx, a.id, "data"), CFM_OK);
    /* Now b may have it, with what a wrote; terminating b moves it home. */
    assert_int_equal(attach(fx, b.id, "data"), CFM_OK);
    assert_true(dlh_absent(home));
    PATHF(file, "%s/hello", in_b);
    dlh_assert_text(file, "hi\n");
    assert_int_equal(dlh_terminate(fx, b.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_true(dlh_absent(in_b));
    PATHF(file, "%s/hello", home);
    dlh_assert_text(file, "hi\n");
    assert_int_equal(attach(fx, b.id, "data"), CFM_EINVAL);
    assert_int_equal(attach(fx, a.id, "a/b"), CFM_EINVAL);
    assert_int_equal(attach(fx, a.id, ".."), CFM_EINVAL);
    /* Something of the VM's own in the way is not overwritten. */
    PATHF(file, "%s/volumes/data/mine", a.disk);
    assert_int_equal(mkdir(in_a, 0755), 0);
    dlh_write_text(file, "mine\n");
    assert_int_equal(attach(fx, a.id, "data"), CFM_EIO);
    assert_non_null(strstr(fx->why, "in the way"));
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    dlh_assert_text(file, "mine\n");
    PATHF(file, "%s/hello", home);
    dlh_assert_text(file, "hi\n");
}

/* Adds volume to the volumes of the VM's vm.json (the driver is closed). */
static void record_volume(const struct dlh_fx *fx, const char *id, const char *volume)
{
    char path[PATH_MAX];
    json_t *j = dlh_read_vm_json(fx, id);

    assert_non_null(j);
    assert_int_equal(json_array_append_new(json_object_get(j, "volumes"), json_string(volume)),
                     0);
    PATHF(path, "%s/vms/%s/vm.json", fx->dir, id);
    assert_int_equal(json_dump_file(j, path, JSON_INDENT(2)), 0);
    json_decref(j);
}

/* Heal and DR: the data of a FAILED VM's volume follows the volume to the
 * next VM. IDs with dots do not collide. A restart puts a volume back where
 * its record says, after a move that was cut short. */
static void test_volume_heal(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_vm_spec spec = {.key = "k-3", .system = "shop.db", .vm_class = "web",
                               .image = "local", .cpu = 1, .memory_mb = 512};
    struct cfm_vm_info a, b, c;
    char in_a[PATH_MAX], in_b[PATH_MAX], home[PATH_MAX], file[PATH_MAX];
    json_t *j;

    dlh_open_ok(fx, NULL);
    dlh_run_ok(fx, "k-1", &a);
    dlh_run_ok(fx, "k-2", &b);
    assert_int_equal(dlh_answer(fx, ops->run(fx->d, &spec, dlh_on_vm, fx)), CFM_OK);
    c = fx->vm;
    /* (shop, db.data) and (shop.db, data) are two volumes. */
    assert_int_equal(attach(fx, a.id, "db.data"), CFM_OK);
    assert_int_equal(attach(fx, c.id, "data"), CFM_OK);
    PATHF(in_a, "%s/volumes/db.data", a.disk);
    PATHF(in_b, "%s/volumes/db.data", b.disk);
    PATHF(file, "%s/row", in_a);
    dlh_write_text(file, "of shop\n");
    PATHF(file, "%s/volumes/data/row", c.disk);
    dlh_write_text(file, "of shop.db\n");

    /* a dies: attaching its volume to b moves the data from a's disk. */
    assert_int_equal(kill(dlh_vm_pid(fx, a.id), SIGKILL), 0);
    assert_true(dlh_run_until(fx, &fx->events, 1, FAIL_MS));
    assert_int_equal(fx->event.state, CFM_VM_FAILED);
    assert_int_equal(fx->event.nvolumes, 1); /* a failed VM still holds its volumes */
    assert_int_equal(attach(fx, b.id, "db.data"), CFM_OK);
    assert_true(dlh_absent(in_a));
    PATHF(file, "%s/row", in_b);
    dlh_assert_text(file, "of shop\n");
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    j = dlh_read_vm_json(fx, a.id);
    assert_int_equal(json_array_size(json_object_get(j, "volumes")), 0);
    json_decref(j);
    assert_int_equal(detach(fx, c.id, "data"), CFM_OK);
    PATHF(file, "%s/volumes/shop.db/data/row", fx->dir);
    dlh_assert_text(file, "of shop.db\n");

    /* Stopped after moving b's volume out but before recording it: the
     * record wins, and the volume goes back into b's disk. */
    dlh_close_driver(fx);
    PATHF(home, "%s/volumes/shop", fx->dir);
    assert_true(mkdir(home, 0700) == 0 || errno == EEXIST);
    PATHF(home, "%s/volumes/shop/db.data", fx->dir);
    assert_int_equal(rename(in_b, home), 0);
    dlh_open_ok(fx, NULL);
    assert_true(dlh_absent(home));
    PATHF(file, "%s/row", in_b);
    dlh_assert_text(file, "of shop\n");

    /* Stopped after recording the volume on b but before dropping it from
     * failed a: it stays with b, whose disk holds it. */
    dlh_close_driver(fx);
    record_volume(fx, a.id, "db.data");
    dlh_open_ok(fx, NULL);
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 0);
    assert_int_equal(dlh_describe(fx, b.id), CFM_OK);
    assert_int_equal(fx->vm.nvolumes, 1);
    dlh_assert_text(file, "of shop\n");
    j = dlh_read_vm_json(fx, a.id);
    assert_int_equal(json_array_size(json_object_get(j, "volumes")), 0);
    json_decref(j);

    /* b dies and its volume's data is lost: not silently replaced by an
     * empty volume; detached from b, the id makes a new one. */
    assert_int_equal(kill(dlh_vm_pid(fx, b.id), SIGKILL), 0);
    assert_true(dlh_run_until(fx, &fx->events, 2, FAIL_MS));
    assert_int_equal(unlink(file), 0);
    assert_int_equal(rmdir(in_b), 0);
    dlh_run_ok(fx, "k-4", &c);
    assert_int_equal(attach(fx, c.id, "db.data"), CFM_EIO);
    assert_non_null(strstr(fx->why, "neither in the disk of"));
    assert_int_equal(detach(fx, b.id, "db.data"), CFM_OK);
    assert_int_equal(attach(fx, c.id, "db.data"), CFM_OK);
    PATHF(file, "%s/volumes/db.data", c.disk);
    assert_true(is_dir(file));
    assert_int_equal(fx->events, 2);
}

static void test_addresses(void **state)
{
    struct dlh_fx *fx = *state;
    static const char config[] = "{\"public_pool\": [\"127.78.9.1\", \"127.78.9.2\"]}";
    struct cfm_vm_info a, b;
    json_t *j;

    dlh_open_ok(fx, config);
    dlh_run_ok(fx, "k-1", &a);
    dlh_run_ok(fx, "k-2", &b);
    assert_int_equal(associate(fx, a.id, "web-ip", "a-1"), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    assert_string_equal(fx->vm.address_id, "web-ip");
    assert_int_equal(associate(fx, a.id, "web-ip", "a-1"), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    /* Moving it to b (what DR does) takes it from a. */
    assert_int_equal(associate(fx, b.id, "web-ip", "a-2"), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    assert_int_equal(dlh_describe(fx, a.id), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "");
    assert_string_equal(fx->vm.address_id, "");
    j = dlh_read_vm_json(fx, a.id);
    assert_string_equal(json_string_value(json_object_get(j, "public_ip")), "");
    json_decref(j);
    j = dlh_read_vm_json(fx, b.id);
    assert_string_equal(json_string_value(json_object_get(j, "address_id")), "web-ip");
    json_decref(j);
    /* A second address, then the pool is exhausted. */
    assert_int_equal(associate(fx, a.id, "db-ip", "a-3"), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.2");
    assert_int_equal(associate(fx, a.id, "x-ip", "a-4"), CFM_ETOOBIG);
    assert_non_null(strstr(fx->why, "no free public address"));
    /* Disassociate, twice. */
    assert_int_equal(disassociate(fx, b.id, "web-ip", "a-5"), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "");
    assert_int_equal(disassociate(fx, b.id, "web-ip", "a-5"), CFM_OK);
    /* The binding of (system, address) to its IP survives a restart. */
    dlh_close_driver(fx);
    dlh_open_ok(fx, config);
    assert_int_equal(associate(fx, a.id, "web-ip", "a-6"), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "127.78.9.1");
    /* Terminating frees the public address of the VM. */
    assert_int_equal(dlh_terminate(fx, a.id), CFM_OK);
    assert_string_equal(fx->vm.public_ip, "");
    assert_string_equal(fx->vm.address_id, "");
}

static void test_bad_config(void **state)
{
    static const struct {
        const char *config, *field;
    } cases[] = {
        {"[]", "driver: must be an object"},
        {"{\"type\": \"ec2\"}", "driver.type"},
        {"{\"bogus\": 1}", "driver: unknown field 'bogus'"},
        {"{\"capacity\": 4}", "driver.capacity"},
        {"{\"capacity\": {\"cpu\": 0}}", "driver.capacity.cpu"},
        {"{\"capacity\": {\"cpu\": \"4\"}}", "driver.capacity.cpu"},
        {"{\"capacity\": {\"memory_mb\": -1}}", "driver.capacity.memory_mb"},
        {"{\"capacity\": {\"cpus\": 4}}", "driver.capacity: unknown field 'cpus'"},
        {"{\"private_net\": \"10.0.0\"}", "driver.private_net"},
        {"{\"private_net\": \"127.77.256\"}", "driver.private_net"},
        {"{\"private_net\": \"127.77.5.0\"}", "driver.private_net"},
        {"{\"public_pool\": \"127.78.1.1\"}", "driver.public_pool"},
        {"{\"public_pool\": [\"127.78.1.300\"]}", "driver.public_pool[0]"},
        {"{\"public_pool\": [\"127.78.1.1\", \"127.78.1.1\"]}", "driver.public_pool[1]"},
        {"{\"private_net\": \"127.77.5\", \"public_pool\": [\"127.77.5.9\"]}",
         "driver.public_pool[0]"},
        {"{\"agent_args\": [\"--vm\"]}", "driver.agent_args[0]"},
        {"{\"agent_args\": [\"--log-level=debug\", \"--root=/\"]}", "driver.agent_args[1]"},
        {"{\"agent_args\": [7]}", "driver.agent_args[0]"},
    };
    struct dlh_fx *fx = *state;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct cfm_why why = {""};
        fx->d = NULL;
        assert_int_equal(dlh_open_driver(fx, cases[i].config, &why), CFM_ECONFIG);
        assert_null(fx->d);
        if (!strstr(why.text, cases[i].field))
            fail_msg("config %s: why '%s' does not name '%s'", cases[i].config, why.text,
                     cases[i].field);
    }
    /* What is fine is fine. */
    dlh_open_ok(fx, "{\"type\": \"local\", \"capacity\": {\"cpu\": 2, \"memory_mb\": 2048}, "
                    "\"private_net\": \"127.77.5\", \"public_pool\": [\"127.78.5.1\"], "
                    "\"agent_args\": [\"--log-level\", \"debug\"]}");
    dlh_close_driver(fx);
}

static void test_bad_env(void **state)
{
    struct dlh_fx *fx = *state;
    struct cfm_driver_env env = {
        .loop = &fx->loop, .site = "site-a", .state_dir = fx->dir,
        .broker_host = "127.0.0.1", .broker_port = fx->port,
        .agent_path = "/nonexistent/cfm-agent",
    };
    struct cfm_why why = {""};

    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_ECONFIG);
    assert_non_null(strstr(why.text, "agent_path"));
    env.agent_path = CFM_AGENT_PATH;
    env.site = "a/b";
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_ECONFIG);
    assert_non_null(strstr(why.text, "site"));
    env.site = "site-a";
    env.state_dir = "/nonexistent/state";
    assert_int_equal(ops->open(&env, NULL, &fx->d, &why), CFM_ECONFIG);
    assert_non_null(strstr(why.text, "state_dir"));
    fx->d = NULL;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, dlh_setup, dlh_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_volumes),    T(test_volume_heal), T(test_addresses),
        T(test_bad_config), T(test_bad_env),
    };

    /* An agent's death must not stop the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
