"""mnist-drill: a staged CNN design drill on MNIST."""

__version__ = "0.1.0"
