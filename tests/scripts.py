"""Import a script of ``benchmarks/`` as a module (the scripts are not a package)."""

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_benchmark_script(filename: str, module_name: str) -> ModuleType:
    """``benchmarks/<filename>`` loaded under ``module_name``."""
    spec = importlib.util.spec_from_file_location(
        module_name, ROOT / "benchmarks" / filename
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
