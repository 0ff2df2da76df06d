"""benchmarks/gpu_throughput.py: its core runs on a tiny configuration on the CPU.

The full benchmark is sized for a GPU; here DDPM on a tiny bfloat16 MLP score
network (d = 4, width 16) runs 256 particles in two chunks at NFE 10, enough to
see that the records are well formed (timings, overhead ratio against the bare
score calls, the bfloat16 record, the bfloat16-state record or its error) and that bad arguments are refused by name. The
mixture workload runs the same ``_measure``; building the network's first eager
ops dominates the test's time on a loaded CPU, so only one workload runs.
"""

import json
import math

import pytest
from scripts import load_benchmark_script


@pytest.fixture(scope="module")
def script():
    return load_benchmark_script("gpu_throughput.py", "gpu_throughput_script")


_TINY = dict(
    mixture_dim=4,
    mixture_sizes=(),
    mlp_dim=4,
    mlp_width=16,
    mlp_depth=1,
    mlp_sizes=(256,),
    dtypes=("bfloat16", "bfloat16-state"),
    methods=("ddpm",),
    mlp_methods=("ddpm",),
    scaling_methods=(),
    nfe=10,
    repeats=1,
    chunk_size=128,  # two chunks: the chunked path and its bare-cost scaling
    log=lambda msg: None,
)


def test_tiny_run_gives_well_formed_records(script):
    result = script.run(**_TINY)
    json.dumps(result)  # JSON-ready
    meta = result["meta"]
    assert meta["platform"] == "cpu" and meta["prng"] == "threefry"
    assert meta["jax_version"] and meta["device_kind"]
    records = result["records"]
    assert [(r["workload"], r["dtype"]) for r in records] == [
        ("mlp", "bfloat16"),
        ("mlp", "bfloat16-state"),
    ]
    for r in records:
        if "error" in r:  # a sampler that cannot run is recorded, not raised
            # (a bfloat16 state is promoted by the float32 grid in jax 0.10)
            assert r["dtype"] == "bfloat16-state" and "bfloat16" in r["error"]
            continue
        assert r["num_samples"] == 256 and r["num_chunks"] == 2
        assert r["nfe"] <= 10
        assert r["samples_per_s"] > 0 and math.isfinite(r["samples_per_s"])
        assert r["bare_s"] > 0 and r["compile_s"] >= 0
        # Loose: sub-millisecond timings on a loaded CPU; the sampler makes at
        # least the bare loop's score calls, so it is not 100x faster than them.
        assert math.isfinite(r["overhead_ratio"]) and r["overhead_ratio"] > 0.01
        assert r["finite_fraction"] == 1.0


@pytest.mark.parametrize(
    "override, match",
    [
        (dict(methods=("rtk-nuts",)), "methods: unknown"),
        (dict(dtypes=("float16",)), "dtypes: unknown"),
        (dict(mlp_sizes=(0,)), "mlp_sizes must be positive"),
        (dict(prng="philox"), "prng: unknown"),
    ],
)
def test_bad_arguments_are_refused_by_name(script, override, match):
    with pytest.raises(ValueError, match=match):
        script.run(**{**_TINY, **override})


def test_command_line_refuses_an_unknown_prng(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--quick", "--prng", "philox"])
    assert "--prng" in capsys.readouterr().err
