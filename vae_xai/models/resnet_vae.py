"""A VAE with a ResNet18 encoder for one-class anomaly localization (paper Sec. 4.1, MVTec-AD).

Encoder (He et al., 2016, ResNet18 layout, trained from scratch -- no pretrained weights are
used or needed)::

    x (B, S, S, C)
    stem    conv 7x7 s2 (w) + BN + ReLU + maxpool 3x3 s2     -> (B, S/4,  S/4,  w)
    stage1  2 BasicBlocks (w)                                -> (B, S/4,  S/4,  w)
    stage2  2 BasicBlocks (2w), first with stride 2          -> (B, S/8,  S/8,  2w)
    stage3  2 BasicBlocks (4w), first with stride 2          -> (B, S/16, S/16, 4w)
    stage4  2 BasicBlocks (8w), first with stride 2          -> (B, S/32, S/32, 8w)
    fc_latent  Dense(2 * latent_dim) on flatten(stage4)      -> mu, logvar (B, D)

With ``S=256, w=64, D=32`` this is the paper's setting (stage4 is 8x8x512). Every stage is a
submodule named ``stem``, ``stage1`` ... ``stage4`` whose output is the (post-ReLU) feature
map, so any of them can be the attention layer: ``split_encoder(model, variables, x,
layer="stage3", method="encode", train=False)``. ``fc_latent`` consumes ``flatten(stage4)``
directly (row-major over ``h, w, c``), so attention at ``stage4`` can use the exact fast path
(``dense_after="fc_latent"``); with ``head="pool"`` the Dense acts on the global average pool
instead and no fast path applies.

Decoder: ``Dense`` to ``(S/32, S/32, 8w)``, then five ``ConvTranspose 4x4 s2 + BN + ReLU``
upsamplings (``up1`` ... ``up5``; channels ``4w, 2w, w, w/2, w/2``) back to ``S x S`` and a
``Conv 3x3`` (``out``) to ``C`` channels. The decoder outputs ``logits``; the image mean is
``sigmoid(logits)`` (see :func:`vae_xai.train.vae_update_fn` for the Gaussian or
Bernoulli likelihood built on it).

BatchNorm: ``train=True`` normalizes with the batch statistics and updates the running
averages in the ``batch_stats`` collection (call ``apply(..., mutable=["batch_stats"])``);
``train=False`` (the default) uses the running averages, so each example is processed
independently -- required for attention, whose head must act per sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_xai.fast_conv import Conv, ConvTranspose, Impl
from vae_xai.losses import reparameterize

__all__ = [
    "STAGE_NAMES",
    "dense_after",
    "BasicBlock",
    "ResNetDecoder",
    "ResNetEncoder",
    "ResNetStage",
    "ResNetVAE",
    "Stem",
]

STAGE_NAMES: tuple[str, ...] = ("stem", "stage1", "stage2", "stage3", "stage4")


def _batch_norm(train: bool, momentum: float, name: str | None = None, **kwargs: Any) -> nn.Module:
    return nn.BatchNorm(
        use_running_average=not train, momentum=momentum, epsilon=1e-5, name=name, **kwargs
    )


class BasicBlock(nn.Module):
    """ResNet BasicBlock: ``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``.

    The shortcut is a 1x1 conv + BN when the stride or channel count changes, else identity.
    The last BN's scale starts at zero (Goyal et al., 2017), so each block starts as the
    identity, which makes training from scratch on a few hundred images more stable.
    """

    features: int
    strides: int = 1
    bn_momentum: float = 0.9
    padding: PaddingMode = "zeros"
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = (self.strides, self.strides)
        conv = dict(use_bias=False, impl=self.conv_impl)
        pad = _pad(self.padding, 1)
        y = Conv(self.features, (3, 3), strides=s, padding=pad, **conv, name="conv1")(x)
        y = nn.relu(_batch_norm(train, self.bn_momentum, name="bn1")(y))
        y = Conv(self.features, (3, 3), padding=pad, **conv, name="conv2")(y)
        y = _batch_norm(train, self.bn_momentum, name="bn2", scale_init=nn.initializers.zeros)(y)
        if x.shape[-1] != self.features or self.strides != 1:
            x = Conv(self.features, (1, 1), strides=s, **conv, name="proj")(x)
            x = _batch_norm(train, self.bn_momentum, name="proj_bn")(x)
        return nn.relu(x + y)


PaddingMode = Literal["zeros", "reflect"]


def _pad(mode: PaddingMode, amount: int) -> int | str:
    """Conv padding: ``amount`` zeros on each side, or the same amount reflected."""
    if mode == "zeros":
        return amount
    if mode == "reflect":
        return "REFLECT"  # flax pads ((k-1)//2, k//2) by reflection: (1,1) for 3x3, (3,3) for 7x7
    raise ValueError(f'padding must be "zeros" or "reflect"; got {mode!r}')


class Stem(nn.Module):
    """Stem: conv 7x7 s2 + BN + ReLU + maxpool 3x3 s2: ``(B, S, S, C) -> (B, S/4, S/4, w)``."""

    features: int
    bn_momentum: float = 0.9
    padding: PaddingMode = "zeros"
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        pad = _pad(self.padding, 3)
        x = Conv(
            self.features,
            (7, 7),
            strides=(2, 2),
            padding=pad,
            use_bias=False,
            impl=self.conv_impl,
            name="conv",
        )(x)
        x = nn.relu(_batch_norm(train, self.bn_momentum, name="bn")(x))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNetStage(nn.Module):
    """``num_blocks`` BasicBlocks; the first has stride ``strides``. Output: the stage's map."""

    features: int
    num_blocks: int = 2
    strides: int = 1
    bn_momentum: float = 0.9
    padding: PaddingMode = "zeros"
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        for i in range(self.num_blocks):
            x = BasicBlock(
                self.features,
                strides=self.strides if i == 0 else 1,
                bn_momentum=self.bn_momentum,
                padding=self.padding,
                conv_impl=self.conv_impl,
                name=f"block{i + 1}",
            )(x, train)
        return x


