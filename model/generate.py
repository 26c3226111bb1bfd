"""A power trace for traffic that was never measured, from one trained configuration.

    python -m model.generate --checkpoint training_results/checkpoints/llama-3-8b_a100_tp1.pt \\
        --rate 2 --duration 86400 --seed 0                       # a day of Poisson traffic
    python -m model.generate --checkpoint ... --requests azure_conv_2023.csv

Traffic is `--requests FILE` (CSV `arrival_time_s,input_tokens,output_tokens`, or the public
Azure LLM inference trace `TIMESTAMP,ContextTokens,GeneratedTokens`) or `--rate R --duration S`
(Poisson arrivals, token lengths drawn from the configuration's training requests). With
--requests the trace runs to the last arrival plus --drain_s unless --duration is given.
Writes a CSV `time_s,power_w,state` at the configuration's bin width (default
generated/{job}_{traffic}_seed{N}.csv) and beside it <out>.json: inputs with SHA-256, seed,
serving-model parameters, request count, energy and mean and peak watts, and the share of bins
above nameplate (TDP, not a ceiling) with the peaks at 0.25 s, 1 s and 1 min, of the trace and
of the training data.
The traffic is compared with what the checkpoint trained on (model/generation/extrapolation.py):
a `notice:` line says when bins lie outside the training range, requests are unfinished at the
end or the serving model's batch cap is full, and the JSON records it (`extrapolation`,
`warnings`); --strict makes any of these exit 2 instead.
Exit status: 0 done, 2 bad input (one line naming the file or flag; nothing written).
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from model import config
from model.command_settings import GenerateSettings, add_flags, from_args
from model.errors import ArgumentParser, InputError, refuse_oversized, run_cli
from model.outputs import atomic_path, file_sha256, refuse_clashes, write_json


def parse_args(argv=None) -> GenerateSettings:
    """The GenerateSettings of the command line (model/command_settings.py: one field per flag)."""
    parser = ArgumentParser(__doc__)
    add_flags(parser, GenerateSettings)
    return from_args(GenerateSettings, parser.parse_args(argv))


# memory per bin (features, state probabilities, watts, states, the CSV's frame) and per request
# (arrival, tokens, the serving simulation's arrays), generously rounded up
BYTES_PER_BIN, BYTES_PER_REQUEST = 256, 128


def check_size(n_requests: float, n_bins: float) -> None:
    """One line, before anything is allocated, for traffic or a trace too big for this machine."""
    refuse_oversized(n_requests * BYTES_PER_REQUEST + n_bins * BYTES_PER_BIN,
                     f"{n_bins:.3g} bins and {n_requests:.3g} requests", "--rate, --duration or --requests")


def main() -> int:
    args = parse_args()
    args.validate()
    # torch, pandas and matplotlib load after the flags are read and checked: --help and usage
    # errors stay instant
    import matplotlib
    import numpy as np
    import pandas as pd
    from model.checkpoint import load_checkpoint
    from model.generation.extrapolation import report, summarize, traffic_notices
    from model.generation.generator import Generator
    from model.generation.requests_file import poisson_requests, read_requests
    from model.nameplate import above_nameplate, summary_line
    from model.plots import STYLE, generated_day_figure, save_figure
    ckpt = load_checkpoint(args.checkpoint)
    generator = Generator(ckpt)
    job = ckpt.configuration["job_name"]
    if args.requests:
        requests, notes = read_requests(args.requests)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        duration = args.duration or float(requests.arrival_s[-1]) + args.drain_s
        check_size(len(requests), duration / generator.bin_s)
        traffic = {"requests_file": config.recorded_path(args.requests), "requests_sha256": file_sha256(args.requests)}
        name = Path(args.requests).stem
    else:
        duration = args.duration
        check_size(args.rate * duration, duration / generator.bin_s)      # before drawing them
        requests = poisson_requests(args.rate, duration, (ckpt.input_tokens, ckpt.output_tokens), args.seed)
        traffic = {"poisson_rate_per_s": args.rate, "token_lengths": "drawn from the training requests"}
        name = f"rate{args.rate:g}_{duration:g}s"
    n_bins = int(math.ceil(duration / generator.bin_s - 1e-9))
    if n_bins < 1:
        raise InputError(f"--duration {duration} s is shorter than one {generator.bin_s} s bin")
    out = Path(args.out or config.GENERATED_DIR / f"{job}_{name}_seed{args.seed}.csv")
    if out.is_dir():
        raise InputError(f"--out {out}: is a directory; give a file name")
    plots = {f"--plot's {out.stem}{suffix}": out.parent / f"{out.stem}{suffix}" for suffix in (".png", ".pdf")} \
        if args.plot else {}
    refuse_clashes({"--out": out, "--out's summary": out.with_name(out.name + ".json"), **plots},
                   {"--checkpoint": args.checkpoint, "--requests": args.requests})

    started = time.perf_counter()
    trace = generator.generate(requests, n_bins, args.seed, args.sampling)
    seconds = time.perf_counter() - started
    # is this traffic what the checkpoint trained on? (--strict: exit 2 here, nothing written)
    extrapolation = summarize(trace.traffic, ckpt.training_traffic)
    warnings = traffic_notices(extrapolation)
    report(warnings, args.strict)
    frame = pd.DataFrame({"time_s": np.arange(n_bins) * generator.bin_s, "power_w": trace.watts,
                          "state": trace.states})
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    energy_wh = float(trace.watts.sum() * generator.bin_s / 3600.0)
    tdp = ckpt.configuration["tp"] * ckpt.configuration["gpu_tdp_w"]
    nameplate = above_nameplate([trace.watts], generator.bin_s, tdp)
    summary = {
        "checkpoint": config.recorded_path(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
        "configuration": ckpt.configuration, **traffic, "seed": args.seed, "sampling": args.sampling,
        "bin_s": generator.bin_s, "bins": n_bins, "duration_s": n_bins * generator.bin_s,
        "requests": len(requests), "serving_model": ckpt.serving_model,
        "server": ckpt.server["settings"],      # what the training runs' vLLM was set to (prefix cache, ...)
        "energy_wh": energy_wh,
        "mean_w": float(trace.watts.mean()), "peak_w": float(trace.watts.max()),
        "nameplate": nameplate, "training_nameplate": ckpt.training_watts["nameplate"],
        "extrapolation": extrapolation, "warnings": warnings,
        "generation_seconds": round(seconds, 3),
    }
    write_json(out.with_name(out.name + ".json"), summary)
    if args.plot:
        with matplotlib.rc_context(STYLE):
            fig = generated_day_figure(frame["time_s"].to_numpy(), trace.watts,
                                       f"{job}: generated from {len(requests)} requests ({args.sampling})",
                                       {"Nameplate (TDP)": tdp, "training mean": ckpt.training_watts["mean"]})
            save_figure(fig, out.parent, out.stem)
    print(f"{out}: {n_bins} bins of {generator.bin_s} s from {len(requests)} requests; "
          f"mean {summary['mean_w']:.0f} W, peak {summary['peak_w']:.0f} W, {energy_wh / 1000:.3f} kWh "
          f"({seconds:.1f} s)")
    print(f"  generated: {summary_line(nameplate)}")
    print(f"  training:  {summary_line(ckpt.training_watts['nameplate'])}")
    return 0


if __name__ == "__main__":
    run_cli(main, "generate")
