#!/usr/bin/env bash
# slurm/local-slurm.sh - a real single-node Slurm on this machine, for tests and
# for trying the sbatch scripts: Debian's munge and slurm-wlm packages, every
# file (keys, config, state, logs, sockets, pid files) in one folder, daemons
# started directly (no systemd) as root.
#
#   slurm/local-slurm.sh start     # start (or find running) munged, slurmctld, slurmd;
#                                  # wait until the node is idle; last stdout line:
#                                  #   export SLURM_CONF=<dir>/etc/slurm.conf
#   slurm/local-slurm.sh status    # daemons and sinfo; exit 0 when usable, 3 when not
#   slurm/local-slurm.sh stop      # cancel jobs, stop the daemons, remove the folder
#   eval "$(slurm/local-slurm.sh env)"   # the SLURM_CONF line alone
#
# Environment:
#   TESSERA_SLURM_DIR   the folder (default /tmp/tessera-slurm); one cluster per folder
#   TESSERA_SLURM_PORT  first of two TCP ports, slurmctld then slurmd (default 6817)
#   TESSERA_SLURM_KEEP  stop keeps the folder (logs) when set to 1
#
# What it is not: a cluster set-up guide (docs/slurm.md has the real-cluster
# notes). No cgroups (proctrack/linuxproc, task/none), no accounting daemon:
# finished jobs are recorded by jobcomp/filetxt in <dir>/log/jobcomp.log.
# Exit codes: 0 ok; 1 a daemon failed (its log tail is printed); 2 bad usage;
# 3 (status) not running; 77 this machine cannot run Slurm (not root, packages
# missing), with the reason.
set -uo pipefail

dir=${TESSERA_SLURM_DIR:-/tmp/tessera-slurm}
port=${TESSERA_SLURM_PORT:-6817}
conf=$dir/etc/slurm.conf
sock=$dir/munge/munge.socket
log() { echo "local-slurm: $*" >&2; }

need_tools() {
  local t missing=()
  for t in munged munge unmunge slurmctld slurmd sinfo scontrol squeue scancel sbatch srun; do
    command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "missing: ${missing[*]} (scripts/setup.sh installs slurm-wlm and munge)"
    exit 77
  fi
  if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (slurmd starts jobs as their users)"
    exit 77
  fi
}

export PATH=$PATH:/usr/sbin:/sbin
export SLURM_CONF=$conf

pid_alive() { # pidfile
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# the node's state as sinfo prints it ("idle", "mixed", "down*", ...), or ""
node_state() {
  timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -1
}

usable() {
  pid_alive "$dir/run/munged.pid" && pid_alive "$dir/run/slurmctld.pid" &&
    pid_alive "$dir/run/slurmd.pid" || return 1
  case "$(node_state)" in
    idle | mixed | allocated | completing) return 0 ;;
  esac
  return 1
}

tail_logs() {
  local f
  for f in "$dir"/log/*.log; do
    [ -s "$f" ] || continue
    echo "---- $f (tail)" >&2
    tail -n 15 "$f" >&2
  done
}

# Stops the daemon whose pid file is given: SIGTERM, up to 10 s, then SIGKILL.
stop_daemon() { # name pidfile
  local pf=$2 pid
  [ -s "$pf" ] || return 0
  pid=$(cat "$pf")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$1 ($pid) did not stop in 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$pf"
}

write_conf() {
  local host cpus_line mpi
  host=$(hostname -s)
  # slurmd -C prints this machine's real layout: NodeName=... CPUs=... RealMemory=...
  cpus_line=$(slurmd -C 2>/dev/null | head -1 | sed -e 's/^NodeName=[^ ]* //')
  if [ -z "$cpus_line" ]; then
    cpus_line="CPUs=$(nproc) RealMemory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))"
  fi
  mpi=none
  local f
  for f in /usr/lib/*/slurm-wlm/mpi_pmix.so /usr/lib/slurm/mpi_pmix.so; do
    [ -e "$f" ] && mpi=pmix
  done
  cat >"$conf" <<EOF
# Written by slurm/local-slurm.sh for $(hostname) on $(date -u +%FT%TZ). One node.
ClusterName=tessera-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state/ctld
SlurmdSpoolDir=$dir/state/d
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers: track processes by parent pid, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=$mpi
ReturnToService=2
# scancel: SIGTERM, then SIGKILL after KillWait s; longer than tessera serve's
# default --grace (30 s) so a drain can finish
KillWait=45
UnkillableStepTimeout=120
InactiveLimit=0
MinJobAge=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
PlugStackConfig=$dir/etc/plugstack.conf
NodeName=$host NodeHostname=$host NodeAddr=127.0.0.1 $cpus_line State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  : >"$dir/etc/plugstack.conf"
}

