"""Pure PyTorch models, masks, losses, training loops and metrics for the GAN pipeline."""
