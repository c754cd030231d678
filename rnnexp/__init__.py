"""rnnexp: config-driven experiments with recurrent neural networks.

Kept free of imports so that `python train.py --help` starts without loading torch.
"""

__version__ = "0.1.0"