start() {
  need_tools
  if usable; then
    log "already running ($dir): $(node_state)"
    echo "export SLURM_CONF=$conf"
    return 0
  fi
  # Something half-started (or a crashed run): clean slate.
  stop_all quiet
  mkdir -p "$dir"/{etc,munge,run,log,state/ctld,state/d}
  chmod 0755 "$dir" "$dir/munge" "$dir/run"
  chmod 0755 "$dir/etc"

  # munge: a fresh key and a daemon on a private socket
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile="$dir/etc/munge.key" --force >/dev/null 2>&1 ||
      dd if=/dev/urandom of="$dir/etc/munge.key" bs=1024 count=1 status=none
  else
    dd if=/dev/urandom of="$dir/etc/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0600 "$dir/etc/munge.key"
  if ! munged --socket="$sock" --key-file="$dir/etc/munge.key" --pid-file="$dir/run/munged.pid" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/run/munged.seed" --force 2>>"$dir/log/munged.log"; then
    log "munged failed to start"
    tail_logs
    return 1
  fi
  for _ in $(seq 50); do
    [ -S "$sock" ] && break
    sleep 0.1
  done
  if ! munge -n --socket="$sock" 2>/dev/null | unmunge --socket="$sock" >/dev/null 2>&1; then
    log "munge does not answer on $sock"
    tail_logs
    return 1
  fi

  write_conf
  if ! slurmctld -f "$conf" -i 2>>"$dir/log/slurmctld.log"; then
    log "slurmctld failed to start"
    tail_logs
    return 1
  fi
  if ! slurmd -f "$conf" 2>>"$dir/log/slurmd.log"; then
    log "slurmd failed to start"
    tail_logs
    return 1
  fi
  local st="" t0=$SECONDS
  while [ $((SECONDS - t0)) -lt 60 ]; do
    st=$(node_state)
    case "$st" in
      idle | mixed | allocated) break ;;
      down* | drain* | fail*)
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 ;;
    esac
    if ! pid_alive "$dir/run/slurmctld.pid" || ! pid_alive "$dir/run/slurmd.pid"; then
      sleep 1 # pid files appear a moment after the fork
      if ! pid_alive "$dir/run/slurmctld.pid" || ! pid_alive "$dir/run/slurmd.pid"; then
        log "a Slurm daemon exited"
        tail_logs
        return 1
      fi
    fi
    sleep 0.5
  done
  if [ "$st" != idle ] && [ "$st" != mixed ] && [ "$st" != allocated ]; then
    log "the node did not become idle in 60 s (state '${st:-none}')"
    tail_logs
    return 1
  fi
  log "running in $dir: node $(hostname -s) $st; MpiDefault=$(awk -F= '/^MpiDefault/ {print $2}' "$conf")"
  echo "export SLURM_CONF=$conf"
}

stop_all() { # [quiet]
  if [ -f "$conf" ] && pid_alive "$dir/run/slurmctld.pid"; then
    timeout 10 scancel --full --quiet --user=root 2>/dev/null
    timeout 10 scancel --quiet --user=root 2>/dev/null
    for _ in $(seq 30); do
      [ -z "$(timeout 5 squeue -h -o %i 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
  stop_daemon slurmd "$dir/run/slurmd.pid"
  stop_daemon slurmctld "$dir/run/slurmctld.pid"
  stop_daemon munged "$dir/run/munged.pid"
  if [ "${1:-}" != quiet ]; then
    if [ "${TESSERA_SLURM_KEEP:-0}" = 1 ]; then
      log "stopped; logs kept in $dir/log"
    else
      rm -rf "$dir"
      log "stopped"
    fi
  else
    rm -rf "$dir"
  fi
}

status() {
  local d
  for d in munged slurmctld slurmd; do
    if pid_alive "$dir/run/$d.pid"; then
      echo "$d: running (pid $(cat "$dir/run/$d.pid"))"
    else
      echo "$d: stopped"
    fi
  done
  if usable; then
    echo "SLURM_CONF=$conf"
    timeout 10 sinfo
    return 0
  fi
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop_all ;;
  status) status ;;
  env) echo "export SLURM_CONF=$conf" ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
