"""DCGAN (Radford et al. 2015): options, networks, the training loop, sampling."""
