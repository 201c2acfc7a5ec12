#!/usr/bin/env bash
# Issue 16's paper-sized run for a lent accelerator: on ONE H100/H200-class GPU, within ~12 minutes of wall time,
#   * DIFC (Sreenivas et al.): MCD x {CE, DI, DIFC} x seeds 0 1 2, FER2013 train -> CK+48, at 112 px on dlib's
#     face-recognition ResNet-29 (configs/difc_mcd_dlib.yaml; the paper: face-pretrained IR-50 at 112 px), fixed-length
#     epochs with the DI -> DIFC switch at epoch 3 of 6;
#   * GReFEL (Wasi et al.): the reliability-balancing head without / with RB (Table 2's first and last rows) x seeds
#     0 1 2 on FER+ (majority protocol), RB head on the same face backbone at 112 px (benchmarks/grefel.py --model
#     rb_dlib_112);
# every cell a separate process (9 + 6 at once; the GPU holds them all), each with a wall-clock budget that leaves
# time for the evaluations, then the tables with paired per-seed differences:
#   benchmarks/results/gpu/{difc_tables.md, difc_runs.json, grefel_tables.md, ...} (beside the CPU ones).
#
#   FAIREXPR_DATA=/path/to/datasets bash benchmarks/gpu/run.sh            # the real run (needs CUDA)
#   OUT=/tmp/gpu_toy bash benchmarks/gpu/run.sh --toy                     # the same commands on the CPU, synthetic
#                                                                         # faces, 2 steps per cell (tests/benchmarks)
# Environment: GPU_MINUTES (12: the wall time the whole run may take), PYTHON (default .venv/bin/python),
# OUT (run folders; default benchmarks/runs/gpu), SEEDS ("0 1 2").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
TOY=0
if [ "${1:-}" = "--toy" ]; then TOY=1; shift; fi
if [ $# -gt 0 ]; then echo "benchmarks/gpu/run.sh: unknown argument '$1' (only --toy)" >&2; exit 2; fi
MINUTES="${GPU_MINUTES:-12}"
SEEDS="${SEEDS:-0 1 2}"
read -r -a SEED_ARR <<< "$SEEDS"
N_SEEDS=${#SEED_ARR[@]}

if [ $TOY = 1 ]; then
  OUT="${OUT:?--toy writes only to a scratch folder: set OUT=/some/tmp/dir}"
  RESULTS="$OUT/results"
  DEVICE=(train.accelerator=cpu train.precision=32-true)
  # tiny synthetic domains; the same recipes, models and input sizes, 2 steps per epoch
  DIFC_DATA=(--source "synthetic:fer2013?n=140&size=112&channels=3&domain=lab@train"
             --target "synthetic:fer2013?n=140&size=112&channels=3&domain=wild&seed=1@test")
  DIFC_BUDGET=(--epochs 2 --iters 2 --t1 1 --minutes 5)
  DIFC_EXTRA=(train.batch_size=4 train.eval_batch_size=32 data.val=null)
  GREFEL_DATA=(--datasets synthetic --synthetic-total 70)
  GREFEL_BUDGET=(--epochs 1 --minutes 5)
  GREFEL_EXTRA=(train.batch_size=14 train.eval_batch_size=32 train.iters_per_epoch=2 data.image_size=112
                "data.train_options={total: 70, size: 112, channels: 3}" "data.test_options={total: 70, seed: 1, size: 112, channels: 3}")
  "$PY" benchmarks/gpu/preflight.py || exit 2  # packages, weights
else
  OUT="${OUT:-$ROOT/benchmarks/runs/gpu}"
  RESULTS="$ROOT/benchmarks/results/gpu"
  : "${FAIREXPR_DATA:?set FAIREXPR_DATA to the datasets folder}"
  # packages, weights, the GPU and every dataset, in seconds, before any cell starts (each problem one line;
  # preflight.py puts src/ on its own path)
  "$PY" benchmarks/gpu/preflight.py --data "$FAIREXPR_DATA" --cuda || {
    echo "benchmarks/gpu/run.sh: the preflight above failed; nothing was started" >&2; exit 2; }
  DEVICE=(train.accelerator=cuda train.precision=bf16-mixed)
  DIFC_DATA=(--source "fer2013:$FAIREXPR_DATA/fer2013@train" --target "ckplus:$FAIREXPR_DATA/ckplus/CK+48")
  # the budget per cell: the whole run's minutes less ~3 for start-up, evaluations and tables
  CELL_MIN=$(awk -v m="$MINUTES" 'BEGIN { c = m - 3; if (c < 1) c = 1; print c }')
  DIFC_BUDGET=(--minutes "$CELL_MIN")
  DIFC_EXTRA=()
  GREFEL_DATA=(--datasets ferplus)
  GREFEL_BUDGET=(--epochs 8 --minutes "$CELL_MIN" --clock wall)
  GREFEL_EXTRA=(train.iters_per_epoch=120)
fi
mkdir -p "$OUT" "$RESULTS"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
echo "[gpu/run.sh] $(date -u +%FT%TZ) toy=$TOY minutes=$MINUTES seeds=$SEEDS out=$OUT results=$RESULTS"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "[gpu/run.sh] no nvidia-smi"

pids=()
N_DIFC=$((3 * N_SEEDS))
for i in $(seq 0 $((N_DIFC - 1))); do
  "$PY" benchmarks/difc.py --recipe dlib --methods mcd --losses ce di difc --seeds "${SEED_ARR[@]}" \
    "${DIFC_DATA[@]}" "${DIFC_BUDGET[@]}" --shard "$i/$N_DIFC" --out "$OUT/difc" --results "$OUT/difc_shard_results/$i" \
    --override "${DEVICE[@]}" "${DIFC_EXTRA[@]}" > "$OUT/difc_shard$i.log" 2>&1 &
  pids+=($!)
done
N_GREFEL=$((2 * N_SEEDS))
for i in $(seq 0 $((N_GREFEL - 1))); do
  seed="${SEED_ARR[$((i / 2))]}"
  variant=$([ $((i % 2)) = 0 ] && echo norb || echo rb)
  "$PY" benchmarks/grefel.py --model rb_dlib_112 --recipe configs/grefel_dlib_cpu.yaml --tables a --variants "$variant" \
    --seeds "$seed" "${GREFEL_DATA[@]}" "${GREFEL_BUDGET[@]}" --out "$OUT/grefel" --results "$OUT/grefel_cell_results/$i" \
    --override "${DEVICE[@]}" "${GREFEL_EXTRA[@]}" > "$OUT/grefel_cell$i.log" 2>&1 &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ $fail = 0 ] || echo "[gpu/run.sh] a cell process failed: see $OUT/*.log (the tables below use the runs that finished)" >&2

# the tables from every finished cell, written where the results live
"$PY" benchmarks/difc.py --recipe dlib --methods mcd --losses ce di difc --seeds "${SEED_ARR[@]}" "${DIFC_DATA[@]}" \
  "${DIFC_BUDGET[@]}" --collect --out "$OUT/difc" --results "$RESULTS" --override "${DEVICE[@]}" "${DIFC_EXTRA[@]}"
"$PY" benchmarks/grefel.py --model rb_dlib_112 --recipe configs/grefel_dlib_cpu.yaml --tables a --variants norb rb \
  --seeds "${SEED_ARR[@]}" "${GREFEL_DATA[@]}" "${GREFEL_BUDGET[@]}" --collect --out "$OUT/grefel" --results "$RESULTS" \
  --override "${DEVICE[@]}" "${GREFEL_EXTRA[@]}"
"$PY" benchmarks/gpu/paired.py --out "$OUT" --results "$RESULTS" --seeds "${SEED_ARR[@]}"
echo "[gpu/run.sh] $(date -u +%FT%TZ) done: $RESULTS"
exit $fail
