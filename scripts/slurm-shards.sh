#!/usr/bin/env bash
# Shard workers under a real scheduler, end to end on this machine: starts a local Slurm
# controller and compute node (Debian's slurm-wlm, munge authentication), writes a
# synthetic EM volume as OME-Zarr, segments it once in a single process and once as a
# Slurm job array of N `segment-run predict --shard I/N` workers, and checks that the
# two outputs are bit-identical (every chunk file). Then stops the daemons.
#
#   bash scripts/slurm-shards.sh [--workers N] [--depth D] [--size S] [--chunk C]
#
# Needs root or sudo for apt-get and the daemons. docs/SCALING.md has the recipe for a
# real cluster.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
workers=4 depth=8 size=1024 chunk=512
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers=$2; shift 2 ;;
    --depth) depth=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --chunk) chunk=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "== installing Debian packages slurm-wlm and munge"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurm-wlm munge >/dev/null
fi

echo "== building segment-run and the volume generator (release)"
(cd "$root" && cargo build --release -q -p skipseg-runtime --bin segment-run --example synthetic_volume)
bin="$root/target/release/segment-run"

work="$root/target/slurm-demo"
$sudo rm -rf "$work"
mkdir -p "$work"/{state,spool,log}
chmod 777 "$work" "$work"/log
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
conf="$work/slurm.conf"
cat > "$conf" <<CONF
ClusterName=skipseg-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$conf"

stop() {
  echo "== stopping the local Slurm daemons"
  scontrol shutdown >/dev/null 2>&1 || true
  sleep 1
  for p in slurmd slurmctld; do
    [ -f "$work/$p.pid" ] && $sudo kill "$(cat "$work/$p.pid")" 2>/dev/null || true
  done
  [ -n "${munge_started:-}" ] && $sudo pkill -x munged 2>/dev/null || true
}
trap stop EXIT

echo "== starting munge, slurmctld and slurmd ($host, $cpus CPUs)"
if ! pgrep -x munged >/dev/null; then
  [ -f /etc/munge/munge.key ] || $sudo mungekey --create --keyfile /etc/munge/munge.key
  $sudo chown munge:munge /etc/munge/munge.key && $sudo chmod 400 /etc/munge/munge.key
  $sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
  $sudo chown munge:munge /run/munge /var/log/munge /var/lib/munge
  $sudo runuser -u munge -- /usr/sbin/munged
  munge_started=1
fi
$sudo env SLURM_CONF="$conf" /usr/sbin/slurmctld -f "$conf"
$sudo env SLURM_CONF="$conf" /usr/sbin/slurmd -f "$conf"
for _ in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null || true)
  [[ "$state" == idle* ]] && break
  sleep 1
done
sinfo -N || { echo "the node did not come up: see $work/log" >&2; exit 1; }
[[ "$(sinfo -h -N -o %t)" == idle* ]] || { echo "node not idle: see $work/log" >&2; exit 1; }

echo "== volume: $depth x $size x $size, chunks 1 x $chunk x $chunk"
"$root/target/release/examples/synthetic_volume" "$work/in.zarr" "$depth" "$size" "$chunk"

opts=(--tta none --threads 1)
echo "== single process (1 thread)"
t0=$(date +%s.%N)
"$bin" predict "$work/in.zarr" -o "$work/single.zarr" "${opts[@]}"
t1=$(date +%s.%N)

echo "== Slurm job array: $workers shard workers (1 CPU each)"
t2=$(date +%s.%N)
sbatch --wait --array=0-$((workers - 1)) --cpus-per-task=1 --job-name=skipseg-shards \
  --output="$work/log/shard-%a.out" \
  --wrap "'$bin' predict '$work/in.zarr' -o '$work/sharded.zarr' ${opts[*]} --shard \$SLURM_ARRAY_TASK_ID/\$SLURM_ARRAY_TASK_COUNT"
t3=$(date +%s.%N)
cat "$work"/log/shard-*.out

echo "== comparing every chunk and metadata file"
if diff -r --exclude=.skipseg "$work/single.zarr" "$work/sharded.zarr"; then
  chunks=$(find "$work/single.zarr/0" -type f ! -name zarr.json | wc -l)
  echo "IDENTICAL: $chunks chunk files, single process $(echo "$t1 - $t0" | bc) s, Slurm array of $workers $(echo "$t3 - $t2" | bc) s (incl. scheduling)"
else
  echo "DIFFERENT: the sharded output is not the single-process output" >&2
  exit 1
fi
