#!/bin/bash
# The real-data check the README quotes: the shared real runs (../shared/realdata, never copied
# here) through prepare_data, two trainings (calibration none and temperature), evaluate_generation
# on a held-out agentic run and generate on the Azure conv trace. Run from the repository root:
#     bash docs/real_data_check.sh WORK_FOLDER
set -e
W=${1:?give a new work folder}; R=${REALDATA:-../shared/realdata}; G=$R/grid_qwen3-8b_a100.toml
if [ -e "$W" ]; then echo "$W: exists; give a new work folder" >&2; exit 2; fi
mkdir -p $W/raw
export OMP_NUM_THREADS=1 WANDB_MODE=disabled
python3 $R/convert_runs.py --out $W/raw/share >/dev/null
python3 $R/convert_runs2.py --out $W/raw/oh6964 --runs openhands_1784656964 >/dev/null
python3 $R/convert_runs2.py --out $W/raw/oh8519 --runs openhands_1784658519 >/dev/null
python3 $R/convert_runs2.py --out $W/raw/oh7707 --runs openhands_1784657707 >/dev/null
python3 $R/convert_runs2.py --out $W/raw/off --runs openhands_1784657284 burstgpt_1784416185 >/dev/null
mkdir -p $W/raw/train; cp $W/raw/share/* $W/raw/oh6964/* $W/raw/train/
P="python3 -m model.prepare_data --model qwen3-8b --hardware a100 --grid $G"
$P --runs $W/raw/train --out $W/data/train/vllm-benchmark_qwen3-8b_a100.npz
$P --runs $W/raw/oh8519 --out $W/data/heldout.npz
$P --runs $W/raw/oh7707 --out $W/data/oh7707.npz --max_gap_s 2.1
$P --runs $W/raw/off --out $W/data/off.npz --max_gap_s 2.1
for cal in none temperature; do
  python3 -m model.train_entry --grid $G --data_file $W/data/train/vllm-benchmark_qwen3-8b_a100.npz --model qwen3-8b \
    --hardware_accelerator a100 --tp 1 --num_epochs 100 --lr 3e-3 --val_traces 0 --calibration $cal --no_wandb --no_progress \
    --output_dir $W/out_$cal | grep -v "^  "
  python3 -m model.evaluate_generation --checkpoint $W/out_$cal/checkpoints/qwen3-8b_a100_tp1.pt \
    --data_file $W/data/heldout.npz --out $W/eval_$cal.csv
  cat $W/eval_$cal.csv
done
python3 -m model.generate --checkpoint $W/out_none/checkpoints/qwen3-8b_a100_tp1.pt \
  --requests $R/AzureLLMInferenceTrace_conv.csv --out $W/azure.csv 2>&1 | tail -8
