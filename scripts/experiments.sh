#!/usr/bin/env bash
# The paper's experiments (docs/REPRODUCTION.md): the skip ablation (Table 3, Fig. 3),
# the weight-update maps (Fig. 4), the Table 2 recipes and the candidates for the
# shipped model. Every run is an ordinary resumable run folder: run the script again
# and unfinished runs continue where they stopped, finished ones are skipped.
#
# usage: scripts/experiments.sh [options] [GROUP...]
#   groups: ablation fig4 table2 candidates (default: all four)
#   --device cpu|cuda   where to train (default cpu)
#   --bin PATH          segment-train binary (default: cargo's release build)
#   --out DIR           runs folder (default runs/experiments)
#   --parallel          start all runs at once (one GPU; on a 2-core CPU: don't)
#   --budget SECONDS    time-box: train every run 2 epochs, measure, then give each
#                       group as many epochs as fit in SECONDS (same count within a
#                       group); without it, the fixed epoch counts below
#   --max-epochs N      cap on the epochs a budget may give (default 400)
set -uo pipefail

device=cpu
bin=""
out=runs/experiments
parallel=0
budget=0
max_epochs=400
groups=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --parallel) parallel=1; shift ;;
        --budget) budget=$2; shift 2 ;;
        --max-epochs) max_epochs=$2; shift 2 ;;
        ablation|fig4|table2|candidates) groups+=("$1"); shift ;;
        *) echo "experiments.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ ${#groups[@]} -eq 0 ] && groups=(ablation fig4 table2 candidates)
cd "$(dirname "$0")/.."
if [ -z "$bin" ]; then
    cargo build --release -p skipseg-train >&2 || exit 1
    bin=target/release/segment-train
fi
mkdir -p "$out"

# Each run: "GROUP NAME EPOCHS ARGS..." (EPOCHS: the count without --budget).
# ablation: Table 1's depth at the small preset's widths (models/table1-narrow.json),
#   BCE, the paper's recipe; one run folder per variant.
# fig4: stacks of simple blocks, long skips only except (a); (d) without batch norm at
#   a tenth of the learning rate, as the paper lowered it.
# table2: the small preset with the paper's recipe: Dice, Dice + dropout 0.2 (for
#   Monte-Carlo averaging), BCE.
# candidates: levers for the shipped model: 4 random 256x256 crops per step (batch
#   norm over 4 images, same pixels per step), BCE against Dice, dropout, a wider preset;
#   checkpoints chosen by validation V_rand.
runs() {
    local g
    for g in "${groups[@]}"; do
        case $g in
            ablation)
                for v in long-short short-only long-only neither; do
                    echo "ablation $v 50 ablation --arch models/table1-narrow.json --loss bce --variants $v --out $out/ablation"
                done ;;
            fig4)
                echo "fig4 a 30 train --arch models/experiments/fig4a-simple9-long-short.json --loss bce --out $out/fig4/a"
                echo "fig4 b 30 train --arch models/experiments/fig4b-simple9-long.json --loss bce --out $out/fig4/b"
                echo "fig4 c 30 train --arch models/experiments/fig4c-simple3-long.json --loss bce --out $out/fig4/c"
                echo "fig4 d 30 train --arch models/experiments/fig4d-simple7-long-nobn.json --loss bce --lr 1e-4 --out $out/fig4/d" ;;
            table2)
                echo "table2 dice 60 train --arch models/small.json --loss dice --out $out/table2/dice"
                echo "table2 dice-dropout 60 train --arch models/small.json --loss dice --dropout 0.2 --out $out/table2/dice-dropout"
                echo "table2 bce 60 train --arch models/small.json --loss bce --out $out/table2/bce" ;;
            candidates)
                # bce-crops is the shipped isbi-small-bce.onnx's recipe; dice-dropout-crops
                # the Table 2 Monte-Carlo model (docs/REPRODUCTION.md)
                echo "candidates bce-crops 40 train --arch models/small.json --loss bce --crops 4 --crop-size 256 --select v-rand --out $out/candidates/bce-crops"
                echo "candidates dice-dropout-crops 30 train --arch models/small.json --loss dice --dropout 0.2 --crops 4 --crop-size 256 --select v-rand --out $out/candidates/dice-dropout-crops"
                echo "candidates dice-crops 40 train --arch models/small.json --loss dice --crops 4 --crop-size 256 --select v-rand --out $out/candidates/dice-crops"
                echo "candidates wide-bce-crops 40 train --arch models/experiments/small-wide.json --loss bce --crops 4 --crop-size 256 --select v-rand --out $out/candidates/wide-bce-crops" ;;
        esac
    done
}

