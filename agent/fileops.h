/*
 * fileops.h - the put_file and get_file requests: JSON in, JSON result out,
 * on top of files.h (confinement, atomic write, capped read).
 */
#ifndef CFM_AGENT_FILEOPS_H
#define CFM_AGENT_FILEOPS_H

#include <jansson.h>

#include "err.h"

/* Runs put_file {"path", "content" | "content_b64", "mode"} (req borrowed)
 * inside root; paths inside state_dir (the agent's own files) are refused.
 * Returns a new {"path","size"} or NULL with why naming what was wrong. */
json_t *cfm_agent_op_put_file(const char *root, const char *state_dir, const json_t *req,
                              struct cfm_why *why);

/* Runs get_file {"path"} (req borrowed) inside root. Returns a new
 * {"path","size","mode","content" | "content_b64"} or NULL with why. */
json_t *cfm_agent_op_get_file(const char *root, const json_t *req, struct cfm_why *why);

#endif
