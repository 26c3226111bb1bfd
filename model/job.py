"""One training job, as stages that take and return values:

    prepared = prepare(settings, data)          # split, states, labels, feature normalisation
    model, fit_result = train(settings, prepared, ...)
    evaluation = evaluate(settings, model, prepared)
    save(settings, paths, ...)                  # checkpoint, validation series, losses, metrics

`run_job(JobSettings(...))` runs them in order; `python -m model.train_entry` is its command
line. Only `prepare` reads watts, and only the training traces' watts shape anything: the
validation traces' watts are used to label them (nearest centroid) and to score.
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import log_softmax
import torch

from model import config
from model.checkpoint import Checkpoint, save_checkpoint
from model.classifiers import metrics
from model.classifiers.calibration import calibration_split, fit_temperature, nll
from model.classifiers.gru import PowerStateGRU, resolve_gru_impl, state_log_probabilities
from model.classifiers.synthetic import synthesize
from model.classifiers.train import DISCARDED_SUFFIX, FitResult, fit
from model.data import DataError, PowerData, Trace, load_power_file, trace_sha256
from model.errors import InputError, TrainingDiverged
from model.features import FeatureNorm, raw_features, split_named, split_traces
from model.generation.evaluate import GENERATION_COLUMNS, score_generation
from model.generation.extrapolation import training_ranges
from model.generation.serving import fit_serving_model, server_record, serving_fidelity
from model.outputs import file_sha256, refuse_clashes, remove_stale_temp_files, write_csv, write_json
from model.provenance import now, provenance
from model.results import write_metrics_file
from model.settings import JobSettings, fingerprint
from model.nameplate import above_nameplate
from model.states import PowerStates, fit_power_states, state_ranges, state_watts
from model.tracking import Tracker
from model.validation_series import write_validation_series


@dataclass
class JobResult:
    job: str
    metrics: dict[str, float]
    paths: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)     # stage -> wall seconds (Laps)


class Laps:
    """Wall seconds between successive marks, each credited to the stage the mark ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._last
        self._last = now


@dataclass
class Prepared:
    """A job's traces and everything fitted on its training traces alone."""
    train: list[Trace]
    val: list[Trace]
    states: PowerStates
    state_means: np.ndarray
    state_stds: np.ndarray
    norm: FeatureNorm
    train_labels: list[np.ndarray]
    val_labels: list[np.ndarray]

    def features(self, traces: list[Trace]) -> list[np.ndarray]:
        return [self.norm.apply(raw_features(t.workload)) for t in traces]


@dataclass
class Evaluation:
    log_probs: list[np.ndarray]
    probs: list[np.ndarray]
    synthetic: list[np.ndarray]
    values: dict[str, float]
    # the states each synthetic trace was drawn from, per validation trace (for the figures)
    sampled_states: list[np.ndarray] = field(default_factory=list)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"--device {requested!r} is not a torch device (try cpu or cuda)") from None
    if device.type not in ("cpu", "cuda"):
        raise InputError(f"--device {requested}: only cpu and cuda devices can train")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {requested}: CUDA is not available on this machine")
    return device


def output_paths(settings: JobSettings) -> dict[str, Path]:
    job, out = settings.job_name, settings.output_dir
    weights = settings.weights_path.replace("{job}", job) if settings.weights_path else None
    return {"metrics": config.metrics_path(out, job), "losses": config.losses_path(out, job),
            "checkpoint": Path(weights) if weights else config.checkpoint_path(out, job),
            "synthetic": config.synthetic_path(out, job),
            "generation": config.generation_path(out, job),
            "provenance": config.provenance_path(out, job), "state": config.state_path(out, job)}


def check_writable(paths: dict[str, Path]) -> None:
    """Fail before training, not after, when an output folder cannot be written."""
    for path in paths.values():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # a probe name of our own: parallel jobs check the same folders at the same time
            fd, probe = tempfile.mkstemp(dir=path.parent, prefix=".write-test-")
            os.close(fd)
            os.unlink(probe)
        except OSError as err:
            raise InputError(f"{path.parent}: cannot write output there: "
                             f"{err.strerror or err}") from None


