/*
 * rules.h - which procedure an event starts, and where. A system binds
 * event types to scripts ("procedures": {"dr": {"script": "dr.lua",
 * "run_at": "target"}}); every manager decides from the same replicated
 * state (the BusinessSystem object and the sites' retained statuses) which
 * sites run it, so exactly the intended site(s) start a run.
 */
#ifndef CFM_RULES_H
#define CFM_RULES_H

#include <jansson.h>
#include <stdbool.h>

#include "bounds.h"
#include "obj.h"
#include "store.h"

struct cfm_rule_match {
    char script[256];
    double timeout_s;             /* 0: the engine's default */
    char run_id[CFM_MAX_ID + 1];  /* derived from the event id, site and type */
    char reason[256];             /* why this site runs it, or why not */
};

/* Decides whether site runs the procedure bound to the event's type in sys
 * (event borrowed, already completed by cfm_event_parse). Returns true and
 * fills m when it does; false (with m->reason) when the type is not bound
 * or another site runs it. */
bool cfm_rules_match(struct cfm_store *st, const struct cfm_obj *sys, const json_t *event,
                     const char *site, struct cfm_rule_match *m);

#endif
