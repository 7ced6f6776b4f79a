"""mnist-drill: a staged CNN design drill on MNIST.

From Python (a notebook): `mnist_drill.run("step3", overrides={"model.dropout": 0.05})`, `load_run(path)`,
`sweep(...)`, `compare(...)` and the `Run` they return live in mnist_drill.api, imported on first use so that
`import mnist_drill` (and the CLI's `--version`) does not import torch.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["Comparison", "Run", "Sweep", "compare", "load_run", "run", "sweep"]


def __getattr__(name: str):
    if name in __all__:  # by name, not `from . import api`: the package's top layer stays below the API's
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