def check_output_paths(settings: JobSettings, paths: dict[str, Path]) -> None:
    """Refuse outputs that would overwrite the data file or each other, or land on a folder."""
    for kind, path in paths.items():
        folder_name = kind == "checkpoint" and (settings.weights_path or "").endswith(("/", os.sep))
        if path.is_dir() or folder_name:
            raise InputError(f"--weights_path {path}: is a directory; give a file name"
                             if kind == "checkpoint" else f"{path}: is a directory, not a file")
    refuse_clashes({f"the job's {kind}": path for kind, path in paths.items()},
                   {"--data_file": settings.data_file})


def check_trace_lengths(data_path: str, traces: list[Trace], tp: int) -> None:
    """The autocorrelation metric needs 2 x lags + 1 bins in every trace."""
    short = [t for t in traces if len(t) < config.MIN_ACF_BINS]
    if short:
        raise DataError(data_path, f"trace {short[0].index} (TP {tp}) has {len(short[0])} bins; "
                                   f"the autocorrelation metric needs at least {config.MIN_ACF_BINS}")


def prepare(settings: JobSettings, data: PowerData) -> Prepared:
    """Split the TP's traces; fit states, their watts and the feature normalisation on the
    training traces; label every trace by the nearest centroid."""
    traces = data.traces_for_tp(settings.tp)
    check_trace_lengths(settings.data_file, traces, settings.tp)
    if settings.val_rows is None:
        train, val = split_traces(traces, settings.val_split, settings.seed)
    else:
        train, val = split_named(traces, settings.val_rows, f"{settings.data_file} (TP {settings.tp})",
                                 frozenset(t.index for t in data.traces if t.tp != settings.tp))
    states = fit_power_states([t.power for t in train], settings.num_states)
    train_labels = [states.label(t.power) for t in train]
    state_means, state_stds = state_watts([t.power for t in train], train_labels, states)
    norm = FeatureNorm.fit([raw_features(t.workload) for t in train])
    return Prepared(train, val, states, state_means, state_stds, norm, train_labels,
                    [states.label(t.power) for t in val])


def train(settings: JobSettings, prepared: Prepared, device: torch.device, gru_impl: str,
          tracker: Tracker, state_file: Path, run_fingerprint: dict) -> tuple[PowerStateGRU, FitResult]:
    """Build the classifier with the seed and fit it; returns it in eval mode."""
    def tensors(traces, labels, cuts=None):
        cuts = cuts or [len(y) for y in labels]
        xs = [torch.from_numpy(x[:cut]).unsqueeze(0).to(device) for x, cut in zip(prepared.features(traces), cuts)]
        return xs, [torch.from_numpy(y[:cut]).long().to(device) for y, cut in zip(labels, cuts)]

    # with --calibration temperature the weights never see the training traces' calibration slices
    train_x, train_y = tensors(prepared.train, prepared.train_labels, training_cuts(settings, prepared))
    val_x, val_y = tensors(prepared.val, prepared.val_labels)
    torch.manual_seed(settings.seed)
    try:
        model = PowerStateGRU(settings.num_states, settings.hidden_size, settings.num_layers,
                              settings.dropout, gru_impl=gru_impl).to(device)
        result = fit(model, train_x, train_y, val_x, val_y, lr=settings.lr, num_epochs=settings.num_epochs,
                     seed=settings.seed, val_every=settings.val_every, tracker=tracker, state_file=state_file,
                     checkpoint_every=settings.checkpoint_every, resume=settings.resume,
                     fingerprint=run_fingerprint, progress=settings.progress)
    except (MemoryError, RuntimeError) as err:
        # the model's size is the user's choice: running out of memory is bad input, not a bug
        if not isinstance(err, MemoryError) and not any(
                s in str(err).lower() for s in ("out of memory", "can't allocate memory", "cannot allocate memory")):
            raise
        raise InputError(f"not enough {device.type} memory for the model (--hidden_size {settings.hidden_size}, "
                         f"--num_layers {settings.num_layers}); make it smaller") from None
    problem = divergence(result.train_losses, settings.num_states)
    if problem:
        raise TrainingDiverged(f"training diverged ({problem}); lower --lr (now {settings.lr})")
    return model.eval(), result


