/* launcher/launch_run.c - fork/exec/wait and the clean stop of a job; see
 * launch_run.h. */
#include "launcher/launch_run.h"
#include "base/clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_RANKS 4096

/* One process seen as a rank: pid plus start time, so a reused pid is not
 * mistaken for it. */
typedef struct {
    pid_t pid;
    unsigned long long start;
    int signalled;
} rank_proc;

typedef struct {
    rank_proc v[MAX_RANKS];
    int n;
} rank_set;

/* ppid, process group and start time (clock ticks since boot) from
 * /proc/PID/stat; pgrp may be NULL. */
static int proc_stat3(pid_t pid, pid_t *ppid, pid_t *pgrp, unsigned long long *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2; /* field 3: state */
    int field = 3;
    long pp = 0, pg = 0;
    unsigned long long st = 0;
    for (char *save = NULL, *t = strtok_r(p, " ", &save); t;
         t = strtok_r(NULL, " ", &save), field++) {
        if (field == 4)
            pp = strtol(t, NULL, 10);
        if (field == 5)
            pg = strtol(t, NULL, 10);
        if (field == 22) {
            st = strtoull(t, NULL, 10);
            break;
        }
    }
    *ppid = (pid_t)pp;
    if (pgrp)
        *pgrp = (pid_t)pg;
    *start = st;
    return field == 22 ? 0 : -1;
}

static int proc_stat(pid_t pid, pid_t *ppid, unsigned long long *start) {
    return proc_stat3(pid, ppid, NULL, start);
}

/* SIGKILLs (with `sig` 0: counts) every process left in process group
 * `pgid`, the runner's: its children that outlived it. Returns how many. */
static int group_members(pid_t pgid, int sig) {
    int n = 0;
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        pid_t pp, pg;
        unsigned long long st;
        if (*end || pid <= 0 || proc_stat3((pid_t)pid, &pp, &pg, &st) || pg != pgid)
            continue;
        n++;
        if (!sig)
            continue;
        char path[64], comm[64] = "?";
        snprintf(path, sizeof path, "/proc/%ld/comm", pid);
        FILE *f = fopen(path, "r");
        if (f) {
            if (fgets(comm, sizeof comm, f))
                comm[strcspn(comm, "\n")] = '\0';
            fclose(f);
        }
        fprintf(stderr, "tessera-launch: process %ld (%s) of the job outlived it: SIGKILL\n", pid,
                comm);
        kill((pid_t)pid, sig);
    }
    closedir(d);
    return n;
}

/* srun leaves a helper process that ends a moment after it: give the
 * group 3 s, then SIGKILL what is left. */
static void reap_group(pid_t pgid) {
    double until = tsr_now_s() + 3;
    while (group_members(pgid, 0) > 0 && tsr_now_s() < until) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    group_members(pgid, SIGKILL);
}

static int is_program(pid_t pid, const char *real) {
    char path[64], exe[PATH_MAX];
    snprintf(path, sizeof path, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    return !strcmp(exe, real);
}

/* Adds to `ranks` every process below `root` running the tessera program. */
static void find_ranks(pid_t root, const char *real, rank_set *ranks) {
    enum { MAXP = 32768 };
    /* (MAXP) each: every process's pid, parent and start time, then the BFS queue */
    pid_t *pids = malloc(MAXP * sizeof *pids), *ppids = malloc(MAXP * sizeof *ppids);
    pid_t *queue = malloc(MAXP * sizeof *queue);
    unsigned long long *starts = malloc(MAXP * sizeof *starts);
    int n = 0;
    DIR *d = pids && ppids && queue && starts ? opendir("/proc") : NULL;
    if (!d) {
        free(pids);
        free(ppids);
        free(queue);
        free(starts);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n < MAXP) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0)
            continue;
        if (proc_stat((pid_t)pid, &ppids[n], &starts[n]) == 0)
            pids[n++] = (pid_t)pid;
    }
    closedir(d);
    /* breadth-first over the parent links, from root */
    int qh = 0, qt = 0;
    queue[qt++] = root;
    while (qh < qt) {
        pid_t parent = queue[qh++];
        for (int i = 0; i < n; i++) {
            if (ppids[i] != parent || qt == MAXP)
                continue;
            queue[qt++] = pids[i];
            if (!is_program(pids[i], real))
                continue;
            int known = 0;
            for (int j = 0; j < ranks->n; j++)
                known |= ranks->v[j].pid == pids[i] && ranks->v[j].start == starts[i];
            if (!known && ranks->n < MAX_RANKS)
                ranks->v[ranks->n++] = (rank_proc){pids[i], starts[i], 0};
        }
    }
    free(pids);
    free(ppids);
    free(queue);
    free(starts);
}

