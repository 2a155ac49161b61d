"""vae_xai: gradient-based attention maps for variational autoencoders in JAX/Flax.

Reference implementation of Liu et al., "Towards Visually Explaining Variational
Autoencoders" (CVPR 2020): per-latent Grad-CAM maps, anomaly attention for one-class VAEs,
localization metrics and the attention disentanglement loss.
"""

__version__ = "0.1.0"