class ResNetEncoder(nn.Module):
    """``x (B, S, S, C) -> {"stem", "stage1", ..., "stage4", "mu", "logvar"}`` (see module doc)."""

    width: int = 64
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    latent_dim: int = 32
    head: Literal["flatten", "pool"] = "flatten"
    bn_momentum: float = 0.9
    padding: PaddingMode = "zeros"
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        h = Stem(
            self.width,
            bn_momentum=self.bn_momentum,
            padding=self.padding,
            conv_impl=self.conv_impl,
            name="stem",
        )(x, train)
        out["stem"] = h
        for i, blocks in enumerate(self.stage_sizes):
            h = ResNetStage(
                self.width * 2**i,
                num_blocks=blocks,
                strides=1 if i == 0 else 2,
                bn_momentum=self.bn_momentum,
                padding=self.padding,
                conv_impl=self.conv_impl,
                name=f"stage{i + 1}",
            )(h, train)
            out[f"stage{i + 1}"] = h
        if self.head == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif self.head == "pool":
            h = jnp.mean(h, axis=(1, 2))
        else:
            raise ValueError(f'head must be "flatten" or "pool"; got {self.head!r}')
        stats = nn.Dense(
            2 * self.latent_dim, kernel_init=nn.initializers.lecun_normal(), name="fc_latent"
        )(h)
        out["mu"], out["logvar"] = jnp.split(stats, 2, axis=-1)
        return out


