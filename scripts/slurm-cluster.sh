#!/usr/bin/env bash
# Throw-away SLURM cluster on localhost (one node, or two), for trying and testing the
# hydra-submitit SLURM launcher.  Needs root (it runs munged, slurmctld and slurmd
# as root and installs the Debian packages when they are missing).
#
#   scripts/slurm-cluster.sh start    # install if needed, start, smoke-test
#   scripts/slurm-cluster.sh status   # exit 0 when the cluster answers sinfo
#   scripts/slurm-cluster.sh stop     # cancel jobs, stop daemons, remove state
#
# All state lives in ${SLURM_CLUSTER_DIR:-/tmp/hydra-example-slurm}.  The node
# advertises 48 CPUs and 2 fake GPUs (/dev/null) in partition "kyiv".  Without
# accounting storage the real sacct fails, so a small sacct stand-in that answers
# from `scontrol show job` is written to $SLURM_CLUSTER_DIR/bin (put it first on
# PATH; submitit needs it to notice jobs that die).
#
# SLURM_CLUSTER_NODES=2 makes it two such nodes, each a slurmd of its own on this
# machine, for jobs of several nodes.  The second is named "localhost": jobs find
# a node by its name (PyTorch's processes find rank 0's node so), and that name
# resolves here as another machine's would.
set -euo pipefail

DIR="${SLURM_CLUSTER_DIR:-/tmp/hydra-example-slurm}"
CTLD_PORT="${SLURM_CLUSTER_CTLD_PORT:-6817}"
SLURMD_PORT="${SLURM_CLUSTER_SLURMD_PORT:-6818}" # the first node's; the second's is the next port
NUM_NODES="${SLURM_CLUSTER_NODES:-1}"
CONF="$DIR/etc/slurm.conf"
SOCKET="$DIR/munge/run/munge.socket.2"
ETC_CONF=/etc/slurm/slurm.conf
READY_TIMEOUT=60

die() {
  echo "slurm-cluster: error: $*" >&2
  exit 1
}
log() { echo "slurm-cluster: $*"; }

# The nodes' names: this machine's, then "localhost" (see SLURM_CLUSTER_NODES).
nodes() {
  hostname -s
  ((NUM_NODES < 2)) || echo localhost
}

# Our daemons, in stop order: the slurmd of every node (named slurmd@NODE), slurmctld, munged.
daemons() {
  local pidfile
  for pidfile in "$DIR"/run/slurmd@*.pid; do
    [[ -e $pidfile ]] && basename "$pidfile" .pid
  done
  echo slurmctld
  echo munged
}

