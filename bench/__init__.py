"""genbench: one harness that trains generative-model families to the same budget and measures them alike."""

__version__ = "0.1.0"