class ResNetDecoder(nn.Module):
    """``z (B, D) -> logits (B, S, S, C)``: Dense, five ConvTranspose+BN+ReLU ups, Conv 3x3."""

    output_shape: tuple[int, int, int]
    width: int = 64
    num_up: int = 5
    bn_momentum: float = 0.9
    conv_impl: Impl = "auto"

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        height, width, out_ch = self.output_shape
        h0, w0 = height // 2**self.num_up, width // 2**self.num_up
        c0 = self.width * 8
        h = nn.Dense(h0 * w0 * c0, name="fc_dec")(z)
        h = nn.relu(_batch_norm(train, self.bn_momentum, name="fc_bn")(h))
        h = h.reshape(h.shape[0], h0, w0, c0)
        chans = [max(self.width * 8 // 2 ** (i + 1), max(self.width // 2, 1)) for i in range(5)]
        for i in range(self.num_up):
            ch = chans[min(i, len(chans) - 1)]
            h = ConvTranspose(
                ch,
                (4, 4),
                strides=(2, 2),
                padding="SAME",
                use_bias=False,
                impl=self.conv_impl,
                name=f"up{i + 1}",
            )(h)
            h = nn.relu(_batch_norm(train, self.bn_momentum, name=f"up{i + 1}_bn")(h))
        return Conv(out_ch, (3, 3), padding=1, impl=self.conv_impl, name="out")(h)


class ResNetVAE(nn.Module):
    """ResNet18-encoder VAE (see the module docstring for the layout and shapes).

    Attributes:
      image_size: ``S``; must be divisible by 32 (five stride-2 steps in the encoder).
      in_channels: ``C`` (3 for RGB).
      width: ``w``, channels of the stem and stage1 (64 is ResNet18; smaller for CPU runs).
      stage_sizes: BasicBlocks per stage ((2, 2, 2, 2) is ResNet18).
      latent_dim: ``D`` (the paper uses 32).
      head: ``"flatten"`` (Dense on flatten(stage4), fast attention path) or ``"pool"``.
      bn_momentum: BatchNorm running-average momentum.
      padding: encoder conv padding, ``"zeros"`` (torchvision's ResNet) or ``"reflect"``. With
        zeros, the stride-2 3x3 convs on even-sized maps only ever read the top/left padding,
        which can leave a positional artifact at the top-left border in attention maps.
      conv_impl: how strided/transposed convolutions run (:mod:`vae_xai.fast_conv`; ``"auto"``:
        fast custom gradients on CPU, XLA's ops elsewhere). Same parameters and outputs.

    ``__call__(x, key=None, train=False)`` returns the encoder dict plus ``z`` (the
    reparameterized sample, or ``mu`` when ``key`` is None) and ``logits`` ``(B, S, S, C)``.
    """

    image_size: int = 256
    in_channels: int = 3
    width: int = 64
    stage_sizes: Sequence[int] = (2, 2, 2, 2)
    latent_dim: int = 32
    head: Literal["flatten", "pool"] = "flatten"
    bn_momentum: float = 0.9
    padding: PaddingMode = "zeros"
    conv_impl: Impl = "auto"

    def setup(self) -> None:
        if len(self.stage_sizes) != 4:
            raise ValueError(f"stage_sizes must have 4 entries; got {self.stage_sizes}")
        if self.image_size % 32:
            raise ValueError(
                f"image_size must be divisible by 32 (5 stride-2 steps); got {self.image_size}"
            )
        self.encoder = ResNetEncoder(
            width=self.width,
            stage_sizes=tuple(self.stage_sizes),
            latent_dim=self.latent_dim,
            head=self.head,
            bn_momentum=self.bn_momentum,
            padding=self.padding,
            conv_impl=self.conv_impl,
        )
        self.decoder = ResNetDecoder(
            output_shape=(self.image_size, self.image_size, self.in_channels),
            width=self.width,
            bn_momentum=self.bn_momentum,
            conv_impl=self.conv_impl,
        )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, self.in_channels)

    def encode(self, x: jax.Array, train: bool = False) -> dict[str, jax.Array]:
        """Encode images to the posterior and the named feature maps.

        Args:
          x: ``(B, S, S, C)``.
          train: BatchNorm in training mode (batch statistics) rather than inference mode.

        Returns:
          ``{"stem", "stage1".."stage4", "mu", "logvar"}``.

        Raises:
          ValueError: ``x`` is not ``(B, S, S, C)``.
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"expected input (B, {', '.join(map(str, self.input_shape))}); got {x.shape}"
            )
        return self.encoder(x, train)

    def decode(self, z: jax.Array, train: bool = False) -> jax.Array:
        """Decode latents to logits.

        Args:
          z: ``(B, D)``.
          train: BatchNorm in training mode rather than inference mode.

        Returns:
          Logits ``(B, S, S, C)``.
        """
        return self.decoder(z, train)

    def __call__(
        self, x: jax.Array, key: jax.Array | None = None, train: bool = False
    ) -> dict[str, Any]:
        out = self.encode(x, train)
        mu, logvar = out["mu"], out["logvar"]
        out["z"] = mu if key is None else reparameterize(mu, logvar, key)
        out["logits"] = self.decode(out["z"], train)
        return out


def dense_after(layer: str, head: str = "flatten") -> str | None:
    """The Dense that consumes ``flatten(layer)`` (for the fast attention path), or None.

    Args:
      layer: an attention layer name.
      head: the encoder head (``"flatten"`` or another head of :class:`ResNetVAE`).

    Returns:
      ``"fc_latent"`` for ``"stage4"`` with the ``"flatten"`` head, else None.
    """
    return "fc_latent" if layer == "stage4" and head == "flatten" else None
