"""Defaults and paths: the one visible place for every default the pipeline uses."""
from __future__ import annotations

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "model" / "training_data"
RESULTS_DIR = Path("training_results")   # relative to where the user runs the command
DEMO_DIR = Path("demo")
DEMO_DATA_DIR = DEMO_DIR / "training_data"
DEMO_RESULTS_DIR = DEMO_DIR / "training_results"

# Data (docs/design.md, "Data files")
SAMPLE_PERIOD_S = 0.25
NUM_FEATURES = 6
FEATURE_NAMES = ("arrivals", "arrival_input_tokens", "arrival_output_tokens",
                 "active_requests", "prefill_tokens", "decode_tokens")

# States and training (docs/design.md, "Power states" and "Training")
NUM_STATES = 6
KMEANS_N_INIT = 10
KMEANS_RANDOM_STATE = 0
HIDDEN_SIZE = 64
NUM_LAYERS = 2
DROPOUT = 0.2
LR = 1e-4
NUM_EPOCHS = 500
VAL_SPLIT = 0.2
SEED = 0
MAX_SEED = 2**32 - 1   # every command's --seed lies in 0..MAX_SEED (numpy's legacy seed range)
GRAD_CLIP = 1.0
# --gru_impl: auto = the fused C++ kernel on the CPU, cuDNN on CUDA; torch = stock nn.GRU
GRU_IMPLS = ("auto", "fused", "torch")
# --calibration (docs/design.md, "Training"): temperature scaling fitted on the last
# CALIBRATION_SHARE of each training trace's bins, which the weights then do not train on
CALIBRATIONS = ("none", "temperature")
CALIBRATION = "none"
CALIBRATION_SHARE = 0.2
VAL_EVERY = 10
CHECKPOINT_EVERY = 25
DEMO_NUM_EPOCHS = 30
DEMO_LR = 3e-3              # a short demo run needs a larger step than the paper's 500 epochs at 1e-4

# Metrics (docs/design.md, "Metrics")
ACF_NLAGS = 50
MIN_ACF_BINS = 2 * ACF_NLAGS + 1
ECE_BINS = 10
METRIC_ORDER = ("val_f1", "val_precision", "val_recall", "ece", "autocorr_r2",
                "transition_mae", "final_train_loss", "final_val_loss", "val_accuracy")
TABLE_METRICS = ("val_f1", "autocorr_r2", "transition_mae", "ece")
# model_statistics.csv also summarises these (the LaTeX table keeps its four columns)
STATISTICS_METRICS = TABLE_METRICS + ("acf_mae", "energy_error_pct")

# Weights & Biases (docs/design.md, "Weights & Biases")
WANDB_PROJECT = "powertrace-classifier-training"

# Generation (docs/design.md, "Generation")
GENERATION_SEEDS = 5          # seeds per validation trace when a job scores generation
GENERATED_DIR = Path("generated")
# a trace from a requests file runs on this long after the last arrival, so that its last
# requests finish (model.generate and model.facility --drain_s)
DRAIN_S = 60.0
# how the generator draws states: "independent" per bin (as the training table's synthetic
# trace) or "coherent" in time; chosen by held-out fidelity, measured both ways with
# `python -m model.evaluate_generation --sampling` (README, "Generating power traces")
SAMPLINGS = ("independent", "coherent")
GENERATION_SAMPLING = "independent"
# inference on long traces runs in windows of this many bins, each with CONTEXT bins of
# real input on both sides that are computed and dropped (tests/test_generation.py holds
# the windowed probabilities to the whole-sequence ones)
INFERENCE_CONTEXT = 512
# window length and windows per forward pass, by GRU implementation (the batch bounds the
# activations kept in memory): nn.GRU runs a batch's windows side by side and is faster the more
# there are; the fused kernel steps its batch side by side too, six windows filling one block of
# its register-blocked W_hh product (more saved no time in docs/speed.md). 8,192-bin windows
# compute 12 % of context twice, and keep a pass's output (6 x 9,216 bins x 128 floats, 28 MB)
# under the 32 MiB above which glibc's malloc maps every allocation afresh: longer windows
# saved that 6 % and lost more to page faults (python -m model.benchmark --generation)
INFERENCE_WINDOW = {"torch": 4096, "fused": 8192}
INFERENCE_BATCH = {"torch": 96, "fused": 6}

# Output tree (docs/design.md, "Outputs")
METRICS_SUBDIR = "metrics"
CHECKPOINTS_SUBDIR = "checkpoints"
LOGS_SUBDIR = "logs"
SYNTHETIC_SUBDIR = "synthetic"
PLOTS_SUBDIR = "plots"
SUMMARY_FILE = "jobs_summary.json"
STATISTICS_FILE = "model_statistics.csv"
TABLE_FILE = "table_summary.tex"
ALL_JOBS_FILE = "all_jobs.csv"
GENERATION_STATISTICS_FILE = "generation_statistics.csv"
GENERATION_TABLE_FILE = "generation_fidelity.tex"


# Each job's files: kind -> (folder in the results folder, what follows the job's name)
JOB_FILES = {
    "metrics": (METRICS_SUBDIR, "_metrics.csv"),         # metric,value; written last: marks a finished job
    "losses": (METRICS_SUBDIR, "_losses.csv"),           # epoch,train_loss
    # validation loss at the epochs it was computed (every VAL_EVERY and the last), beside the
    # train losses, whose two-column file stays as it is
    "val_losses": (METRICS_SUBDIR, "_val_losses.csv"),
    "generation": (METRICS_SUBDIR, "_generation.csv"),   # generation on the validation traces, ours and baselines
    "provenance": (METRICS_SUBDIR, "_provenance.json"),  # settings, commit, packages, machine, data, times
    "checkpoint": (CHECKPOINTS_SUBDIR, ".pt"),
    "state": (CHECKPOINTS_SUBDIR, ".state.pt"),          # training state for --resume
    "synthetic": (SYNTHETIC_SUBDIR, ".npz"),             # validation traces for the figures
    "log": (LOGS_SUBDIR, ".log"),
}


def job_file(output_dir: Path | str, kind: str, job: str) -> Path:
    subdir, suffix = JOB_FILES[kind]
    return Path(output_dir) / subdir / f"{job}{suffix}"


def _job_file_of(kind: str):
    def path(output_dir: Path | str, job: str) -> Path:
        return job_file(output_dir, kind, job)
    path.__name__ = path.__qualname__ = f"{kind}_path"
    return path


metrics_path, losses_path, val_losses_path, generation_path, provenance_path = (
    _job_file_of(k) for k in ("metrics", "losses", "val_losses", "generation", "provenance"))
checkpoint_path, state_path, synthetic_path, log_path = (
    _job_file_of(k) for k in ("checkpoint", "state", "synthetic", "log"))


def recorded_path(path: Path | str, base: Path | str | None = None) -> str:
    """A path as an output file records it: relative to `base` (the folder the output belongs
    to) when it lies inside it, else relative to the project root when inside that, else as
    given. Absolute paths would tie results to the machine and the user that made them."""
    resolved = Path(path).absolute()
    for root in ([Path(base).absolute()] if base is not None else []) + [PROJECT_ROOT]:
        try:
            return str(resolved.relative_to(root))
        except ValueError:
            continue
    return str(path)
