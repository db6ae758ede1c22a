/*
 * registry.c - the list of operations. Adding an op means adding its files
 * and one line here.
 */
#include <string.h>

#include "engine/op.h"

extern const struct pfs_op_desc pfs_op_relight;
extern const struct pfs_op_desc pfs_op_reframe;
extern const struct pfs_op_desc pfs_op_wire_remove;
extern const struct pfs_op_desc pfs_op_object_remove;

const struct pfs_op_desc *const pfs_op_registry[] = {
    &pfs_op_relight,
    &pfs_op_reframe,
    &pfs_op_wire_remove,
    &pfs_op_object_remove,
    NULL,
};

const struct pfs_op_desc *pfs_op_find(const char *name)
{
    for (int i = 0; pfs_op_registry[i]; i++)
        if (strcmp(pfs_op_registry[i]->name, name) == 0)
            return pfs_op_registry[i];
    return NULL;
}

int pfs_op_param_index(const struct pfs_op_desc *desc, const char *name)
{
    for (int i = 0; i < desc->nparams; i++)
        if (strcmp(desc->params[i].name, name) == 0)
            return i;
    return -1;
}
