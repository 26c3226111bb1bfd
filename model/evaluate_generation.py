"""Score generated power traces against measured traces the model never saw, beside baselines.

    python -m model.evaluate_generation --checkpoint training_results/checkpoints/llama-3-8b_a100_tp1.pt \\
        --data_file held_out/vllm-benchmark_llama-3-8b_a100.npz [--tp 1] [--seeds 5] [--out scores.csv]

For every trace of the TP (default: the checkpoint's) in the file, its recorded arrivals are
replayed through the serving model and the generator, and the generated watts are compared with
the measured ones: ks, acf_r2, nrmse, p95_error_pct, p99_error_pct, energy_error_pct; median
over seeds, then over traces. Baselines side by side: tdp, mean, marginal, measured_features.
Traces that trained the checkpoint (same content, in whatever file) are left out (said so);
traces binned otherwise than the checkpoint's are refused.
The replayed traffic is compared with what the checkpoint trained on
(model/generation/extrapolation.py): a `notice:` line says when bins lie outside the training
range, requests are unfinished at the end of their trace or the serving model's batch cap is
full; --strict makes any of these exit 2 before scoring.
Writes the summary CSV (one row per method), <out>_per_trace.csv and <out>.json (inputs with
SHA-256, the traffic check: `extrapolation`, `per_trace`, `warnings`).
Exit status: 0 done, 2 bad input.
"""
from __future__ import annotations

import sys
from pathlib import Path

from model import config
from model.command_settings import EvaluateGenerationSettings, add_flags, from_args
from model.errors import ArgumentParser, InputError, run_cli
from model.outputs import atomic_path, file_sha256, json_text, refuse_clashes


def parse_args(argv=None) -> EvaluateGenerationSettings:
    """The settings of the command line (model/command_settings.py: one field per flag)."""
    parser = ArgumentParser(__doc__)
    add_flags(parser, EvaluateGenerationSettings)
    return from_args(EvaluateGenerationSettings, parser.parse_args(argv))


def check_bin_width(data_file, traces, bin_s: float) -> None:
    """Traces binned otherwise than the checkpoint's training data cannot be scored against it:
    the classifier's features and the watts' autocorrelation are per bin."""
    from model.generation.serving import trace_bin_s
    widths = sorted({round(trace_bin_s(t, bin_s), 9) for t in traces})
    off = [w for w in widths if abs(w - bin_s) > 0.01 * bin_s]
    if off:
        raise InputError(f"{data_file}: its traces are binned at {off[0]:g} s, the checkpoint's at {bin_s:g} s; "
                         "score it with a checkpoint trained at the same bin width")


def traffic_checks(ckpt, traces) -> list[dict]:
    """Each trace's recorded requests, replayed through the serving model over the trace's bins,
    against the checkpoint's training traffic (extrapolation.traffic_check)."""
    from model.generation.generator import Generator, requests_of
    generator = Generator(ckpt)
    return [generator.traffic(requests_of(t), len(t)) for t in traces]


