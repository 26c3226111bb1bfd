"""Train one configuration of the grid and write its metrics, losses and checkpoint.

    python -m model.train_entry --data_file model/training_data/vllm-benchmark_llama-3-8b_a100.npz \\
        --model llama-3-8b --tp 1 --hardware_accelerator a100 --num_epochs 5

`--tp -1` trains every TP in the file, one job after the other. Outputs go under
--output_dir (default ./training_results): metrics/{job}_metrics.csv, metrics/{job}_losses.csv,
checkpoints/{job}.pt. Exit status: 0 done, 1 a job failed, 2 bad usage or bad input.
"""
from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace

from model import config
from model.classifiers.gru import GRU_IMPLS
from model.data import load_power_file
from model.errors import ArgumentParser, InputError, run_cli
from model.grid import HARDWARE, MODEL_KEYS, MODELS_BY_KEY
from model.job import JobSettings, run_job


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(__doc__)
    parser.add_argument("--data_file", required=True, help="the .npz file holding this LLM/GPU's traces")
    parser.add_argument("--model", required=True, choices=MODEL_KEYS)
    parser.add_argument("--tp", required=True, type=int, help="tensor-parallel size to train; -1 for all")
    parser.add_argument("--hardware_accelerator", required=True, choices=HARDWARE)
    parser.add_argument("--lr", type=float, default=config.LR)
    parser.add_argument("--num_epochs", type=int, default=config.NUM_EPOCHS)
    parser.add_argument("--hidden_size", type=int, default=config.HIDDEN_SIZE)
    parser.add_argument("--num_states", type=int, default=config.NUM_STATES)
    parser.add_argument("--val_split", type=float, default=config.VAL_SPLIT)
    parser.add_argument("--seed", type=int, default=config.SEED)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--gru_impl", choices=GRU_IMPLS, default="auto",
                        help="auto: fused C++ kernel on CPU, cuDNN nn.GRU on CUDA")
    parser.add_argument("--output_dir", default=str(config.RESULTS_DIR))
    parser.add_argument("--weights_path", default=None,
                        help="checkpoint file (default OUTPUT_DIR/checkpoints/{job}.pt); '{job}' is replaced")
    parser.add_argument("--no_wandb", action="store_true", help="do not log to Weights & Biases")
    parser.add_argument("--val_every", type=int, default=config.VAL_EVERY)
    parser.add_argument("--checkpoint_every", type=int, default=config.CHECKPOINT_EVERY,
                        help="save the training state every N epochs for --resume")
    parser.add_argument("--resume", action="store_true", help="continue from a saved training state")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _terminate(signum, frame):
    raise KeyboardInterrupt   # unwinds like Ctrl-C: temporary files are removed, wandb is closed


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    settings = JobSettings(
        data_file=args.data_file, model=args.model, hardware=args.hardware_accelerator, tp=args.tp,
        lr=args.lr, num_epochs=args.num_epochs, hidden_size=args.hidden_size,
        num_states=args.num_states, val_split=args.val_split, seed=args.seed, device=args.device,
        gru_impl=args.gru_impl, output_dir=args.output_dir, weights_path=args.weights_path,
        use_wandb=not args.no_wandb, val_every=args.val_every, checkpoint_every=args.checkpoint_every,
        resume=args.resume, progress=not args.no_progress)
    settings.validate()
    data = load_power_file(args.data_file)
    if args.tp == -1:
        tps = data.tp_values
        if args.weights_path and "{job}" not in args.weights_path and len(tps) > 1:
            raise InputError("--weights_path needs '{job}' in it with --tp -1 (one checkpoint per TP)")
    elif args.tp < 1:
        raise InputError(f"--tp must be a positive TP size or -1 for all, got {args.tp}")
    else:
        tps = [args.tp]
    for tp in tps:
        if tp not in MODELS_BY_KEY[args.model].tp_values:
            print(f"note: TP {tp} is not in the grid for {args.model}; aggregate_metrics.py will not "
                  "tabulate it", file=sys.stderr)
        job_settings = replace(settings, tp=tp)
        print(f"== {job_settings.job_name}: training on {args.data_file}", flush=True)
        result = run_job(job_settings, data=data)
        m = result.metrics
        print(f"{result.job}: val_f1={m['val_f1']:.3f} autocorr_r2={m['autocorr_r2']:.3f} "
              f"transition_mae={m['transition_mae']:.1f} W ece={m['ece']:.4f} "
              f"({m['train_seconds']:.1f} s training)")
        for kind, path in result.paths.items():
            print(f"  {kind:<10} {path}")
    return 0


if __name__ == "__main__":
    try:
        run_cli(main, "train_entry")
    except KeyboardInterrupt:
        print("train_entry: interrupted", file=sys.stderr)
        sys.exit(130)
