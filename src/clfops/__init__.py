"""clfops: train, track, evaluate, promote and serve PyTorch image classifiers from one CLI."""

__version__ = "0.1.0"
