#!/usr/bin/env bash
# A real SLURM cluster on this machine, for tests: munged + slurmctld + N slurmd "virtual nodes".
#
#   tests/slurm/local_cluster.sh start DIR    # prints: export SLURM_CONF=DIR/etc/slurm.conf
#   tests/slurm/local_cluster.sh stop DIR     # scancel, then stop only the pids this script started
#   tests/slurm/local_cluster.sh status DIR   # exit 0 if the daemons started in DIR are alive
#
# Everything (keys, config, state, spool, logs, pid files) lives under DIR. Needs root (the daemons run as
# root, and node names are added to /etc/hosts). The Debian packages slurmctld, slurmd, slurm-client and
# munge are installed with apt-get when missing; exit code 3 means they could not be installed.
#
# Settings (environment):
#   SLURM_LOCAL_NODES=2        virtual nodes node1..nodeN, all on 127.0.0.1 (Debian's slurmd supports several)
#   SLURM_LOCAL_CPUS=$(nproc)  CPUs each node advertises (every node claims every core of the host)
#   SLURM_LOCAL_GPUS=0         fake GPUs per node (character devices under DIR/fakegpu, for --gpus-per-node)
#   SLURM_LOCAL_CTLD_PORT=6817 slurmctld port; SLURM_LOCAL_SLURMD_PORT=17001 first slurmd port (one per node)
#   SLURM_LOCAL_LINK_ETC=0     1: also symlink /etc/slurm/slurm.conf (for clients that drop SLURM_CONF)
#   SLURM_LOCAL_TIMEOUT=30     seconds to wait for the nodes to become idle
# Every node has the feature "local" (so that tests can pass --constraint=local).
#
# Facts behind the settings: ../shared/notes/slurm-local.md (cred_expire=10 makes a requeued job
# eligible again after ~10 s instead of ~150 s; EnforcePartLimits=ALL makes impossible requests fail at
# submission instead of pending forever; linuxproc/none work without cgroups).
set -Eeuo pipefail

ME="local_cluster.sh"
die() { echo "$ME: $*" >&2; exit 1; }
log() { echo "$ME: $*" >&2; }

[[ $# -eq 2 ]] || die "usage: $ME start|stop|status DIR"
ACTION=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)
CONF=$DIR/etc/slurm.conf
HOSTS_TAG="# $ME $DIR"
PIDS=$DIR/run/started.pids   # lines "PID COMM", in start order

NODES=${SLURM_LOCAL_NODES:-2}
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
GPUS=${SLURM_LOCAL_GPUS:-0}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-17001}
LINK_ETC=${SLURM_LOCAL_LINK_ETC:-0}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-30}

# ---------------------------------------------------------------------------------------------- helpers
is_running() {  # PID COMM: alive, not a zombie, and still the program we started
    local pid=$1 comm=$2 state
    [[ -r /proc/$pid/stat ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ $state != Z && $state != X ]]
}

mentions_dir() {  # PID: its command line or environment names DIR (checked before any signal)
    local pid=$1
    tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$DIR" && return 0
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qF "$DIR" && return 0
    return 1
}

