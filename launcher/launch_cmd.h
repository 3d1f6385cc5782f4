/* launcher/launch_cmd.h - from a merged, validated config to the exact
 * command tessera-launch runs: `mpirun -np N ... tessera CMD ...`, or inside a
 * Slurm allocation `srun --mpi=pmix -n N ... tessera CMD ...`, plus the
 * variables set in that runner's environment. Pure: everything it reads from
 * the machine (CPU count, root or not, the environment, Slurm's variables,
 * whether srun offers pmix) comes in a tsr_launch_site, so a dry run and the
 * tests see exactly what a real run would do.
 *
 * What it is not: it does not open the model (the caller validated the
 * layout), does not resolve program paths and starts nothing (launch_run.h). */
#ifndef TSR_LAUNCHER_LAUNCH_CMD_H
#define TSR_LAUNCHER_LAUNCH_CMD_H

#include "base/status.h"
#include "launcher/launch_config.h"

/* The facts about the machine the command is built for. */
typedef struct {
    int ncpu;             /* online CPUs here (the slots of a local run) */
    int is_root;          /* euid 0: Open MPI wants OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) */
    char *const *environ; /* the launcher's environment (NAME=VALUE, NULL-terminated) */
    const char *hostname; /* this machine's name */
    /* Slurm: SLURM_JOB_ID non-NULL means "inside an allocation" */
    const char *slurm_job_id, *slurm_ntasks, *slurm_nnodes, *slurmd_nodename;
    int srun_has_pmix;  /* `srun --mpi=list` names pmix */
    const char *mpirun; /* resolved paths of the runners */
    const char *srun;
    const char *tessera; /* resolved path of the tessera program */
} tsr_launch_site;

typedef enum {
    TSR_LAUNCH_RUNNER_MPIRUN = 0,
    TSR_LAUNCH_RUNNER_SRUN,
} tsr_launch_runner;

/* The command and what was decided on the way. */
typedef struct {
    tsr_launch_runner runner;
    int world;             /* tp * pp ranks */
    int in_slurm;          /* inside an allocation */
    int oversubscribed;    /* more ranks than slots: --oversubscribe --bind-to none */
    char *rank0_node;      /* where rank 0 (the gRPC server) runs; owned */
    tsr_launch_strv env;   /* "NAME=VALUE" set in the runner's environment */
    tsr_launch_strv argv;  /* the runner's argv; argv.v[0] is its path */
    tsr_launch_strv notes; /* lines for stderr (a variable not set, an automatic choice) */
} tsr_launch_cmd;

/* Builds the command for `c` (command, model, tp, pp given; the layout
 * already validated) on `site`. TSR_ERR_INVALID (message for the user) when
 * the ranks do not fit: tp * pp differs from --np or from the Slurm
 * allocation's tasks, exceeds the slots of --hosts/--hostfile without
 * oversubscribe, hosts given inside Slurm, runner srun outside Slurm;
 * TSR_ERR_IO when the hostfile cannot be read. On failure *out is freed. */
tsr_status tsr_launch_cmd_build(const tsr_launch_config *c, const tsr_launch_site *site,
                                tsr_launch_cmd *out);

void tsr_launch_cmd_free(tsr_launch_cmd *cmd); /* NULL ok */

/* The command as one shell line: `NAME=VALUE ... argv...`, each word quoted
 * the way Python's shlex.quote does (bare when it only holds
 * [A-Za-z0-9_@%+=:,./-], else in single quotes). malloc'd; NULL on OOM. */
char *tsr_launch_cmd_shell_line(const tsr_launch_cmd *cmd);

/* Appends the shell-quoted form of s to *buf (malloc'd, grown). -1 on OOM. */
int tsr_launch_shell_quote_append(char **buf, size_t *len, size_t *cap, const char *s);

/* Parses Open MPI host lists: "a:8,b:8" / ["a:8", "b"] entries (a name
 * alone is one slot, as mpirun --host counts it). *slots = the total;
 * *first = the first host (owned by the caller). TSR_ERR_INVALID with a
 * message for a bad entry. */
tsr_status tsr_launch_hosts_parse(const tsr_launch_strv *hosts, int *slots, char **first);

/* Reads an Open MPI hostfile ("name [slots=N] [max_slots=M]", # comments).
 * *slots = the total, or -1 when some line has no slots= (mpirun then counts
 * that host's cores, which cannot be known from here). */
tsr_status tsr_launch_hostfile_parse(const char *path, int *slots, char **first);

#endif