def main() -> int:
    args = parse_args()
    args.validate()
    # torch, pandas and matplotlib load after the flags are read and checked: --help and usage
    # errors stay instant
    import matplotlib
    import pandas as pd
    from model.checkpoint import load_checkpoint
    from model.data import load_power_file, trace_sha256
    from model.generation.evaluate import GENERATION_COLUMNS, score_generation, standard_methods, trace_seed
    from model.generation.extrapolation import pooled, report, summarize, traffic_notices
    from model.generation.serving import prefix_caching_clash
    from model.plots import STYLE, held_out_figure, save_figure
    if args.out:
        out = Path(args.out)
        plots = {f"--plot's {out.stem}_trace{suffix}": out.parent / f"{out.stem}_trace{suffix}"
                 for suffix in (".png", ".pdf")} if args.plot else {}
        refuse_clashes({"--out": out, "--out's per-trace file": out.with_name(out.stem + "_per_trace.csv"),
                        "--out's summary": out.with_name(out.name + ".json"), **plots}, {"--checkpoint": args.checkpoint, "--data_file": args.data_file})
    ckpt = load_checkpoint(args.checkpoint)
    tp = args.tp if args.tp is not None else int(ckpt.configuration["tp"])
    data = load_power_file(args.data_file)
    traces = data.traces_for_tp(tp, min_traces=1)
    check_bin_width(args.data_file, traces, float(ckpt.configuration["bin_s"]))
    clash = prefix_caching_clash(ckpt.server["settings"], traces)
    if clash:
        raise InputError(f"{args.data_file}: {clash}; score it with a checkpoint of its own setting")
    if not ckpt.train_trace_sha256:
        raise InputError(f"{args.checkpoint}: records no training traces, so held-out traces cannot be told "
                         "apart; retrain the job")
    # by content: the training file saved again, or its traces copied into another, are still
    # not held out
    trained = set(ckpt.train_trace_sha256)
    kept = [t for t in traces if trace_sha256(t) not in trained]
    if len(kept) < len(traces):
        print(f"note: {len(traces) - len(kept)} TP {tp} trace(s) of {args.data_file} trained the "
              f"checkpoint (same content); these training traces are left out, {len(kept)} held-out "
              "trace(s) scored", file=sys.stderr)
    if not kept:
        raise InputError(f"{args.data_file}: every TP {tp} trace trained the checkpoint; none is held out")
    traces = kept
    # is the replayed traffic what the checkpoint trained on? (--strict: exit 2 here, nothing written)
    checks = traffic_checks(ckpt, traces)
    extrapolation = summarize(pooled(checks), ckpt.training_traffic)
    warnings = traffic_notices(extrapolation)
    report(warnings, args.strict)
    scores = score_generation(ckpt, traces, seeds=args.seeds, base_seed=args.seed, sampling=args.sampling)
    if args.out:
        out = Path(args.out)
        per_trace = out.with_name(out.stem + "_per_trace.csv")
        summary = {
            "checkpoint": config.recorded_path(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
            "data_file": config.recorded_path(args.data_file), "data_sha256": file_sha256(args.data_file),
            "tp": tp, "traces": [t.index for t in traces], "seeds": args.seeds, "seed": args.seed,
            "extrapolation": extrapolation,
            "per_trace": [{"trace": t.index} | {k: v for k, v in summarize(c, ckpt.training_traffic).items()
                                                if k.startswith("share_")}
                          for t, c in zip(traces, checks)],
            "warnings": warnings}
        # the three files land together: a failure writing any leaves none of them
        with atomic_path(out) as scores_tmp, atomic_path(per_trace) as per_trace_tmp, \
                atomic_path(out.with_name(out.name + ".json")) as summary_tmp:
            scores.summary[list(GENERATION_COLUMNS)].to_csv(scores_tmp, index=False)
            scores.per_trace.to_csv(per_trace_tmp, index=False)
            summary_tmp.write_text(json_text(summary))
    with pd.option_context("display.width", 120, "display.float_format", "{:.3f}".format):
        print(f"{ckpt.configuration['job_name']} on {len(traces)} TP {tp} trace(s) of {args.data_file}, "
              f"{args.seeds} seed(s):")
        print(scores.summary[list(GENERATION_COLUMNS) + ["acf_mae"]].to_string(index=False))
    if args.out:
        print(f"wrote {args.out}, {per_trace} and {out.with_name(out.name + '.json')}")
    if args.plot and args.out:
        trace = traces[0]
        methods = standard_methods(ckpt, args.sampling or config.GENERATION_SAMPLING)
        seed = trace_seed(args.seed, 0, trace)
        with matplotlib.rc_context(STYLE):
            fig = held_out_figure(trace.timestamps - trace.timestamps[0], trace.power,
                                  {"ours": methods["ours"](trace, seed), "marginal": methods["marginal"](trace, seed)},
                                  f"{ckpt.configuration['job_name']}: trace {trace.index} of {Path(args.data_file).name}, "
                                  "generated from its arrivals alone")
            for path in save_figure(fig, out.parent, out.stem + "_trace"):
                print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main, "evaluate_generation")