stop_pid() {  # PID COMM: SIGTERM, wait up to 5 s, then SIGKILL
    local pid=$1 comm=$2 i
    is_running "$pid" "$comm" || return 0
    mentions_dir "$pid" || { log "pid $pid ($comm) does not belong to $DIR; left alone"; return 0; }
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do is_running "$pid" "$comm" || return 0; sleep 0.1; done
    log "pid $pid ($comm) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

port_in_use() {  # PORT: something listens on it (TCP, IPv4 or IPv6)
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p {found=1} END {exit !found}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

node_names() { local i; for ((i = 1; i <= NODES; i++)); do printf 'node%d ' "$i"; done; }

rewrite_hosts() {  # write /etc/hosts in place (it is often a bind mount, so no rename)
    local tmp
    tmp=$(mktemp)
    grep -vF "$HOSTS_TAG" /etc/hosts >"$tmp" || true
    if [[ ${1:-} == add ]]; then echo "127.0.0.1 $(node_names)$HOSTS_TAG" >>"$tmp"; fi
    cat "$tmp" >/etc/hosts
    rm -f "$tmp"
}

install_packages() {
    local need=()
    command -v munged >/dev/null || need+=(munge)
    command -v slurmctld >/dev/null || need+=(slurmctld)
    command -v slurmd >/dev/null || need+=(slurmd)
    command -v sbatch >/dev/null || need+=(slurm-client)
    [[ ${#need[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || { log "missing ${need[*]} and no apt-get"; exit 3; }
    [[ $(id -u) -eq 0 ]] || { log "missing ${need[*]}; installing needs root"; exit 3; }
    log "installing ${need[*]}"
    # Debian's postinst would start the services with /etc configs; a policy-rc.d of 101 prevents it.
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local ok=0
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -q --no-install-recommends "${need[@]}" >"$DIR/log/apt.log" 2>&1; then
        ok=1
    elif apt-get update -q >>"$DIR/log/apt.log" 2>&1 &&
        apt-get install -y -q --no-install-recommends "${need[@]}" >>"$DIR/log/apt.log" 2>&1; then
        ok=1
    fi
    [[ $added_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d
    if [[ $ok -ne 1 ]]; then
        log "apt-get could not install ${need[*]}; see $DIR/log/apt.log"
        exit 3
    fi
}

write_config() {
    local mem last_port node_line
    mem=$(awk '/^MemTotal:/ {m = int($2 / 1024) - 512; print (m > 256 ? m : 256)}' /proc/meminfo)
    last_port=$((SLURMD_PORT + NODES - 1))
    if [[ $NODES -eq 1 ]]; then
        node_line="NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$SLURMD_PORT"
    else
        node_line="NodeName=node[1-$NODES] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[$SLURMD_PORT-$last_port]"
    fi
    node_line+=" CPUs=$CPUS RealMemory=$mem Feature=local State=UNKNOWN"  # Feature: for --constraint=local
    local gres_types=""
    if [[ $GPUS -gt 0 ]]; then
        gres_types="GresTypes=gpu"
        node_line+=" Gres=gpu:$GPUS"
        mkdir -p "$DIR/fakegpu"
        local g
        for ((g = 0; g < GPUS; g++)); do
            [[ -e $DIR/fakegpu/nvidia$g ]] || mknod "$DIR/fakegpu/nvidia$g" c 1 3
        done
        echo "Name=gpu File=$DIR/fakegpu/nvidia[0-$((GPUS - 1))]" >"$DIR/etc/gres.conf"
    fi
    cat >"$CONF" <<EOF
# Written by $ME for a test cluster under $DIR.
ClusterName=local
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
MailProg=/bin/true
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
EnforcePartLimits=ALL
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
$gres_types
$node_line
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

wait_idle() {
    local deadline=$((SECONDS + TIMEOUT)) states
    while ((SECONDS < deadline)); do
        states=$(SLURM_CONF=$CONF sinfo -h -N -o '%T' 2>/dev/null | sort -u | tr '\n' ' ') || true
        [[ $states == "idle " ]] && return 0
        sleep 0.1
    done
    log "nodes not idle after ${TIMEOUT}s (states: ${states:-none}); logs in $DIR/log"
    return 1
}

record() {  # PIDFILE COMM: wait for a daemon's pid file, then remember the pid
    local file=$1 comm=$2 i pid=""
    for i in $(seq 100); do
        [[ -s $file ]] && pid=$(tr -dc '0-9' <"$file") && [[ -n $pid ]] && break
        sleep 0.05
    done
    [[ -n $pid ]] || { log "$comm wrote no pid file $file; see $DIR/log"; return 1; }
    echo "$pid $comm" >>"$PIDS"
}

# ---------------------------------------------------------------------------------------------- actions
do_status() {
    [[ -s $PIDS ]] || return 1
    local pid comm
    while read -r pid comm; do is_running "$pid" "$comm" || return 1; done <"$PIDS"
}

do_stop() {
    if [[ -s $CONF ]] && command -v squeue >/dev/null; then
        local jobs
        jobs=$(SLURM_CONF=$CONF timeout 5 squeue -h -o '%A' 2>/dev/null | tr '\n' ' ') || true
        if [[ -n ${jobs// /} ]]; then
            # shellcheck disable=SC2086  # job ids are digits from squeue
            SLURM_CONF=$CONF timeout 5 scancel $jobs 2>/dev/null || true
            local i
            for i in $(seq 100); do
                [[ -z $(SLURM_CONF=$CONF timeout 5 squeue -h -o '%A' 2>/dev/null) ]] && break
                sleep 0.1
            done
        fi
    fi
    # slurmstepd is reparented away from slurmd; ours hold unix sockets under DIR/spool.
    local inodes pid fd
    inodes=$(awk -v d="$DIR/spool/" 'index($8, d) == 1 {print $7}' /proc/net/unix 2>/dev/null | sort -u)
    if [[ -n $inodes ]]; then
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == slurmstepd ]] || continue
            for fd in /proc/$pid/fd/*; do
                local target
                target=$(readlink "$fd" 2>/dev/null) || continue
                if [[ $target =~ ^socket:\[([0-9]+)\]$ ]] && grep -qx "${BASH_REMATCH[1]}" <<<"$inodes"; then
                    stop_pid "$pid" slurmstepd
                    break
                fi
            done
        done
    fi
    # The daemons, newest first (slurmd, slurmctld, then munged which the others need to shut down).
    if [[ -s $PIDS ]]; then
        local comm
        tac "$PIDS" | while read -r pid comm; do stop_pid "$pid" "$comm"; done
        rm -f "$PIDS"
    fi
    rewrite_hosts remove
    if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$CONF" ]]; then
        rm -f /etc/slurm/slurm.conf
    fi
}

do_start() {
    [[ $(id -u) -eq 0 ]] || { log "must run as root (daemons as root, /etc/hosts)"; exit 3; }
    if do_status; then log "already running in $DIR"; echo "export SLURM_CONF=$CONF"; return 0; fi
    mkdir -p "$DIR"/{etc,munge,state,spool,run,log}
    rm -f "$PIDS" "$DIR"/run/*.pid "$DIR"/munge/munged.pid
    install_packages
    local p
    for p in "$CTLD_PORT" $(seq "$SLURMD_PORT" $((SLURMD_PORT + NODES - 1))); do
        port_in_use "$p" && die "port $p is in use (another cluster?); set SLURM_LOCAL_CTLD_PORT/SLURM_LOCAL_SLURMD_PORT"
    done
    trap 'log "start failed; stopping what was started"; do_stop' ERR

    chmod 755 "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
        chmod 400 "$DIR/munge/munge.key"
    fi
    munged --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed" --force
    record "$DIR/munge/munged.pid" munged

    write_config
    rewrite_hosts add
    if [[ $LINK_ETC == 1 ]]; then
        mkdir -p /etc/slurm
        [[ -e /etc/slurm/slurm.conf ]] || ln -s "$CONF" /etc/slurm/slurm.conf
    fi

    slurmctld -f "$CONF" -c -i
    record "$DIR/run/slurmctld.pid" slurmctld
    local i
    for ((i = 1; i <= NODES; i++)); do
        mkdir -p "$DIR/spool/node$i"
        slurmd -f "$CONF" -N "node$i"
        record "$DIR/run/slurmd-node$i.pid" slurmd
    done
    wait_idle
    trap - ERR
    log "$NODES node(s) idle in ${SECONDS}s"
    echo "export SLURM_CONF=$CONF"
}

case $ACTION in
start) do_start ;;
stop) do_stop ;;
status) do_status ;;
*) die "unknown action '$ACTION' (start|stop|status)" ;;
esac