def training_cuts(settings: JobSettings, prepared: Prepared) -> list[int]:
    """Per training trace, how many of its first bins train the weights: all of them, or with
    --calibration temperature all but the last CALIBRATION_SHARE, which fit the temperature."""
    if settings.calibration == "none":
        return [len(t) for t in prepared.train]
    return [calibration_split(len(t)) for t in prepared.train]


def calibrate(settings: JobSettings, model: PowerStateGRU, prepared: Prepared) -> dict:
    """Fit the temperature on the training traces' calibration slices (bins the weights never
    trained on; never a validation trace), set it on `model` and return what the checkpoint
    records of it. Each slice's logits come from its whole trace, as inference reads a trace."""
    model.temperature = 1.0
    if settings.calibration == "none":
        return {"method": "none", "temperature": 1.0}
    cuts = training_cuts(settings, prepared)
    logits = [state_log_probabilities(model, x)[cut:]      # log-softmax: logits up to a shift per bin
              for x, cut in zip(prepared.features(prepared.train), cuts)]
    labels = [y[cut:] for y, cut in zip(prepared.train_labels, cuts)]
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    temperature = fit_temperature(logits, labels)
    model.temperature = temperature
    return {"method": "temperature", "temperature": temperature, "share": config.CALIBRATION_SHARE,
            "bins": int(len(labels)), "nll_before": nll(logits, labels),
            "nll_after": nll(logits, labels, temperature)}


DIVERGED_FACTOR = 10.0     # a cross-entropy this many times where it started has not trained


def divergence(train_losses: list[float], num_states: int) -> str | None:
    """Why a run's train losses say it diverged (None: they do not): a loss that is not finite,
    or a last epoch's far above where training starts, its first epoch's or an even guess's
    (log K: an untrained classifier's), whichever is lower. Finite but exploding (5.8e31 from
    1.8) is no success; with a huge --lr even the first epoch's mean has exploded."""
    losses = np.asarray(train_losses, dtype=np.float64)
    if not np.all(np.isfinite(losses)):
        return f"loss {losses[~np.isfinite(losses)][0]}"
    start = min(losses[0], math.log(num_states)) if len(losses) else math.nan
    if len(losses) and losses[-1] > DIVERGED_FACTOR * start:
        return f"loss {losses[-1]:.3g}, where an even guess over {num_states} states scores {math.log(num_states):.3g}"
    return None


def evaluate(settings: JobSettings, model: PowerStateGRU, prepared: Prepared,
             fit_result: FitResult) -> Evaluation:
    """Classifier scores and the synthetic trace of every validation trace (which sees only the
    classifier's probabilities and the training states' watts)."""
    log_probs = [state_log_probabilities(model, x) for x in prepared.features(prepared.val)]
    probs = [np.exp(lp) for lp in log_probs]
    real = [t.power for t in prepared.val]
    drawn = [synthesize(p, prepared.state_means, prepared.state_stds, settings.seed + t.index,
                        return_states=True) for p, t in zip(probs, prepared.val)]
    synthetic = [watts for watts, _ in drawn]
    true_states = prepared.val_labels
    all_probs, all_true = np.concatenate(probs), np.concatenate(true_states)
    scores = metrics.classification_scores(all_true, all_probs.argmax(axis=1), settings.num_states)
    values = {
        "val_f1": scores["val_f1"], "val_precision": scores["val_precision"],
        "val_recall": scores["val_recall"],
        "ece": metrics.expected_calibration_error(all_probs, all_true),
        "autocorr_r2": metrics.autocorr_r2(real, synthetic),
        "transition_mae": metrics.transition_mae(real, synthetic, true_states),
        "final_train_loss": fit_result.train_losses[-1],
        "final_val_loss": metrics.mean_trace_cross_entropy(log_probs, true_states),
        "val_accuracy": scores["val_accuracy"],
        "energy_error_pct": metrics.energy_error_pct(real, synthetic),
        "acf_mae": metrics.acf_mae(real, synthetic),
        # the same classifier's ECE without its temperature (equal to ece when it is 1)
        "ece_uncalibrated": metrics.expected_calibration_error(
            np.exp(log_softmax(np.concatenate(log_probs) * model.temperature, axis=1)), all_true),
        "temperature": model.temperature,
        "train_seconds": fit_result.train_seconds,
        "num_epochs": settings.num_epochs,
        "n_train_traces": len(prepared.train),
        "n_val_traces": len(prepared.val),
    }
    if not np.isfinite(values["energy_error_pct"]) and sum(float(r.sum()) for r in real) == 0:
        print("note: the validation traces draw 0 W in total; energy_error_pct is NaN", file=sys.stderr)
    return Evaluation(log_probs, probs, synthetic, values, [states for _, states in drawn])