/* The rank still runs (same pid, same start time, same program). */
static int rank_alive(const rank_proc *r, const char *real) {
    pid_t pp;
    unsigned long long st;
    return proc_stat(r->pid, &pp, &st) == 0 && st == r->start && is_program(r->pid, real);
}

static int signal_new_ranks(rank_set *ranks, const char *real, int sig) {
    int n = 0;
    for (int i = 0; i < ranks->n; i++) {
        if (ranks->v[i].signalled || !rank_alive(&ranks->v[i], real))
            continue;
        if (kill(ranks->v[i].pid, sig) == 0)
            n++;
        ranks->v[i].signalled = 1;
    }
    return n;
}

static void on_signal(int sig) { (void)sig; }

static const char *sig_name(int sig) {
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    case SIGKILL: return "SIGKILL";
    default: return "a signal";
    }
}

static void exec_child(const tsr_launch_cmd *cmd, const tsr_launch_run_opts *o, pid_t parent,
                       const sigset_t *old) {
    setpgid(0, 0);
    /* the launcher dying (SIGKILL) must not leave the job behind */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(127);
    if (!o->keep_stdin) {
        int fd = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 0);
            if (fd > 0)
                close(fd);
        }
    }
    for (size_t i = 0; i < cmd->env.n; i++) {
        char *eq = strchr(cmd->env.v[i], '=');
        *eq = '\0';
        setenv(cmd->env.v[i], eq + 1, 1);
        *eq = '=';
    }
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGCHLD, SIG_DFL);
    sigprocmask(SIG_SETMASK, old, NULL);
    execv(cmd->argv.v[0], cmd->argv.v);
    fprintf(stderr, "tessera-launch: cannot run %s: %s\n", cmd->argv.v[0], strerror(errno));
    _exit(127);
}

