"""GLCIC inpainting (Iizuka et al. 2017): options, networks, the three-phase training loop, inference."""
