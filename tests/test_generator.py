"""model/generation/generator.py on made-up checkpoints (no training): what it draws."""
from __future__ import annotations

import numpy as np
import pytest

from model import config
from model.checkpoint import load_checkpoint
from model.generation.generator import Generator
from model.generation.requests_file import poisson_requests
from test_checkpoint import tiny_checkpoint


@pytest.mark.parametrize("sampling", config.SAMPLINGS)
def test_a_long_generated_trace_stays_within_the_watts_training_measured(tmp_path, sampling):
    # the lowest and highest states sit near the idle floor and the peak: unbounded Gaussian
    # draws would cross 90 W and 310 W in a third of their bins
    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "c.pt", state_stds=np.array([25.0, 25.0, 25.0]),
                                           state_lows=np.array([90.0, 150.0, 250.0]),
                                           state_highs=np.array([150.0, 250.0, 310.0])))
    gen = Generator(ckpt, gru_impl="torch")
    requests = poisson_requests(2.0, 5000.0, (ckpt.input_tokens, ckpt.output_tokens), seed=0)
    trace = gen.generate(requests, n_bins=20_000, seed=0, sampling=sampling)
    assert trace.watts.min() >= ckpt.training_watts["min"] and trace.watts.max() <= ckpt.training_watts["max"]
    for state in range(3):      # and each state within what it drew in training
        drawn = trace.watts[trace.states == state]
        assert len(drawn) and drawn.min() >= ckpt.state_lows[state] and drawn.max() <= ckpt.state_highs[state]
    # bounding clips only the tails: most bins keep their own draw
    at_a_bound = np.isin(trace.watts, np.concatenate([ckpt.state_lows, ckpt.state_highs]))
    assert 0 < at_a_bound.mean() < 0.7


def test_a_warm_ups_requests_are_not_counted_as_the_periods(tmp_path):
    """A server that finishes one request in 100 s (a 1 s step, batch of one): the warm-up's 10
    requests and the period's 2 are all unfinished at the end, but only the period's 2 are the
    generated period's traffic (counting the warm-up's read '12 of 2 requests')."""
    from model.generation.generator import Requests
    from model.generation.serving import ServingModel
    from test_generate import _ranges
    path = tiny_checkpoint(tmp_path / "slow.pt", training_traffic=_ranges(1e9),
                           serving_model=ServingModel(1000.0, 1.0, 0.0, max_batch=1).to_dict())
    gen = Generator(load_checkpoint(path))
    arrivals = np.array([float(i) for i in range(10)] + [12.0, 15.0])      # warm-up: the first 10 s
    requests = Requests(arrivals, np.full(12, 10.0), np.full(12, 100.0))
    [trace] = gen.generate_many([requests], 80, [0], warmup_bins=40)
    assert len(trace.watts) == 40
    assert (trace.traffic["requests"], trace.traffic["unfinished_requests"]) == (2, 2)
    [whole] = gen.generate_many([requests], 80, [0])
    assert (whole.traffic["requests"], whole.traffic["unfinished_requests"]) == (12, 12)
