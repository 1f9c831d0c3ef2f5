/*
 * sockbell.h - doorbells made of a pair of UNIX stream sockets.
 */
#ifndef SHUNT_SOCKBELL_H
#define SHUNT_SOCKBELL_H

#include "bell.h"

/* fd[0] rings READ waits, fd[1] WRITE waits. */
extern const struct shunt_bell_ops shunt_sockbell_ops;

#endif /* SHUNT_SOCKBELL_H */
