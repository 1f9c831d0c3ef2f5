/*
 * find.h - finding a guest's ivshmem region (find.c).
 */
#ifndef SHUNT_FIND_H
#define SHUNT_FIND_H

#include <stddef.h>

/* The resource2 path of the index-th ivshmem PCI device (0: the first):
 * 0, -ENODEV if there is no such device, or another negative errno.
 * getdents order, which is the order of the bus addresses in practice. */
int shunt_vmr_pci_path(int index, char *out, size_t n);

#endif /* SHUNT_FIND_H */
