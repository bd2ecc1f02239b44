/*
 * bounds.h - every bound of cfm in one place. Input over a limit is refused
 * at the edge with an error naming the limit.
 */
#ifndef CFM_BOUNDS_H
#define CFM_BOUNDS_H

#define CFM_MAX_ID          64          /* site, system, kind and object IDs */
#define CFM_MAX_PAYLOAD     (1u << 20)  /* any MQTT payload, any system file */
#define CFM_MAX_BODY        (256u << 10) /* one model object's JSON body */
#define CFM_MAX_TOPIC       512         /* any topic cfm builds or accepts */
#define CFM_MAX_OBJECTS     10000       /* objects in one system description */
#define CFM_MAX_JSON_DEPTH  32          /* nesting of a body */
#define CFM_TIME_LEN        32          /* "2026-11-22T10:00:00.123Z" + NUL */

#endif