tsr_status tsr_launch_run(const tsr_launch_cmd *cmd, const tsr_launch_run_opts *o, int *exit_code) {
    *exit_code = 127;
    /* Handlers (not SIG_IGN, which a background shell may have set) and a
     * blocked mask: the signals are taken with sigtimedwait. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGCHLD, &sa, NULL);
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);

    const int srun = cmd->runner == TSR_LAUNCH_RUNNER_SRUN;
    rank_set *rs = calloc(1, sizeof *rs); /* the ranks seen on this host */
    if (!rs) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        return tsr_error_set(TSR_ERR_NOMEM, "out of memory");
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        free(rs);
        return tsr_error_set(TSR_ERR_IO, "fork: %s", strerror(e));
    }
    if (pid == 0)
        exec_child(cmd, o, parent, &old);
    setpgid(pid, pid); /* also in the child: whichever runs first */

    int stop_sig = 0, phase = 0, status = 0, exited = 0;
    double t_stop = 0, t_phase = 0;
    while (!exited) {
        double timeout = stop_sig ? 0.1 : 2.0;
        struct timespec ts = {(time_t)timeout, (long)((timeout - (time_t)timeout) * 1e9)};
        siginfo_t info;
        int sig = sigtimedwait(&set, &info, &ts);
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            exited = 1;
            break;
        }
        if (!srun && o->tessera_real)
            find_ranks(pid, o->tessera_real, rs); /* remember them for the final check */
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP) {
            if (!stop_sig) {
                stop_sig = sig;
                t_stop = tsr_now_s();
                phase = 1;
                if (srun) {
                    kill(pid, SIGTERM);
                    fprintf(stderr,
                            "tessera-launch: %s: SIGTERM to srun (it forwards it to every "
                            "task); escalating after %.0f s\n",
                            sig_name(sig), o->stop_timeout);
                } else {
                    int n = signal_new_ranks(rs, o->tessera_real, SIGTERM);
                    fprintf(stderr,
                            "tessera-launch: %s: SIGTERM to %d rank%s on this host; "
                            "escalating after %.0f s\n",
                            sig_name(sig), n, n == 1 ? "" : "s", o->stop_timeout);
                }
            } else if (phase < 2 && tsr_now_s() - t_stop > 2) {
                /* (a signal within 2 s of the first is the same stop: scancel
                 * signals every process of the batch step at once) */
                fprintf(stderr, "tessera-launch: %s again: stopping the job now\n", sig_name(sig));
                t_stop = tsr_now_s() - o->stop_timeout - 1; /* escalate below */
            }
        }
        if (!stop_sig)
            continue;
        double since = tsr_now_s() - t_stop;
        if (phase == 1 && !srun) {
            /* ranks that appear after the signal (still starting) get it too */
            signal_new_ranks(rs, o->tessera_real, SIGTERM);
            if (since > 3 && rs->n == 0) {
                /* no rank on this host (all remote, or none started): mpirun
                 * must do it, and will report the job as failed */
                fprintf(stderr, "tessera-launch: no rank on this host: SIGTERM to mpirun\n");
                kill(pid, SIGTERM);
                phase = 2;
                t_phase = tsr_now_s();
            }
        }
        if (phase == 1 && since > o->stop_timeout) {
            fprintf(stderr, "tessera-launch: the job did not stop in %.0f s: %s\n", o->stop_timeout,
                    srun ? "cancelling the step (SIGINT twice to srun)" : "SIGTERM to mpirun");
            if (srun) {
                kill(pid, SIGINT);
                struct timespec gap = {0, 200 * 1000 * 1000};
                nanosleep(&gap, NULL);
                kill(pid, SIGINT);
            } else {
                kill(pid, SIGTERM);
            }
            phase = 2;
            t_phase = tsr_now_s();
        } else if (phase == 2 && tsr_now_s() - t_phase > 5) {
            fprintf(stderr, "tessera-launch: SIGKILL to the job\n");
            killpg(pid, SIGKILL);
            kill(pid, SIGKILL);
            for (int i = 0; i < rs->n; i++)
                if (rank_alive(&rs->v[i], o->tessera_real))
                    kill(rs->v[i].pid, SIGKILL);
            phase = 3;
        }
    }
    /* Nothing of the job may outlive the runner. */
    int leftovers = 0;
    for (int i = 0; i < rs->n; i++) {
        if (o->tessera_real && rank_alive(&rs->v[i], o->tessera_real)) {
            kill(rs->v[i].pid, SIGKILL);
            leftovers++;
        }
    }
    if (leftovers)
        fprintf(stderr, "tessera-launch: %d rank%s outlived %s: SIGKILL\n", leftovers,
                leftovers == 1 ? "" : "s", srun ? "srun" : "mpirun");
    reap_group(pid);
    sigprocmask(SIG_SETMASK, &old, NULL);
    free(rs);

    int rc;
    if (WIFEXITED(status)) {
        rc = WEXITSTATUS(status);
        if (stop_sig && rc != 0)
            rc = phase == 3 ? 128 + SIGKILL : 128 + stop_sig;
    } else if (WIFSIGNALED(status)) {
        rc = 128 + WTERMSIG(status);
        if (stop_sig && phase < 3)
            rc = 128 + stop_sig;
    } else {
        rc = 1;
    }
    if (stop_sig)
        fprintf(stderr, "tessera-launch: job %s after %s (exit %d)\n",
                rc == 0 ? "stopped cleanly" : "ended", sig_name(stop_sig), rc);
    *exit_code = rc;
    return TSR_OK;
}