def make_checkpoint(settings: JobSettings, model: PowerStateGRU, prepared: Prepared, serving: dict,
                    run_config: dict, run_fingerprint: dict, values: dict, bin_s: float,
                    calibration: dict | None = None) -> Checkpoint:
    """Everything a generator needs, from the training traces only."""
    train_watts = np.concatenate([t.power for t in prepared.train])
    train_states = np.concatenate(prepared.train_labels)
    lows, highs = state_ranges([t.power for t in prepared.train], prepared.train_labels, prepared.states)
    return Checkpoint(
        model_args=dict(model.model_args), model_state=model.state_dict(), norm=prepared.norm,
        states=prepared.states, state_means=prepared.state_means, state_stds=prepared.state_stds,
        state_lows=lows, state_highs=highs,
        configuration={"model": settings.model, "hardware": settings.hardware, "tp": settings.tp,
                       "job_name": settings.job_name, "bin_s": bin_s,
                       "gpu_tdp_w": settings.grid.gpu_tdp_w[settings.hardware]},
        training_watts={"min": float(train_watts.min()), "max": float(train_watts.max()),
                        "mean": float(train_watts.mean()),
                        "state_shares": (np.bincount(train_states, minlength=prepared.states.num_states)
                                         / len(train_states)).tolist(),
                        "residual_lag1": residual_lag1(prepared),
                        # how far the measured watts go past nameplate (model/nameplate.py)
                        "nameplate": above_nameplate([t.power for t in prepared.train], bin_s,
                                                     settings.tp * settings.grid.gpu_tdp_w[settings.hardware])},
        input_tokens=np.concatenate([t.input_tokens for t in prepared.train]),
        output_tokens=np.concatenate([t.output_tokens for t in prepared.train]),
        serving_model=serving, calibration=calibration or {"method": "none", "temperature": 1.0},
        # what traffic the classifier and serving model saw: generation says when it leaves it
        training_traffic=training_ranges([raw_features(t.workload) for t in prepared.train], bin_s),
        settings=run_config, fingerprint=run_fingerprint, metrics=values,
        train_trace_indices=[t.index for t in prepared.train],
        train_trace_sha256=[trace_sha256(t) for t in prepared.train],
        val_trace_indices=[t.index for t in prepared.val])


def residual_lag1(prepared: Prepared) -> float:
    """Lag-1 autocorrelation of the training watts around their state means (length-weighted
    over traces, clipped to [0, 0.99]): how smoothly power moves within a state, which the
    generator's coherent sampling reproduces."""
    values, weights = [], []
    for trace, labels in zip(prepared.train, prepared.train_labels):
        residual = trace.power - prepared.state_means[labels]
        if len(residual) > 2 and np.std(residual[:-1]) > 0 and np.std(residual[1:]) > 0:
            values.append(np.corrcoef(residual[:-1], residual[1:])[0, 1])
            weights.append(len(residual))
    return float(np.clip(np.average(values, weights=weights), 0.0, 0.99)) if values else 0.0


def bin_width(traces: list[Trace]) -> float:
    """The traces' sampling period: the median step of their timestamps."""
    return float(np.median(np.concatenate([np.diff(t.timestamps) for t in traces])))


