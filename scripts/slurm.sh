#!/usr/bin/env bash
# A real one-node SLURM on this machine, for the launcher's end-to-end tests and for
# trying `--launcher slurm` without a cluster: munge, slurmctld and slurmd from Debian's
# packages (Slurm 22.05), no accounting daemon, the node named by the short hostname.
#
#   bash scripts/slurm.sh up       install what is missing (as root), configure, start, wait
#   bash scripts/slurm.sh down     stop the daemons (jobs are lost; the config stays)
#   bash scripts/slurm.sh status   the daemons and the node, as SLURM sees them
#
# The configuration is written to /etc/slurm/slurm.conf only when none exists or the one
# there was written by this script (a machine with its own SLURM is never touched: the
# tests then use that cluster as it is). State lives under $BISENET_SLURM_DIR
# (default /var/tmp/bisenet-slurm). KillWait is 5 s, so that a requeue or a cancel in the
# tests waits 5 s, not 30, for a task that ignores SIGTERM.
set -euo pipefail
STATE=${BISENET_SLURM_DIR:-/var/tmp/bisenet-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by bisenet-lab scripts/slurm.sh"
NODE=$(hostname -s)

say() { echo "slurm.sh: $*" >&2; }

install_missing() {
  local missing=()
  command -v munged >/dev/null 2>&1 || missing+=(munge)
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})"
    return 1
  fi
  say "installing ${missing[*]}"
  (apt-get update -qq || true)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

write_conf() {
  if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and is not ours: using the cluster it describes"
    return 0
  fi
  local cpus mem
  cpus=$(nproc --all)
  mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log"
  chown -R root:root "$STATE"
  cat >"$CONF" <<EOF
$MARK
ClusterName=bisenetlab
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
SchedulerParameters=sched_interval=2,bf_interval=2
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munge() {
  if pgrep -x munged >/dev/null 2>&1; then return 0; fi
  if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null 2>&1; then mungekey --create --force >/dev/null; else
      dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  fi
  local user=root
  id munge >/dev/null 2>&1 && user=munge
  chown "$user" /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown "$user" /run/munge /var/lib/munge /var/log/munge
  if [ "$user" = munge ]; then
    runuser -u munge -- munged
  else
    munged --force
  fi
}

up() {
  install_missing
  write_conf
  start_munge
  local daemon
  for daemon in slurmctld slurmd; do
    if ! pgrep -x "$daemon" >/dev/null 2>&1 && ! "$daemon"; then
      say "$daemon did not start; the end of its log ($STATE/log/$daemon.log):"
      tail -n 5 "$STATE/log/$daemon.log" >&2 || true
      return 1
    fi
  done
  local deadline=$((SECONDS + 60)) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
    case "$state" in
      idle* | mix* | alloc*) say "up: node $NODE is $state"; return 0 ;;
      down* | drain*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  say "node $NODE did not come up (state: ${state:-none}); see $STATE/log"
  return 1
}

down() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  say "stopped slurmd and slurmctld"
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  status)
    pgrep -ax 'munged|slurmctld|slurmd' || true
    sinfo -N -l 2>/dev/null || say "slurmctld does not answer"
    ;;
  *) say "usage: $0 up|down|status"; exit 2 ;;
esac
