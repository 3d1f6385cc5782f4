/* launcher/launch_run.h - runs the command tessera-launch built (fork +
 * exec, then wait) and stops it cleanly on SIGINT, SIGTERM or SIGHUP.
 *
 * Why not just let the signal reach mpirun: mpirun, when it is signalled
 * itself, kills the ranks soon after and reports the job as failed whatever
 * they return (docs/serving.md, "Shutdown"). So the runner gets its own
 * process group (a Ctrl-C at the terminal reaches the launcher only) and the
 * launcher sends SIGTERM to the ranks themselves: under mpirun, the tessera
 * processes below mpirun on this machine (found through /proc); under srun,
 * srun, which forwards the signal to every task on every node. `tessera
 * serve` then drains and every rank exits 0. If nothing has ended after the
 * stop timeout (or on a second signal), the runner is signalled, then
 * SIGKILLed with its whole process group 5 s later.
 *
 * What it is not: it builds no command (launch_cmd.h) and reads no config. */
#ifndef TSR_LAUNCHER_LAUNCH_RUN_H
#define TSR_LAUNCHER_LAUNCH_RUN_H

#include "launcher/launch_cmd.h"

typedef struct {
    double stop_timeout;      /* seconds from the first stop signal to escalation */
    const char *tessera_real; /* realpath of the tessera program: how ranks are recognised */
    int keep_stdin;           /* the command reads standard input (--file -); else /dev/null */
} tsr_launch_run_opts;

/* Runs cmd (its env entries set in the child) and waits for it. Returns
 * TSR_OK with *exit_code the launcher's exit code: the runner's exit code
 * when it ended by itself, 0 when a stop left every rank exiting 0, 128 +
 * the stop signal when a stopped job did not end cleanly, 128 + n when the
 * runner died of signal n (137 after the SIGKILL escalation), 127 when the
 * child could not exec the runner (it says why on stderr). TSR_ERR_NOMEM or
 * TSR_ERR_IO ("fork: ...") when nothing could be started (*exit_code 127).
 * Prints the progress of a stop on stderr. Blocks SIGINT/SIGTERM/SIGHUP/
 * SIGCHLD in the calling thread while it runs. */
tsr_status tsr_launch_run(const tsr_launch_cmd *cmd, const tsr_launch_run_opts *o, int *exit_code);

#endif
