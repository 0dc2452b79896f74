"""An annotated example of configuring a PyTorch experiment with Hydra."""
