"""Made-up run folders in the measurement campaign's native layout (manifest.json, requests.json,
power.csv, engine.csv): the same file names, keys, headers, units and clocks as the campaign
writes, with values invented here (model/measurements/native_run.py reads them)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

POWER_HEADER = ("timestamp,index,uuid,power.draw [W],clocks.sm [MHz],clocks.mem [MHz],utilization.gpu [%],"
                "utilization.memory [%],memory.used [MiB],temperature.gpu")
ENGINE_HEADER = ("timestamp,num_requests_running,num_requests_waiting,gpu_cache_usage_perc,prompt_tokens_total,"
                 "generation_tokens_total,iteration_tokens_total_sum,iteration_tokens_total_count,"
                 "request_prefill_time_seconds_sum,request_decode_time_seconds_sum,num_preemptions_total,"
                 "prefix_cache_queries_total,prefix_cache_hits_total")
START_EPOCH = 1_900_000_000.0        # 2030: no real campaign ran then
UTC_OFFSET_S = 3600.0                # a zone east of UTC, unlike the campaign's


def fixture_uuid(gpu: int) -> str:
    return f"GPU-00000000-0000-4000-8000-{gpu:012d}"


def fixture_watts(sample: int, gpu: int) -> float:
    """Distinct per GPU and sample, so a sum over the wrong GPUs shows."""
    return round(90.0 + 100.0 * gpu + 3.0 * (sample % 7), 2)


@dataclass
class NativeRun:
    """One made-up run: requests at `arrivals` s after the window opens."""
    arrivals: list = field(default_factory=lambda: [0.4, 1.1, 2.3, 3.0, 4.6, 6.2])
    input_lens: list = field(default_factory=lambda: [700, 1200, 300, 2500, 900, 450])
    output_lens: list = field(default_factory=lambda: [20, 150, 60, 5, 90, 30])
    ttfts: list = field(default_factory=lambda: [0.15, 0.2, 0.1, 0.3, 0.18, 0.12])
    mean_itl: float = 0.02
    window_s: float = 10.0
    start_epoch: float = START_EPOCH
    tp: int = 1
    log_gpus: int = 1                   # GPUs in power.csv
    used: list = field(default_factory=lambda: [0])    # which of them the run used
    itls: str = "scalar"                # "scalar" (the native layout), "list" or "text"
    prefix_caching: bool = False
    max_num_seqs: int = 16
    engine: bool = True
    power_basis: str = "local_wall_time"   # or "unix_epoch": power.csv stamped in UTC

    @property
    def ends(self) -> np.ndarray:
        return (np.array(self.arrivals) + np.array(self.ttfts)
                + self.mean_itl * (np.array(self.output_lens) - 1))

    def write(self, folder: Path, manifest: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if manifest:
            (folder / "manifest.json").write_text(json.dumps(self.manifest(folder.name), indent=2))
        (folder / "requests.json").write_text(json.dumps(self.requests()))
        (folder / "power.csv").write_text(self.power_csv())
        if self.engine:
            (folder / "engine.csv").write_text(self.engine_csv())
        return folder

    def manifest(self, run_id: str) -> dict:
        local = datetime.fromtimestamp(self.start_epoch + UTC_OFFSET_S, timezone.utc)
        return {
            "clock": {"engine_epoch_offset_s": 0.0, "engine_timestamp_basis": "unix_epoch",
                      "local_utc_offset_s": UTC_OFFSET_S, "power_epoch_offset_s": 0.0,
                      "power_timestamp_basis": self.power_basis, "reference_epoch_s": self.start_epoch,
                      "reference_local_iso8601": local.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+01:00",
                      "request_timestamp_basis": "unix_epoch"},
            "hardware": "A100", "manifest_version": 2, "model": "made/up-model",
            "probe": {"prefix_cache": self.prefix_caching, "type": "trace_replay",
                      "window": {"start_epoch": self.start_epoch, "end_epoch": self.start_epoch + self.window_s}},
            "run_id": run_id,
            "server": {"active_gpu_uuids": [fixture_uuid(g) for g in self.used], "enable_chunked_prefill": True,
                       "enable_prefix_caching": self.prefix_caching, "max_model_len": 4096,
                       "max_num_batched_tokens": 2048, "max_num_seqs": self.max_num_seqs},
            "tp": self.tp,
            "versions": {"vllm": "9.9.9"},
        }

    def requests(self) -> dict:
        if self.itls == "scalar":
            itls = [self.mean_itl] * len(self.arrivals)
        elif self.itls == "list":
            itls = [[self.mean_itl] * (n - 1) for n in self.output_lens]
        else:
            itls = ["fast"] * len(self.arrivals)
        return {"input_lens": self.input_lens, "output_lens": self.output_lens, "ttfts": self.ttfts, "itls": itls,
                "request_timestamps": [self.start_epoch + a for a in self.arrivals],
                "cached_prompt_tokens": [0] * len(self.arrivals)}

    def power_csv(self) -> str:
        lines = [POWER_HEADER]
        for s in range(int((self.window_s + 2.0) / 0.25) + 1):
            shift = UTC_OFFSET_S if self.power_basis == "local_wall_time" else 0.0
            local = datetime.fromtimestamp(self.start_epoch - 1.0 + 0.25 * s + shift, timezone.utc)
            stamp = local.strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
            for g in range(self.log_gpus):
                lines.append(f"{stamp},{g},{fixture_uuid(g)},{fixture_watts(s, g):.2f},1400,1500,50,20,70000,45")
        return "\n".join(lines) + "\n"

    def engine_csv(self) -> str:
        """The engine's view of the made-up requests every 0.25 s (epoch seconds): running from
        arrival to the end, counters growing as prompts finish and tokens come out."""
        lines = [ENGINE_HEADER]
        arrivals, ends = np.array(self.arrivals), self.ends
        first_token = arrivals + np.array(self.ttfts)
        for s in range(int(self.window_s / 0.25) + 1):
            t = 0.25 * s
            running = int(np.sum((arrivals <= t) & (t < ends)))
            prompt = 1 + int(np.sum(np.array(self.input_lens)[first_token <= t]))
            made = np.clip(1 + np.floor((t - first_token) / self.mean_itl), 0, np.array(self.output_lens))
            generated = 1 + int(np.sum(made))
            lines.append(f"{self.start_epoch + t},{running}.0,0.0,0.01,{prompt}.0,{generated}.0,"
                         f"{prompt + generated}.0,{generated}.0,0.0,0.0,0.0,0.0,0.0")
        return "\n".join(lines) + "\n"
