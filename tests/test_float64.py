"""float64: with ``jax_enable_x64`` every sampler runs in float64 and agrees with
float32; float32 stays the default.

The float64 run happens in a subprocess so that enabling x64 cannot leak into the
other tests (it is a process-wide JAX flag).
"""

import textwrap

import numpy as np
import pytest

_CODE = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    import rtk_blackjax as rb

    MEAN = np.array([0.5, -1.0])
    COV = np.array([[0.3, 0.1], [0.1, 0.2]])

    def algorithms():
        target = rb.targets.gaussian(MEAN, COV)
        grid = rb.geometric_grid(20, t_min=1e-3)
        return {
            "ddpm": rb.ddpm(target, rb.geometric_grid(40, t_min=1e-3)),
            "rtk-mala": rb.rtk(target, grid, num_inner_steps=1),
            "rtk-uld": rb.rtk(target, grid, rb.uld_inner(step_scale=0.3), 1),
        }

    def stats(num_samples):
        out = {}
        for name, alg in algorithms().items():
            result = rb.sample(jax.random.key(0), alg, num_samples, dim=2)
            samples = np.asarray(result.samples, np.float64)
            out[name] = {
                "mean": samples.mean(axis=0).tolist(),
                "var": samples.var(axis=0).tolist(),
                "dtypes": sorted(
                    {str(v.dtype) for v in jax.tree.leaves(result.info)
                     if np.issubdtype(v.dtype, np.floating)}
                    | {str(result.samples.dtype), str(alg.times.dtype)}
                ),
                "acceptance": np.nanmean(result.acceptance_per_segment()).item()
                if np.isfinite(result.acceptance_per_segment()).any() else None,
            }
        return out

    if __name__ == "__main__":
        print("RESULT" + json.dumps(stats(4000)))
    """
)
_NUM_SAMPLES = 4000


@pytest.mark.slow
def test_float64_runs_in_float64_and_agrees_with_float32(run_python_for_result):
    # float32 in this process (the default), float64 in a subprocess.
    namespace = {"__name__": "float32_reference"}
    exec(_CODE, namespace)
    single = namespace["stats"](_NUM_SAMPLES)
    double = run_python_for_result(_CODE, {"JAX_ENABLE_X64": "1"})
    mean = np.array([0.5, -1.0])
    var = np.array([0.3, 0.2])
    for name in ("ddpm", "rtk-mala", "rtk-uld"):
        assert single[name]["dtypes"] == ["float32"], (name, single[name])
        assert double[name]["dtypes"] == ["float64"], (name, double[name])
        m32, m64 = np.array(single[name]["mean"]), np.array(double[name]["mean"])
        v32, v64 = np.array(single[name]["var"]), np.array(double[name]["var"])
        # Different random numbers (float64 normals use 64 random bits), so the two
        # agree within Monte Carlo error. 4000 independent samples: se(mean) =
        # sqrt(0.3 / 4000) <= 0.0087 and se(var) / var = sqrt(2 / 4000) = 2.2 %;
        # the difference of two runs has sqrt(2) times that. Tolerances are 4.5 se
        # (DDPM's and ULD's biases are the same in both precisions and cancel).
        se_mean, se_var = np.sqrt(var / _NUM_SAMPLES), np.sqrt(2 / _NUM_SAMPLES)
        np.testing.assert_allclose(
            m64, m32, atol=4.5 * np.sqrt(2) * se_mean.max(), err_msg=name
        )
        np.testing.assert_allclose(
            v64, v32, rtol=4.5 * np.sqrt(2) * se_var, err_msg=name
        )
        np.testing.assert_allclose(m64, mean, atol=0.05, err_msg=name)  # + bias
        if name == "rtk-mala":  # exact up to MCMC error (DDPM and ULD are biased)
            np.testing.assert_allclose(
                m64, mean, atol=4.5 * se_mean.max(), err_msg=name
            )
            np.testing.assert_allclose(v64, var, rtol=4.5 * se_var, err_msg=name)
        if single[name]["acceptance"] is not None:
            assert abs(single[name]["acceptance"] - double[name]["acceptance"]) < 0.05
