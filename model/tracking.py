"""Weights & Biases logging (docs/design.md, "Weights & Biases") with the real client.

- `--no_wandb` or WANDB_MODE=disabled: no run at all.
- WANDB_MODE=online/offline: honoured.
- Otherwise online when credentials exist (WANDB_API_KEY or a `wandb login` netrc entry),
  else offline, with a one-line notice of where the run went and how to upload it.
wandb never prompts: the mode is decided before wandb.init is called.
"""
from __future__ import annotations

import netrc
import os
import socket
import sys
from urllib.parse import urlparse

from model import config


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(enabled: bool) -> str:
    """'disabled', 'offline' or 'online', decided without asking the user anything."""
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if not enabled or env_mode in ("disabled", "dryrun_disabled"):
        return "disabled"
    if env_mode in ("online", "offline"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if _has_credentials() else "offline"


def offline_reason(mode: str) -> str:
    """Why an online run goes offline after all ('' when it stays online): its server cannot be
    reached, found in seconds rather than after wandb's own long wait."""
    if mode == "online" and not _server_reachable():
        return f"credentials found but {_server_url()} cannot be reached"
    return ""


REACH_TIMEOUT_S = 3.0     # wandb itself waits ~90 s before giving up on a server it cannot reach
INIT_TIMEOUT_S = 30.0


def _server_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def _server_reachable() -> bool:
    """Whether a TCP connection to the W&B server opens within REACH_TIMEOUT_S."""
    url = urlparse(_server_url())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=REACH_TIMEOUT_S):
            return True
    except (OSError, ValueError, TypeError):
        return False


class Tracker:
    """A wandb run, or nothing at all when disabled.

    Runs are written under WANDB_DIR, else under `run_dir` (the job's output folder).
    """

    def __init__(self, name: str, run_config: dict, enabled: bool = True, run_dir: str | None = None,
                 tags: tuple[str, ...] = ()):
        self.mode = wandb_mode(enabled)
        self.run = None
        if self.mode == "disabled":
            return
        why = "no credentials"
        if self.mode == "online" and (unreachable := offline_reason(self.mode)):
            self.mode, why = "offline", unreachable
        import wandb

        def init(mode):
            return wandb.init(project=os.environ.get("WANDB_PROJECT", config.WANDB_PROJECT),
                              name=os.environ.get("WANDB_NAME", name), config=run_config,
                              mode=mode, reinit="finish_previous", tags=list(tags),
                              # one group per grid run (the launcher sets WANDB_RUN_GROUP), so
                              # grids can be told apart and compared
                              group=os.environ.get("WANDB_RUN_GROUP") or None,
                              dir=os.environ.get("WANDB_DIR") or run_dir,
                              settings=wandb.Settings(silent=True, console="off",
                                                      init_timeout=INIT_TIMEOUT_S))
        try:
            self.run = init(self.mode)
        except Exception as err:
            if self.mode != "online":
                raise
            # a server that answers but does not start the run must not cost the job
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            self.mode, why = "offline", f"the online run did not start ({reason})"
            self.run = init(self.mode)
        if self.mode == "offline":
            run_dir = os.path.dirname(self.run.dir)
            print(f"wandb: {why}, logging offline to {run_dir} "
                  f"(upload later with: wandb sync {run_dir})", file=sys.stderr, flush=True)

    def log(self, values: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def log_final(self, metrics: dict) -> None:
        if self.run is not None:
            final = {f"final_metrics/{k}": v for k, v in metrics.items()}
            self.run.log(final)
            self.run.summary.update(final)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
