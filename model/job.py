"""One training job: data -> states -> features -> BiGRU -> synthetic trace -> metrics -> files.

    from model.job import JobSettings, run_job
    run_job(JobSettings(data_file="x.npz", model="llama-3-8b", hardware="a100", tp=1))

`python -m model.train_entry` is the command-line front end of this module.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from model import config
from model.classifiers import metrics
from model.classifiers.gru import GRU_IMPLS, PowerStateGRU, resolve_gru_impl
from model.classifiers.synthetic import synthesize
from model.classifiers.train import fit
from model.data import DataError, Trace, load_power_file
from model.errors import InputError
from model.features import FeatureNorm, raw_features, split_traces
from model.grid import HARDWARE, MODELS_BY_KEY, job_name
from model.outputs import atomic_path, file_sha256, remove_stale_temp_files, write_csv, write_npz
from model.states import fit_power_states, state_watts
from model.tracking import Tracker

EXTRA_METRICS = ("energy_error_pct", "train_seconds", "num_epochs", "n_train_traces", "n_val_traces")
# Settings that change the result; a finished job is reused only when all of them match.
FINGERPRINT_KEYS = ("model", "hardware", "tp", "lr", "num_epochs", "hidden_size", "num_states",
                    "val_split", "seed", "gru_impl")


@dataclass
class JobSettings:
    data_file: str
    model: str
    hardware: str
    tp: int
    lr: float = config.LR
    num_epochs: int = config.NUM_EPOCHS
    hidden_size: int = config.HIDDEN_SIZE
    num_states: int = config.NUM_STATES
    val_split: float = config.VAL_SPLIT
    seed: int = config.SEED
    device: str = "auto"
    gru_impl: str = "auto"
    output_dir: str = str(config.RESULTS_DIR)
    weights_path: str | None = None
    use_wandb: bool = True
    val_every: int = config.VAL_EVERY
    checkpoint_every: int = config.CHECKPOINT_EVERY
    resume: bool = False
    progress: bool = True

    @property
    def job_name(self) -> str:
        return job_name(self.model, self.hardware, self.tp)

    def validate(self) -> None:
        if self.model not in MODELS_BY_KEY:
            raise InputError(f"--model {self.model!r} is not a model of the grid; known: "
                             f"{', '.join(MODELS_BY_KEY)}")
        if self.hardware not in HARDWARE:
            raise InputError(f"--hardware_accelerator {self.hardware!r}: known: {', '.join(HARDWARE)}")
        checks = [(self.lr > 0 and np.isfinite(self.lr), f"--lr must be positive, got {self.lr}"),
                  (self.num_epochs >= 1, f"--num_epochs must be at least 1, got {self.num_epochs}"),
                  (0 < self.val_split < 1, f"--val_split must lie in (0, 1), got {self.val_split}"),
                  (self.hidden_size >= 1, f"--hidden_size must be at least 1, got {self.hidden_size}"),
                  (self.num_states >= 2, f"--num_states must be at least 2, got {self.num_states}"),
                  (self.val_every >= 1, f"--val_every must be at least 1, got {self.val_every}"),
                  (self.checkpoint_every >= 1,
                   f"--checkpoint_every must be at least 1, got {self.checkpoint_every}"),
                  (self.gru_impl in GRU_IMPLS, f"--gru_impl must be one of {', '.join(GRU_IMPLS)}")]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


@dataclass
class JobResult:
    job: str
    metrics: dict[str, float]
    paths: dict[str, str] = field(default_factory=dict)


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise InputError(f"--device {requested!r} is not a torch device (try cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {requested}: CUDA is not available on this machine")
    return device


def fingerprint(settings: JobSettings, data_sha256: str, gru_impl: str) -> dict:
    values = asdict(settings) | {"gru_impl": gru_impl}
    return {key: values[key] for key in FINGERPRINT_KEYS} | {"data_sha256": data_sha256}


def output_paths(settings: JobSettings) -> dict[str, Path]:
    job, out = settings.job_name, settings.output_dir
    weights = settings.weights_path.replace("{job}", job) if settings.weights_path else None
    return {"metrics": config.metrics_path(out, job), "losses": config.losses_path(out, job),
            "checkpoint": Path(weights) if weights else config.checkpoint_path(out, job),
            "synthetic": config.synthetic_path(out, job), "state": config.state_path(out, job)}


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


def select_traces(data_path: str, traces: list[Trace], tp: int) -> list[Trace]:
    short = [t for t in traces if len(t) < config.MIN_ACF_BINS]
    if short:
        raise DataError(data_path, f"trace {short[0].index} (TP {tp}) has {len(short[0])} bins; "
                                   f"the autocorrelation metric needs at least {config.MIN_ACF_BINS}")
    return traces


def validation_series(val: list[Trace], probabilities: list[np.ndarray], true_states: list[np.ndarray],
                      synthetic: list[np.ndarray], state_means: np.ndarray,
                      state_stds: np.ndarray) -> dict[str, np.ndarray]:
    """What the figures show, for every validation trace: the per-bin series concatenated in
    trace order, `trace_lengths` to split them again."""
    return {
        "trace_indices": np.array([t.index for t in val], dtype=np.int64),
        "trace_lengths": np.array([len(t) for t in val], dtype=np.int64),
        "time_s": np.concatenate([t.timestamps - t.timestamps[0] for t in val]),
        "real_watts": np.concatenate([t.power for t in val]),
        "synthetic_watts": np.concatenate(synthetic),
        "true_states": np.concatenate(true_states).astype(np.int64),
        "predicted_states": np.concatenate([p.argmax(axis=1) for p in probabilities]).astype(np.int64),
        "probabilities": np.concatenate(probabilities),
        "state_means": np.asarray(state_means, dtype=float),
        "state_stds": np.asarray(state_stds, dtype=float),
    }


def run_job(settings: JobSettings, data=None, tracker: Tracker | None = None) -> JobResult:
    """Train and score one (model, hardware, TP) job and write its files.

    `data` may be a PowerData already loaded (for `--tp -1`). Raises InputError on bad input,
    before anything is written.
    """
    settings.validate()
    device = resolve_device(settings.device)
    data = data or load_power_file(settings.data_file)
    traces = select_traces(settings.data_file, data.traces_for_tp(settings.tp), settings.tp)
    train, val = split_traces(traces, settings.val_split, settings.seed)
    paths = output_paths(settings)
    check_writable(paths)
    gru_impl = resolve_gru_impl(settings.gru_impl, device)
    for path in paths.values():
        remove_stale_temp_files(path.parent, path.name)
    job = settings.job_name

    states = fit_power_states(traces, settings.num_states)
    labels = {t.index: states.label(t.power) for t in traces}
    state_means, state_stds = state_watts([t.power for t in train], [labels[t.index] for t in train], states)
    norm = FeatureNorm.fit([raw_features(t) for t in train])

    def tensors(subset: list[Trace]):
        xs = [torch.from_numpy(norm.apply(raw_features(t))).unsqueeze(0).to(device) for t in subset]
        ys = [torch.from_numpy(labels[t.index]).long().to(device) for t in subset]
        return xs, ys

    train_x, train_y = tensors(train)
    val_x, val_y = tensors(val)

    torch.manual_seed(settings.seed)
    model = PowerStateGRU(settings.num_states, settings.hidden_size, gru_impl=gru_impl).to(device)
    run_fingerprint = fingerprint(settings, file_sha256(settings.data_file), gru_impl)
    run_config = asdict(settings) | {"gru_impl": gru_impl, "device": str(device), "job_name": job,
                                     "n_train_traces": len(train), "n_val_traces": len(val)}
    own_tracker = tracker is None
    tracker = tracker or Tracker(job, run_config, enabled=settings.use_wandb, run_dir=settings.output_dir)
    try:
        result = fit(model, train_x, train_y, val_x, val_y, lr=settings.lr,
                     num_epochs=settings.num_epochs, seed=settings.seed, val_every=settings.val_every,
                     tracker=tracker, state_file=paths["state"],
                     checkpoint_every=settings.checkpoint_every, resume=settings.resume,
                     fingerprint=run_fingerprint, progress=settings.progress)

        model.eval()
        with torch.no_grad():
            logits = [model(x)[0].double().cpu() for x in val_x]
        log_probs = [torch.log_softmax(z, dim=1).numpy() for z in logits]
        probs = [np.exp(lp) for lp in log_probs]
        true_states = [labels[t.index] for t in val]
        real = [t.power for t in val]
        synthetic = [synthesize(p, state_means, state_stds, settings.seed + t.index)
                     for p, t in zip(probs, val)]
        all_probs, all_true = np.concatenate(probs), np.concatenate(true_states)
        scores = metrics.classification_scores(all_true, all_probs.argmax(axis=1), settings.num_states)
        values = {
            "val_f1": scores["val_f1"], "val_precision": scores["val_precision"],
            "val_recall": scores["val_recall"],
            "ece": metrics.expected_calibration_error(all_probs, all_true),
            "autocorr_r2": metrics.autocorr_r2(real, synthetic),
            "transition_mae": metrics.transition_mae(real, synthetic, true_states),
            "final_train_loss": result.train_losses[-1],
            "final_val_loss": metrics.mean_trace_cross_entropy(log_probs, true_states),
            "val_accuracy": scores["val_accuracy"],
            "energy_error_pct": metrics.energy_error_pct(real, synthetic),
            "train_seconds": result.train_seconds,
            "num_epochs": settings.num_epochs,
            "n_train_traces": len(train),
            "n_val_traces": len(val),
        }
        tracker.log_final(values)

        write_npz(paths["synthetic"], validation_series(val, probs, true_states, synthetic,
                                                        state_means, state_stds))

        # The metrics file marks a finished job, so it is written last.
        write_csv(paths["losses"], ["epoch", "train_loss"],
                  [[i + 1, repr(loss)] for i, loss in enumerate(result.train_losses)])
        checkpoint = {
            "model_state": model.state_dict(), "gru_state": model.gru.state_dict(),
            "feature_norm": norm.to_dict(), "state_centroids": states.centroids.tolist(),
            "state_means": state_means.tolist(), "state_stds": state_stds.tolist(),
            "settings": run_config, "fingerprint": run_fingerprint, "metrics": values,
            "train_trace_indices": [t.index for t in train], "val_trace_indices": [t.index for t in val],
        }
        with atomic_path(paths["checkpoint"]) as tmp:
            torch.save(checkpoint, tmp)
        write_csv(paths["metrics"], ["metric", "value"], [[k, repr(float(v))] for k, v in values.items()])
        paths["state"].unlink(missing_ok=True)
    except BaseException:
        if own_tracker:
            tracker.finish(exit_code=1)
        raise
    if own_tracker:
        tracker.finish()
    return JobResult(job, values, {k: str(v) for k, v in paths.items() if k != "state"})