# the run folder of a run line
dir_of() {
    local group=$1 name=$2
    shift 3
    if [ "$group" = ablation ]; then echo "$out/ablation/$name"; else
        while [ $# -gt 0 ]; do [ "$1" = --out ] && { echo "$2"; return; }; shift; done
    fi
}

done_epochs() {
    python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["epochs_done"])
except Exception: print(0)' "$1/state.json"
}

# start (or continue) one run line with a total of $1 epochs
launch() {
    local epochs=$1 group=$2 name=$3 dir freeze log
    dir=$(dir_of "${@:2}")
    shift 4
    freeze=$((epochs - epochs / 4))
    log="$out/logs/$group-$name.log"
    mkdir -p "$out/logs"
    local cmd
    if [ "$1" = ablation ]; then
        cmd=("$bin" "$@" --epochs "$epochs" --freeze-bn-after "$freeze" --device "$device")
    elif [ -f "$dir/state.json" ]; then
        if [ "$(done_epochs "$dir")" -ge "$epochs" ]; then echo "$group/$name: done"; return 0; fi
        cmd=("$bin" train --resume "$dir" --epochs "$epochs" --freeze-bn-after "$freeze" --device "$device")
    else
        cmd=("$bin" "$@" --epochs "$epochs" --freeze-bn-after "$freeze" --device "$device")
    fi
    echo "$group/$name: ${cmd[*]}" | tee -a "$log"
    if [ $parallel = 1 ]; then
        "${cmd[@]}" >>"$log" 2>&1 &
    else
        "${cmd[@]}" 2>&1 | tee -a "$log"
    fi
}

mapfile -t lines < <(runs)
started=$(date +%s)
if [ "$budget" -gt 0 ]; then
    for l in "${lines[@]}"; do
        read -r -a a <<<"$l"
        if [ "$(done_epochs "$(dir_of "${a[@]}")")" -lt 2 ]; then launch 2 "${a[@]}"; fi
    done
    wait
    # epochs that fit: the slowest second epoch of each group sets the group's count
    declare -A slowest
    for l in "${lines[@]}"; do
        read -r -a a <<<"$l"
        s=$(python3 -c 'import json,sys
try: print(max(r["seconds"] for r in json.load(open(sys.argv[1]))["history"][1:2]))
except Exception: print(0)' "$(dir_of "${a[@]}")/state.json")
        g=${a[0]}
        slowest[$g]=$(python3 -c "print(max(float('${slowest[$g]:-0}'), float('$s')))")
    done
    left=$((budget - ($(date +%s) - started)))
    for l in "${lines[@]}"; do
        read -r -a a <<<"$l"
        g=${a[0]}
        n=$(python3 -c "s=float('${slowest[$g]}'); print(min($max_epochs, 2 + int(0.9 * $left / s)) if s > 0 else 0)")
        if [ "$n" -le 2 ]; then echo "$g/${a[1]}: no epoch time measured (failed?), skipped"; continue; fi
        launch "$n" "${a[@]}"
    done
    if [ $parallel = 1 ]; then
        # stop at the deadline: a killed run loses only the epoch in progress
        ( sleep "$((left > 0 ? left : 1))"; pkill -TERM -x "$(basename "$bin" | cut -c1-15)" ) &
        killer=$!
        wait_for=$(jobs -p | grep -v "^$killer$")
        for p in $wait_for; do wait "$p"; done
        kill "$killer" 2>/dev/null
    fi
else
    for l in "${lines[@]}"; do
        read -r -a a <<<"$l"
        launch "${a[2]}" "${a[@]}"
    done
    wait
fi
if printf '%s\n' "${groups[@]}" | grep -qx ablation; then
    "$bin" ablation --report-only --out "$out/ablation" || true
fi
echo "experiments: $(( $(date +%s) - started )) s"
