"""Package layout: the library never imports the benchmarks (only the CLI does)."""

import ast
from pathlib import Path

import rtk_blackjax

PACKAGE = Path(rtk_blackjax.__file__).parent
BENCHMARKS = "rtk_blackjax.benchmarks"


def _library_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "benchmarks" or relative.name == "__main__.py":
            continue
        yield path, relative


def _imported_modules(path: Path, relative: Path):
    """Absolute names of every module ``path`` imports (inside functions too)."""
    package = ["rtk_blackjax", *relative.parent.parts]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module
            # `from rtk_blackjax import benchmarks` names the subpackage as an alias
            yield from (f"{module}.{alias.name}" for alias in node.names)


def test_no_library_module_imports_the_benchmarks():
    offenders = []
    for path, relative in _library_files():
        for name in _imported_modules(path, relative):
            if name == BENCHMARKS or name.startswith(BENCHMARKS + "."):
                offenders.append(f"{relative}: {name}")
    assert not offenders, offenders


def test_importing_and_using_the_library_loads_no_benchmark(run_python_for_result):
    names = [
        ".".join(["rtk_blackjax", *relative.with_suffix("").parts]).removesuffix(
            ".__init__"
        )
        for _, relative in _library_files()
    ]
    code = f"""
import importlib, json, sys
import jax.numpy as jnp
import rtk_blackjax as rb

# every library module (pkgutil.walk_packages would import the benchmarks package)
names = {names!r}
for name in names:
    importlib.import_module(name)
# DiffusionPrior's default sampler needs the NFE policy, not the benchmarks
from rtk_blackjax.posterior import DiffusionPrior
DiffusionPrior(rb.targets.gaussian(jnp.zeros(2), 1.0), nfe=25)
loaded_by_library = sorted(m for m in sys.modules if m.startswith("{BENCHMARKS}"))
# the CLI builds only the asked-for subcommand's flags: `demo` needs no benchmark
# module to parse, `bench` needs the sampling benchmark only
from rtk_blackjax.__main__ import _build_parser
_build_parser(["demo"]).parse_args(["demo", "--num-samples", "10"])
loaded_by_demo_parser = sorted(m for m in sys.modules if m.startswith("{BENCHMARKS}"))
_build_parser(["bench"]).parse_args(["bench", "--method", "ddpm"])
loaded_by_bench_parser = sorted(m for m in sys.modules if m.startswith("{BENCHMARKS}"))
print("RESULT" + json.dumps(dict(
    num_modules=len(names),
    library=loaded_by_library,
    demo=loaded_by_demo_parser,
    bench=loaded_by_bench_parser,
)))
"""
    out = run_python_for_result(code, {})
    assert out["num_modules"] > 20
    assert out["library"] == []
    assert out["demo"] == []
    assert out["bench"] == [BENCHMARKS, f"{BENCHMARKS}.sampling"]
