"""mnist-drill: a staged CNN design drill on MNIST. The Python API (`run`, `load_run`, `sweep`, `compare`, `Run`)
lives in mnist_drill.api, imported on first use so that `import mnist_drill` does not import torch."""

import importlib

__version__ = "0.1.0"
__all__ = ["Comparison", "Run", "Sweep", "compare", "load_run", "run", "sweep"]


def __getattr__(name: str):
    if name in __all__:  # by name, not `from . import api`: the package's top layer stays below the API's
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
