"""The Slurm flags and their settings, shared by run_all_training.py and model.facility.

Kept apart from model/slurm.py (which imports submitit and the launcher) so that a command can
build its parser, and print --help, without loading them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from model.errors import InputError


@dataclass
class SlurmSettings:
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_job: int = 0
    cpus_per_job: int = 4
    mem_gb: float = 16.0
    array_parallelism: int = 16
    setup: list[str] = field(default_factory=list)

    def validate(self) -> None:
        for name, value, low in (("--slurm_time", self.time_min, 1), ("--slurm_gpus_per_job", self.gpus_per_job, 0),
                                 ("--slurm_cpus_per_job", self.cpus_per_job, 1),
                                 ("--slurm_array_parallelism", self.array_parallelism, 1)):
            if value < low:
                raise InputError(f"{name} must be at least {low}, got {value}")
        if not self.mem_gb > 0:
            raise InputError(f"--slurm_mem_gb must be positive, got {self.mem_gb}")
        # each lands on a line of the sbatch script: a line break would add #SBATCH lines
        if self.partition is not None and not re.fullmatch(r"[A-Za-z0-9._,-]+", self.partition):
            raise InputError(f"--slurm_partition {self.partition!r}: a partition name (letters, digits, "
                             "'.', '_', '-'; several separated by ',')")
        for line in self.setup:
            if re.search(r"[\n\r\x00]", line):
                raise InputError(f"--slurm_setup {line!r}: one shell line, without line breaks")


def add_slurm_flags(parser, what: str, gpus: bool = True):
    """The --launcher and --slurm_* flags, for run_all_training.py and model.facility alike;
    `what` says what one array task is. Returns the argument group."""
    slurm = parser.add_argument_group(f"Slurm (--launcher slurm): one job array, one task per {what}")
    slurm.add_argument("--launcher", choices=("local", "slurm"), default="local",
                       help="run here, or submit to Slurm")
    slurm.add_argument("--slurm_partition", default=None, help="default: the cluster's default partition")
    slurm.add_argument("--slurm_time", type=int, default=SlurmSettings.time_min, help="minutes per task")
    if gpus:
        slurm.add_argument("--slurm_gpus_per_job", type=int, default=SlurmSettings.gpus_per_job,
                           help="GPUs per task")
    slurm.add_argument("--slurm_cpus_per_job", type=int, default=SlurmSettings.cpus_per_job,
                       help="CPUs per task, also its torch threads (or worker processes)")
    slurm.add_argument("--slurm_mem_gb", type=float, default=SlurmSettings.mem_gb, help="memory per task, GB")
    slurm.add_argument("--slurm_array_parallelism", type=int, default=SlurmSettings.array_parallelism,
                       help="tasks running at once")
    slurm.add_argument("--slurm_setup", action="append", default=[], metavar="LINE",
                       help="a shell line run before each task, e.g. 'module load cuda' (repeatable)")
    return slurm


def slurm_settings(args) -> SlurmSettings:
    """SlurmSettings from add_slurm_flags' flags (validated when --launcher slurm)."""
    settings = SlurmSettings(args.slurm_partition, args.slurm_time, getattr(args, "slurm_gpus_per_job", 0),
                             args.slurm_cpus_per_job, args.slurm_mem_gb, args.slurm_array_parallelism,
                             list(args.slurm_setup))
    if args.launcher == "slurm":
        settings.validate()
    return settings
