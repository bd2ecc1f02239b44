/*
 * load.h - the load figures an agent publishes in its status.
 */
#ifndef CFM_AGENT_LOAD_H
#define CFM_AGENT_LOAD_H

#include <jansson.h>

/* Returns a new object {"load1","load5","load15","mem_total_kb",
 * "mem_available_kb","procs","running_commands"}; a figure the system does
 * not give is null. running is the number of commands in flight. Returns
 * NULL only when out of memory. */
json_t *cfm_agent_load_figures(unsigned running);

#endif
