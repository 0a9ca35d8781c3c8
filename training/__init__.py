"""PyTorch GANs, data sets, training loop, checkpoints and evaluation."""
