"""Sharding particles across devices gives the single-device samples.

Runs in a subprocess: ``--xla_force_host_platform_device_count=4`` must be set
before JAX initialises, and it must not leak into the other tests.
"""

import os
import textwrap

import pytest

_CODE = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    import rtk_blackjax as rb

    assert len(jax.devices()) == 4, jax.devices()
    d0, d1, d2, d3 = jax.devices()
    target = rb.targets.random_mog(0, 3, num_components=3)
    algorithms = {
        "rtk": rb.rtk(target, rb.geometric_grid(4), num_inner_steps=1),
        "ddpm": rb.ddpm(target, rb.geometric_grid(6)),
    }
    key = jax.random.key(0)
    out = {}
    for name, alg in algorithms.items():
        def run(**kw):
            return rb.sample(key, alg, 10, dim=3, on_nonfinite="mask", **kw)

        one = run(devices=[d0], chunk_size=3)
        four = run(chunk_size=3)  # default: all 4 local devices
        # Multi-host recipe, emulated: two "processes" with two devices each take
        # consecutive index ranges.
        first = rb.sample(key, alg, 6, dim=3, devices=[d0, d1], chunk_size=3)
        second = rb.sample(
            key, alg, 4, dim=3, devices=[d2, d3], chunk_size=3, start_index=6
        )
        union = np.concatenate([first.samples, second.samples])
        whole_one = run(devices=[d0])
        whole_four = run()  # 10 particles padded to 12, 3 per device
        out[name] = {
            "chunked_equal": bool(np.array_equal(one.samples, four.samples)),
            "info_equal": all(
                np.array_equal(a, b)
                for a, b in zip(jax.tree.leaves(one.info), jax.tree.leaves(four.info))
            ),
            "hosts_equal": bool(np.array_equal(union, one.samples)),
            "whole_max_diff": float(
                np.max(np.abs(np.asarray(whole_one.samples) - whole_four.samples))
            ),
            "whole_shape": list(whole_four.samples.shape),
            "info_shape": list(whole_four.info.time.shape),
            "nfe": [whole_one.num_evaluations, whole_four.num_evaluations],
        }
    sharded = rb.sample(key, algorithms["ddpm"], 8, dim=3)
    out["sharded_devices"] = len(sharded.samples.sharding.device_set)
    print("RESULT" + json.dumps(out))
    """
)


@pytest.mark.slow
def test_four_devices_match_one_device(run_python_for_result):
    flags = os.environ.get("XLA_FLAGS", "")
    flags += " --xla_force_host_platform_device_count=4"
    out = run_python_for_result(_CODE, {"XLA_FLAGS": flags.strip()})
    assert out["sharded_devices"] == 4
    for name in ("rtk", "ddpm"):
        res = out[name]
        # Same chunk shape per device: bit-identical, whatever the device count.
        assert res["chunked_equal"] and res["info_equal"], (name, res)
        assert res["hosts_equal"], (name, res)
        # One batch of 10 vs 4 x 3: other shapes, equal up to float rounding.
        assert res["whole_max_diff"] < 1e-4, (name, res)
        assert res["whole_shape"] == [10, 3] and res["info_shape"][1] == 10
        assert res["nfe"][0] == res["nfe"][1]
