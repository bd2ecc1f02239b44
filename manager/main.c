/*
 * main.c - cfm-manager: read the configuration, run the manager on one
 * libuv loop until SIGTERM/SIGINT, and check that nothing was left open.
 * Exit status: 0 after a clean stop, 1 on a runtime failure, 2 on a
 * configuration or usage error.
 */
#include <mosquitto.h>
#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "log.h"
#include "manager.h"

int main(int argc, char **argv)
{
    struct cfm_config cfg;
    struct cfm_why why = {{0}};
    struct cfm_manager *m = NULL;
    uv_loop_t loop;
    enum cfm_err err;
    int status = 0;

    err = cfm_config_from_args(argc, argv, &cfg, &why);
    if (err == CFM_EINVAL) {
        fputs(cfm_config_usage(), stdout);
        cfm_config_free(&cfg); /* a --config file read before --help may hold a driver */
        return 0;
    }
    if (err != CFM_OK) {
        fprintf(stderr, "cfm-manager: %s\n", why.text);
        cfm_config_free(&cfg);
        return 2;
    }
    mosquitto_lib_init();
    uv_loop_init(&loop);
    err = cfm_manager_start(&loop, &cfg, argc, argv, &m, &why);
    if (err != CFM_OK) {
        fprintf(stderr, "cfm-manager: %s\n", why.text);
        status = 1;
    } else {
        uv_run(&loop, UV_RUN_DEFAULT);
        cfm_manager_free(m);
    }
    if (uv_loop_close(&loop) != 0) {
        cfm_error("manager", "handles were left open at exit");
        status = status ? status : 1;
    }
    mosquitto_lib_cleanup();
    return status;
}
