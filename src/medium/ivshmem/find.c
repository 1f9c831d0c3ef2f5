/*
 * find.c - where a guest's ivshmem region is: BAR 2 of the PCI devices
 * 1af4:1110 (QEMU's ivshmem-plain and ivshmem-doorbell), through sysfs.
 *
 * No driver is needed: sysfs maps a BAR to whoever may open its resource
 * file (root, unless the administrator grants it: docs/vms.md).  Only the
 * library's own system calls are used (sys.h), since this runs inside
 * programs whose open and read the preload library may be wrapping.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "find.h"
#include "sys.h"

#define PCI_DIR "/sys/bus/pci/devices"

/* The first line of a small sysfs file, without its newline. */
static int read_line(const char *path, char *buf, size_t n)
{
	int fd = sys_openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC, 0);

	if (fd < 0)
		return fd;
	long k = sys_read(fd, buf, n - 1);
	sys_close(fd);
	if (k < 0)
		return (int)k;
	buf[k] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	return 0;
}

static int is_ivshmem(const char *dev)
{
	char path[320], v[32], d[32];

	if (snprintf(path, sizeof(path), PCI_DIR "/%s/vendor", dev) >= (int)sizeof(path) ||
	    read_line(path, v, sizeof(v)) < 0)
		return 0;
	snprintf(path, sizeof(path), PCI_DIR "/%s/device", dev);
	if (read_line(path, d, sizeof(d)) < 0)
		return 0;
	return strcmp(v, "0x1af4") == 0 && strcmp(d, "0x1110") == 0;
}

int shunt_vmr_pci_path(int index, char *out, size_t n)
{
	union {
		char buf[4096];
		struct dirent64 align;
	} u;
	int dir = sys_openat(AT_FDCWD, PCI_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	int seen = 0, rc = -ENODEV;

	if (dir < 0)
		return dir == -ENOENT ? -ENODEV : dir;
	long k;
	while (rc == -ENODEV && (k = sys_getdents64(dir, u.buf, sizeof(u.buf))) > 0) {
		for (long off = 0; off < k;) {
			const struct dirent64 *e = (const struct dirent64 *)(u.buf + off);
			off += e->d_reclen;
			if (e->d_name[0] == '.' || !is_ivshmem(e->d_name) || seen++ != index)
				continue;
			rc = snprintf(out, n, PCI_DIR "/%s/resource2", e->d_name) < (int)n
				     ? 0 : -ENAMETOOLONG;
			break;
		}
	}
	sys_close(dir);
	return rc;
}
