/*
 * cmds.h - the `shunt` subcommands other than bench (bench.h).
 */
#ifndef SHUNT_CMDS_H
#define SHUNT_CMDS_H

int run_main(int argc, char **argv);  /* run.c */
int stat_main(int argc, char **argv); /* stat.c */
int vm_main(int argc, char **argv);   /* vm.c */

#endif
