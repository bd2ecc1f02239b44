/*
 * kind.h - the model object kinds. "Declared" kinds come from a system
 * description file (the owner writes them); the others are written at run
 * time by managers and procedures.
 */
#ifndef CFM_KIND_H
#define CFM_KIND_H

#include <stdbool.h>
#include "err.h"

#define CFM_KINDS(X)                                                    \
    X(CFM_KIND_BUSINESS_SYSTEM,          "BusinessSystem",           true)  \
    X(CFM_KIND_ELEMENT,                  "BusinessSystemElement",    true)  \
    X(CFM_KIND_ELEMENT_INSTANCE,         "BusinessSystemElementInstance", false) \
    X(CFM_KIND_CONFIG_TEMPLATE,          "ConfigTemplate",           true)  \
    X(CFM_KIND_VM_CLASS,                 "VMClass",                  true)  \
    X(CFM_KIND_VM_INSTANCE,              "VMInstance",               false) \
    X(CFM_KIND_SITE,                     "Site",                     true)  \
    X(CFM_KIND_VOLUME,                   "Volume",                   true)  \
    X(CFM_KIND_ADDRESS,                  "Address",                  true)  \
    X(CFM_KIND_PROCEDURE_RUN,            "ProcedureRun",             false)

enum cfm_kind {
#define X(k, name, declared) k,
    CFM_KINDS(X)
#undef X
    CFM_KIND__COUNT
};

/* The kind's name as written in JSON and topics; "?" for an out-of-range value. */
const char *cfm_kind_name(enum cfm_kind kind);

/* Looks up a kind by exact name. Returns CFM_EINVAL (with why naming the
 * unknown kind and listing the known ones) when there is none. */
enum cfm_err cfm_kind_parse(const char *name, enum cfm_kind *out, struct cfm_why *why);

/* True for kinds a system description declares (see the table above). */
bool cfm_kind_declared(enum cfm_kind kind);

#endif
