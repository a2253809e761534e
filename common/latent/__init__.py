"""Latent diffusion: an autoencoder (stage 1) whose latents the one denoiser is trained on (stage 2)."""