# PID recorded for a daemon, printed only while that process is still alive and
# still the daemon we started (guards against PID reuse).
live_pid() {
  local pidfile="$DIR/run/$1.pid" pid argv0=""
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  { IFS= read -r -d '' argv0 <"/proc/$pid/cmdline"; } 2>/dev/null || true
  [[ ${argv0##*/} == "${1%@*}" ]] || return 1 # slurmd@NODE runs slurmd
  echo "$pid"
}

# Whether the cluster answers sinfo (checks the slurmctld PID first: sinfo
# takes ~10 s to give up on a dead controller).
answers() {
  [[ -f $CONF ]] && live_pid slurmctld >/dev/null &&
    SLURM_CONF="$CONF" timeout 10 sinfo -h >/dev/null 2>&1
}

ensure_installed() {
  local missing=0 bin
  for bin in munged mungekey slurmctld slurmd sbatch squeue scontrol scancel sinfo srun; do
    command -v "$bin" >/dev/null 2>&1 || missing=1
  done
  ((missing)) || return 0
  [[ $(id -u) == 0 ]] || die "slurm/munge binaries missing and not root: cannot apt-get install"
  log "installing munge and slurm from Debian packages"
  local pkgs=(munge slurmctld slurmd slurm-client)
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"
  fi
}

# Run "$@" detached in its own session, in $DIR, logging to log/NAME.out, and
# record its PID.  The PID is the daemon's: the subshell execs env, setsid (which
# does not fork: a background job of a non-interactive shell never leads a
# process group), nohup and the daemon.  The environment marker is inherited by
# the slurmstepd processes that slurmd starts, so kill_daemons can find them too.
spawn() {
  local name=$1
  shift
  (cd "$DIR" && exec env SLURM_CLUSTER_DAEMON="$DIR" setsid nohup "$@") \
    >>"$DIR/log/$name.out" 2>&1 </dev/null &
  local pid=$! i
  echo "$pid" >"$DIR/run/$name.pid"
  STARTED+=("$name")
  for ((i = 0; i < 50; i++)); do # until the exec chain has reached the daemon
    live_pid "$name" >/dev/null && break
    sleep 0.1
  done
}

# PIDs of processes carrying spawn()'s marker: our daemons and slurmstepds.
marked_pids() {
  local p
  for p in /proc/[0-9]*; do
    if grep -qzxF "SLURM_CLUSTER_DAEMON=$DIR" "$p/environ" 2>/dev/null; then
      echo "${p#/proc/}"
    fi
  done
}

# Whether PID exists and is not a zombie (PID 1 here may reap them late).
running() {
  local stat
  stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

session_of() {
  local stat
  stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
  stat=${stat##*) } # after "(comm) ": state ppid pgrp session ...
  read -r _ _ _ sid _ <<<"$stat"
  echo "$sid"
}

# Stop our daemons (recorded PIDs, gently, in order), then kill what is left of
# them: marked processes (e.g. slurmstepd after a crash) and everything in their
# sessions (job processes).  Waits until all of them are gone.
kill_daemons() {
  local name pid p sid deadline pids=() sids=() all=()
  for name in $(daemons); do
    pid=$(live_pid "$name") || continue
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 15))
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  done
  mapfile -t pids < <(marked_pids)
  local own_sid
  own_sid=$(session_of $$)
  for pid in "${pids[@]}"; do
    sid=$(session_of "$pid") || continue
    if ((sid > 1)) && [[ $sid != "$own_sid" ]]; then sids+=("$sid"); fi
  done
  all=("${pids[@]}")
  if ((${#sids[@]})); then
    for p in /proc/[0-9]*; do
      p=${p#/proc/}
      sid=$(session_of "$p") || continue
      for pid in "${sids[@]}"; do
        if [[ $sid == "$pid" ]]; then all+=("$p"); fi
      done
    done
  fi
  ((${#all[@]})) || return 0
  kill -KILL "${all[@]}" 2>/dev/null || true
  deadline=$((SECONDS + 10))
  for pid in "${all[@]}"; do
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  done
}

remove_etc_link() {
  if [[ -L $ETC_CONF && $(readlink "$ETC_CONF") == "$CONF" ]]; then
    rm -f "$ETC_CONF"
  fi
}

write_config() {
  local host node mem_mb index=0 node_lines="" gres_lines="" names=()
  host=$(hostname)
  # Half of the machine's memory, at least 1 GiB (config_overrides means slurmd
  # never checks it; it only bounds --mem requests).
  mem_mb=$(awk '/^MemTotal:/ {m = int($2 / 2048); print (m < 1024 ? 1024 : m)}' /proc/meminfo)

  # Each node's slurmd listens on a port of its own; NodeHostname: the machine they all run on.
  for node in $(nodes); do
    ln -s /dev/null "$DIR/dev/gpu$((2 * index))"
    ln -s /dev/null "$DIR/dev/gpu$((2 * index + 1))"
    node_lines+="NodeName=$node NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 Port=$((SLURMD_PORT + index)) CPUs=48 Boards=1 SocketsPerBoard=1 CoresPerSocket=48 ThreadsPerCore=1 RealMemory=$mem_mb Gres=gpu:2 State=UNKNOWN"$'\n'
    gres_lines+="NodeName=$node Name=gpu File=$DIR/dev/gpu[$((2 * index))-$((2 * index + 1))]"$'\n'
    names+=("$node")
    index=$((index + 1))
  done

  cat >"$CONF" <<EOF
# Generated by scripts/slurm-cluster.sh: throw-away test cluster on one machine.
ClusterName=hydra-example
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job waits before it may start again (120 s by default, since
# its old credential must expire first); short, so that requeued test jobs start again soon.
AuthInfo=socket=$SOCKET,cred_expire=10
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.daemon.pid
SlurmdPidFile=$DIR/run/slurmd-%n.daemon.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
MinJobAge=3600
KillWait=5
InactiveLimit=0
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
${node_lines}PartitionName=kyiv Nodes=$(IFS=,; echo "${names[*]}") Default=YES MaxTime=INFINITE State=UP
EOF
  {
    echo "# Two fake GPUs per node: Slurm only needs character devices, /dev/null will do."
    echo "AutoDetect=off"
    printf %s "$gres_lines"
  } >"$DIR/etc/gres.conf"
  cat >"$DIR/env" <<EOF
export SLURM_CONF=$CONF
export PATH=$DIR/bin:\$PATH
EOF
}

write_sacct_shim() {
  cat >"$DIR/bin/sacct" <<'SHIM'
#!/usr/bin/env bash
# sacct stand-in for the throw-away test cluster (it has no accounting storage,
# so the real sacct exits 1).  Answers from `scontrol show job -o`, as long as
# slurmctld remembers the job (MinJobAge).  Understands -o/--format, -j/--jobs,
# -P/--parsable2, -p/--parsable, --delimiter, -n/--noheader; ignores the rest.
set -euo pipefail
fmt="JobID,JobName,Partition,AllocCPUS,State,ExitCode"
ids=()
sep="" trail=0 header=1 delim="|"
add_ids() {
  local part
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do [[ -n $part ]] && ids+=("${part%%.*}"); done
  return 0
}
while (($#)); do
  case $1 in
  -o | --format) fmt=$2; shift 2 ;;
  --format=*) fmt=${1#*=}; shift ;;
  -o*) fmt=${1#-o}; shift ;;
  -j | --jobs) add_ids "$2"; shift 2 ;;
  --jobs=*) add_ids "${1#*=}"; shift ;;
  -j*) add_ids "${1#-j}"; shift ;;
  -P | --parsable2) sep=1 trail=0; shift ;;
  -p | --parsable) sep=1 trail=1; shift ;;
  --delimiter=*) delim=${1#*=}; shift ;;
  -n | --noheader) header=0; shift ;;
  -A | -E | -S | -s | -u | -M | -r | -N | -i | -k | -K | -q | -W | -g | -x | -C | -F | -f | \
    --accounts | --endtime | --starttime | --state | --user | --clusters | --partition | \
    --nodelist | --nnodes | --timelimit-min | --timelimit-max | --qos | --wckeys | --gid | \
    --group | --constraints | --flags | --file | --name | --reason)
    shift 2 ;;
  *) shift ;;
  esac
done
[[ -n $sep ]] && sep=$delim
{
  if ((${#ids[@]})); then
    for id in "${ids[@]}"; do scontrol show job -o "$id" 2>/dev/null || true; done
  else
    scontrol show job -o 2>/dev/null || true
  fi
} | awk -v fmt="$fmt" -v sep="$sep" -v trail="$trail" -v header="$header" '
BEGIN {
  split("JobID JobIDRaw JobName Partition AllocCPUS ReqCPUS State ExitCode NodeList " \
        "User Group Elapsed Start End Submit Timelimit NNodes WorkDir Reason " \
        "AllocTRES ReqTRES Account QOS Comment Priority", names, " ")
  for (i in names) canon[tolower(names[i])] = names[i]
  src["jobidraw"] = "JobId"; src["jobname"] = "JobName"; src["partition"] = "Partition"
  src["alloccpus"] = "NumCPUs"; src["reqcpus"] = "NumCPUs"; src["state"] = "JobState"
  src["exitcode"] = "ExitCode"; src["nodelist"] = "NodeList"; src["user"] = "UserId"
  src["group"] = "GroupId"; src["elapsed"] = "RunTime"; src["start"] = "StartTime"
  src["end"] = "EndTime"; src["submit"] = "SubmitTime"; src["timelimit"] = "TimeLimit"
  src["nnodes"] = "NumNodes"; src["workdir"] = "WorkDir"; src["reason"] = "Reason"
  src["alloctres"] = "TRES"; src["reqtres"] = "ReqTRES"; src["account"] = "Account"
  src["qos"] = "QOS"; src["comment"] = "Comment"; src["priority"] = "Priority"
  n = split(fmt, f, ",")
  for (i = 1; i <= n; i++) {
    w[i] = 20
    if (match(f[i], /%[0-9]+$/)) { w[i] = substr(f[i], RSTART + 1) + 0; f[i] = substr(f[i], 1, RSTART - 1) }
    key[i] = tolower(f[i])
    title[i] = (key[i] in canon) ? canon[key[i]] : f[i]
  }
  if (header) {
    emit(title)
    if (sep == "") { for (i = 1; i <= n; i++) dash[i] = dashes(w[i]); emit(dash) }
  }
}
function dashes(k,   s) { s = ""; while (k-- > 0) s = s "-"; return s }
function emit(vals,   i, line) {
  line = ""
  for (i = 1; i <= n; i++) {
    if (sep != "") line = line (i > 1 ? sep : "") vals[i]
    else line = line sprintf("%" w[i] "." w[i] "s ", vals[i])
  }
  if (sep != "" && trail) line = line sep
  print line
}
/^JobId=/ {
  split("", v); last = ""
  for (i = 1; i <= NF; i++) {
    if (match($i, /^[A-Za-z][A-Za-z0-9_:\/]*=/)) { last = substr($i, 1, RLENGTH - 1); v[last] = substr($i, RLENGTH + 1) }
    else if (last != "") v[last] = v[last] " " $i
  }
  if ("ArrayJobId" in v && v["ArrayTaskId"] != "") {
    t = v["ArrayTaskId"]
    jobid = v["ArrayJobId"] "_" (t ~ /^[0-9]+$/ ? t : "[" t "]")
  } else jobid = v["JobId"]
  for (i = 1; i <= n; i++) {
    k = key[i]
    if (k == "jobid") out[i] = jobid
    else if (k in src) out[i] = v[src[k]]
    else out[i] = ""
    if (k == "user" || k == "group") sub(/\(.*/, "", out[i])
    if (k == "nodelist" && out[i] == "(null)") out[i] = "None assigned"
  }
  emit(out)
}'
SHIM
  chmod 0755 "$DIR/bin/sacct"
}

# wait_until DESCRIPTION COMMAND...: poll COMMAND until it exits 0; exit status 1
# means "not yet", anything else is fatal.
wait_until() {
  local what=$1 rc
  shift
  while :; do
    rc=0
    "$@" >/dev/null 2>&1 || rc=$?
    ((rc == 0)) && return 0
    ((rc == 1)) || fail_start "$what: $FAILURE"
    check_alive
    ((SECONDS < deadline)) || fail_start "timed out after ${READY_TIMEOUT}s waiting for $what"
    sleep 0.2
  done
}
FAILURE="failed"
STARTED=()

check_alive() { # fail if a daemon we started has exited, quoting its last log line
  local name
  for name in "${STARTED[@]}"; do
    live_pid "$name" >/dev/null ||
      fail_start "$name exited: $(tail -n 1 "$DIR/log/$name.out" 2>/dev/null)"
  done
}

fail_start() {
  kill_daemons
  remove_etc_link
  die "$* (logs: $DIR/log/)"
}

nodes_idle() {
  [[ $(SLURM_CONF="$CONF" sinfo -h -N -o %t 2>/dev/null | sort -u) == idle ]]
}

job_done() {
  local state
  state=$(SLURM_CONF="$CONF" scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*') || true
  case $state in
  JobState=COMPLETED) return 0 ;;
  "" | JobState=PENDING | JobState=RUNNING | JobState=CONFIGURING | JobState=COMPLETING) return 1 ;;
  *)
    FAILURE="ended as ${state#JobState=}"
    return 2
    ;;
  esac
}

cmd_start() {
  [[ $(id -u) == 0 ]] || die "must run as root (it runs munged, slurmctld and slurmd as root)"
  [[ $NUM_NODES == [12] ]] || die "SLURM_CLUSTER_NODES=$NUM_NODES: use 1 or 2"
  ensure_installed
  if live_pid "slurmd@$(hostname -s)" >/dev/null && answers; then
    log "already running in $DIR"
    print_usage
    return 0
  fi
  if [[ -e $DIR ]]; then
    log "cleaning stale state in $DIR"
    kill_daemons
    remove_etc_link
    rm -rf "$DIR"
  fi
  local t0=$EPOCHREALTIME
  deadline=$((SECONDS + READY_TIMEOUT))
  mkdir -p "$DIR"
  chmod 0755 "$DIR"
  mkdir -p "$DIR"/{etc,bin,dev,run,log,state,spool,tmp,munge/run}
  chmod 0755 "$DIR/munge" "$DIR/munge/run"
  write_config
  write_sacct_shim

  mungekey --create --keyfile="$DIR/munge/munge.key" 2>/dev/null ||
    { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none && chmod 0400 "$DIR/munge/munge.key"; }
  spawn munged munged --foreground --force --key-file="$DIR/munge/munge.key" \
    --socket="$SOCKET" --pid-file="$DIR/run/munged.daemon.pid" \
    --seed-file="$DIR/munge/munged.seed"
  wait_until "munged" test -S "$SOCKET"
  munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null || fail_start "munge self-test failed"

  export SLURM_CONF="$CONF"
  spawn slurmctld slurmctld -D
  wait_until "slurmctld" scontrol ping
  local node
  for node in $(nodes); do
    spawn "slurmd@$node" slurmd -D -N "$node"
  done
  wait_until "nodes $(nodes | paste -sd ' ') to become idle" nodes_idle

  local jobid
  jobid=$(sbatch --parsable --job-name=smoke-test --chdir="$DIR/tmp" --output=/dev/null --wrap true 2>&1) ||
    fail_start "smoke-test sbatch failed: $jobid"
  wait_until "smoke-test job $jobid" job_done "$jobid"

  # Let plain `sbatch` & co. find the cluster without SLURM_CONF, but never
  # overwrite a slurm.conf that is not ours.
  if [[ ! -e $ETC_CONF && ! -L $ETC_CONF ]]; then
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$CONF" "$ETC_CONF"
  elif [[ ! -L $ETC_CONF || $(readlink "$ETC_CONF") != "$CONF" ]]; then
    log "note: $ETC_CONF exists and is not ours; set SLURM_CONF to use this cluster"
  fi
  local where="node $(hostname -s), 48 CPUs, 2 GPUs"
  ((NUM_NODES < 2)) || where="nodes $(nodes | paste -sd ' '), 48 CPUs and 2 GPUs each"
  log "started in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')s: $where, partition kyiv, state in $DIR"
  print_usage
}

print_usage() {
  echo "export SLURM_CONF=$CONF PATH=$DIR/bin:\$PATH   # or: source $DIR/env"
}

cmd_stop() {
  if answers; then
    local ids
    ids=$(SLURM_CONF="$CONF" squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [[ -n ${ids// /} ]]; then
      # shellcheck disable=SC2086
      SLURM_CONF="$CONF" scancel $ids 2>/dev/null || true
      local deadline=$((SECONDS + 15))
      while [[ -n $(SLURM_CONF="$CONF" squeue -h -t R,CG -o %A 2>/dev/null) ]] && ((SECONDS < deadline)); do
        sleep 0.5
      done
    fi
  fi
  kill_daemons
  remove_etc_link
  rm -rf "$DIR"
  log "stopped"
}

cmd_status() {
  if answers; then
    SLURM_CONF="$CONF" sinfo
    return 0
  fi
  echo "slurm-cluster: not running ($DIR)" >&2
  return 1
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
  echo "usage: $0 start|stop|status" >&2
  exit 2
  ;;
esac