def save(paths: dict[str, Path], settings: JobSettings, checkpoint: Checkpoint, prepared: Prepared,
         evaluation: Evaluation, fit_result: FitResult, generation_rows: list[list],
         record: dict) -> None:
    """Write the job's files; the metrics file marks a finished job, so it goes last."""
    write_validation_series(paths["synthetic"], prepared.val, evaluation.probs, prepared.val_labels,
                            evaluation.synthetic, prepared.state_means, prepared.state_stds,
                            sampled_states=evaluation.sampled_states,
                            state_centroids=prepared.states.centroids)
    write_csv(paths["losses"], ["epoch", "train_loss"],
              [[i + 1, repr(loss)] for i, loss in enumerate(fit_result.train_losses)])
    write_csv(config.val_losses_path(settings.output_dir, settings.job_name), ["epoch", "val_loss"],
              [[epoch, repr(loss)] for epoch, loss in sorted(fit_result.val_losses.items())])
    write_csv(paths["generation"], list(GENERATION_COLUMNS), generation_rows)
    save_checkpoint(paths["checkpoint"], checkpoint)
    write_json(paths["provenance"], record)
    write_metrics_file(paths["metrics"], evaluation.values)


def run_job(settings: JobSettings, data: PowerData | None = None, tracker: Tracker | None = None) -> JobResult:
    """Train and score one (model, hardware, TP) job and write its files.

    `data` may be a PowerData already loaded (for `--tp -1`). Raises InputError on bad input,
    before anything is written.
    """
    settings.validate()
    started, laps = now(), Laps()
    device = resolve_device(settings.device)
    data = data or load_power_file(settings.data_file)
    prepared = prepare(settings, data)
    paths = output_paths(settings)
    check_output_paths(settings, paths)
    check_writable(paths)
    gru_impl = resolve_gru_impl(settings.gru_impl, device)
    for path in paths.values():
        remove_stale_temp_files(path.parent, path.name)
    job = settings.job_name
    run_fingerprint = fingerprint(settings, file_sha256(settings.data_file), gru_impl)
    run_config = asdict(settings) | {"data_file": config.recorded_path(settings.data_file),
                                     "output_dir": config.recorded_path(settings.output_dir),
                                     "gru_impl": gru_impl, "device": str(device), "job_name": job,
                                     "n_train_traces": len(prepared.train), "n_val_traces": len(prepared.val)}
    own_tracker = tracker is None
    tracker = tracker or Tracker(job, run_config, enabled=settings.use_wandb, run_dir=settings.output_dir,
                                 tags=(settings.model, settings.hardware, f"tp{settings.tp}"))
    laps.mark("data")
    try:
        model, fit_result = train(settings, prepared, device, gru_impl, tracker, paths["state"], run_fingerprint)
        model = model.cpu()
        calibration = calibrate(settings, model, prepared)
        laps.mark("training")
        evaluation = evaluate(settings, model, prepared, fit_result)
        laps.mark("scores")
        bin_s = bin_width(prepared.train)
        serving = fit_serving_model(prepared.train, bin_s)
        evaluation.values |= serving_fidelity(serving, prepared.val)
        laps.mark("serving fit")
        checkpoint = make_checkpoint(settings, model, prepared, serving.to_dict(), run_config,
                                     run_fingerprint, evaluation.values, bin_s, calibration)
        checkpoint.server = server_record(prepared.train, serving)     # settings and the batch cap's evidence
        print(f"serving model batch cap: {serving.max_batch or 'none'} "
              f"({checkpoint.server['batch_cap']['source']})", flush=True)
        generation = score_generation(checkpoint, prepared.val, seeds=config.GENERATION_SEEDS,
                                      base_seed=settings.seed)
        laps.mark("generation")
        tracker.log_final(evaluation.values)
        record = provenance(run_fingerprint, config.recorded_path(settings.data_file), data.simulated,
                            started, now())
        record["training_nameplate"] = checkpoint.training_watts["nameplate"]
        record["server"] = checkpoint.server
        save(paths, settings, checkpoint, prepared, evaluation, fit_result, generation.summary_rows(), record)
        paths["state"].unlink(missing_ok=True)
        paths["state"].with_name(paths["state"].name + DISCARDED_SUFFIX).unlink(missing_ok=True)
    except BaseException:
        if own_tracker:
            tracker.finish(exit_code=1)
        raise
    if own_tracker:
        tracker.finish()
    laps.mark("files")
    return JobResult(job, evaluation.values, {k: str(v) for k, v in paths.items() if k != "state"}, laps.seconds)
