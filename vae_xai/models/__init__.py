"""VAE models. Each returns its named intermediates (feature maps, ``mu``, ``logvar``, ``z``)."""

from vae_xai.models.conv_vae import ConvVAE, dsprites_vae, mnist_vae

__all__ = ["ConvVAE", "dsprites_vae", "mnist_vae"]
