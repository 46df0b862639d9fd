#!/bin/bash
# Experiment, not part of the library: one seed of the several-squares probe under one M-RoPE layout, as
# results.md ("Several squares") ran it: a fresh square model (500 steps), msq 1,000 steps, msq 1,500 more
# (fresh records), each msq model scored greedily on the 200 held-out msq records.
#
#   python docs/detection-proof/rope-layout-probe/ropewrap_msq.py \
#       docs/detection-proof/rope-layout-probe/square_set.py msq 200 778 runs/msq-eval detection
#   bash docs/detection-proof/rope-layout-probe/msq_chain.sh inter runs/msq runs/msq-eval/records.jsonl 1 2 3
#   bash docs/detection-proof/rope-layout-probe/msq_chain.sh std   runs/msq runs/msq-eval/records.jsonl 1 2 3
#   python scripts/box_errors.py runs/msq/*-more-eval/predictions.jsonl
#
# arguments: layout (inter | std), output folder, held-out records, then the seeds of the three runs.
# One thread a run: the figures in results.md were measured that way.
set -euo pipefail
[ $# -eq 6 ] || { echo "usage: msq_chain.sh inter|std OUT RECORDS SQUARE_SEED MSQ_SEED MORE_SEED" >&2; exit 2; }
LAYOUT=$1 OUT=$2 RECORDS=$3 S0=$4 S1=$5 S2=$6
case $LAYOUT in
    inter) FLAGS="--mrope-section 2,7,7 --mrope-layout interleaved" ;;
    std) FLAGS="--mrope-section 2,4,10" ;;  # rung 30's flags: Qwen2.5-VL's layout
    *) echo "msq_chain.sh: layout is inter or std, not '$LAYOUT'" >&2; exit 2 ;;
esac
HERE=$(dirname "$0")
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN="$PY $HERE/ropewrap_msq.py scripts/pretrain_tiny.py"  # no ROPE_LAYOUT: the config carries the layout
P=$OUT/$LAYOUT-s$S0
# shellcheck disable=SC2086  # FLAGS is several flags
$RUN --out "$P-square" --rope-theta 300 $FLAGS --kv-heads 4 --stages square:500:grounding --tasks grounding \
    --seed "$S0" --eval-records 20
$RUN --out "$P-msq" --base-model "$P-square/stage-0-square" --stages msq:1000:detection --seed "$S1" \
    --eval-records 20
$PY eval.py --model "$P-msq/stage-0-msq" --data "$RECORDS" --out "$P-msq-eval" --batch-size 16
$RUN --out "$P-msq-more" --base-model "$P-msq/stage-0-msq" --stages msq:1500:detection --seed "$S2" \
    --eval-records 20
$PY eval.py --model "$P-msq-more/stage-0-msq" --data "$RECORDS" --out "$P-msq-more-eval" --batch-size 16
