"""The twins' full training steps: forward, loss, backward and the optimizer update.

:class:`VAEStep` mirrors ``vae_xai.train.vae_update_fn`` and :class:`FactorVAEStep`
``vae_xai.disentangle.factor_vae_loss_fn`` with ``factor_vae_optimizer()``: the same loss terms,
reductions, optimizer and hyperparameters. Batches are given NHWC (as our pipelines make them)
and converted once to NCHW when the step is built.

Randomness cannot match across frameworks, so :meth:`TorchStep.loss_and_grads` and
:meth:`TorchStep.step` take the reparameterization noise ``eps`` ``(B, D)`` (and for the
FactorVAE steps ``eps_disc`` ``(B, D)`` and the per-dim permutation ``perm`` ``(B, D)``, with
``z_perm[b, d] = z_disc[perm[b, d], d]``, i.e. ``perms.T`` of
:func:`vae_xai.losses.permute_dims`) as explicit inputs; when omitted they are drawn with torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .layers import FlaxTwin
from .models import ConvVAE, FactorDiscriminator
from .weights import Leaf, collect_leaves, flatten_flax, flax_init, load_leaves, to_flax_layout


def _nchw(a: Any) -> torch.Tensor:
    """An NHWC (or NHW) image batch as a contiguous float32 NCHW tensor."""
    a = np.asarray(a, np.float32)
    if a.ndim == 3:
        a = a[..., None]
    return torch.from_numpy(np.array(a.transpose(0, 3, 1, 2), order="C"))


def _as_tensor(a: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An array (numpy, jax or torch) as a torch tensor of ``dtype``."""
    if isinstance(a, torch.Tensor):
        return a.to(dtype)
    return torch.from_numpy(np.array(a)).to(dtype)


def _bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image ``sum`` of sigmoid cross-entropy, ``(B,)``."""
    per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return per_pixel.reshape(x.shape[0], -1).sum(dim=1)


def _gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per sample, ``(B,)``."""
    return 0.5 * torch.sum(torch.exp(logvar) + mu.square() - 1.0 - logvar, dim=-1)


class TorchStep:
    """One model's full training step on a fixed batch.

    Subclasses define the loss (``_loss``) and build the twin, its optimizers and its
    leaves (``_setup``); this class runs the step and reads values back in Flax's layout.

    Attributes:
      name: the :data:`~.registry.MODELS` entry.
      model: the torch module (``disc`` too for the FactorVAE steps).
      optimizers: the torch optimizers the step uses.
    """

    name: str
    latent_dim: int

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.dtype = dtype
        self._params: list[Leaf] = []
        self._stats: list[Leaf] = []
        self.optimizers: list[torch.optim.Optimizer] = []

    # the loss: subclasses return (scalar to differentiate, {term: tensor})
    def _loss(self, update: bool, **noise: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def step(self, **noise: Any) -> dict[str, float]:
        """One training step: forward, loss, backward, optimizer step.

        Args:
          **noise: the step's random inputs (``eps``; ``eps_disc``, ``perm`` for FactorVAE),
            see the module docstring; each one omitted is drawn with torch.

        Returns:
          ``{loss term: value}`` before the update.
        """
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        loss, terms = self._loss(update=True, **noise)
        loss.backward()
        for opt in self.optimizers:
            opt.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    def loss_and_grads(
        self, of: str | None = None, **noise: Any
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The loss terms and gradients, without updating parameters or BatchNorm averages.

        Args:
          of: a single loss term to differentiate instead of the training objective (e.g.
            ``"ad"``); ``None`` for the objective.
          **noise: as in :meth:`step`.

        Returns:
          ``({loss term: value}, {Flax path: gradient in Flax's layout})``; parameters that
          the differentiated loss does not reach get zeros.
        """
        loss, terms = self._loss(update=False, **noise)
        if of is not None:
            loss = terms[of]
        tensors = [leaf.tensor for leaf in self._params]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        out = {}
        for leaf, g in zip(self._params, grads, strict=True):
            g = torch.zeros_like(leaf.tensor) if g is None else g
            out[leaf.path] = np.ascontiguousarray(to_flax_layout(g.detach().numpy(), leaf.kind))
        return {k: float(v.detach()) for k, v in terms.items()}, out

    def flax_params(self) -> dict[str, np.ndarray]:
        """The current parameters, ``{Flax path: array in Flax's layout}``."""
        return {
            leaf.path: np.ascontiguousarray(to_flax_layout(leaf.tensor.detach().numpy(), leaf.kind))
            for leaf in self._params
        }

    def flax_batch_stats(self) -> dict[str, np.ndarray]:
        """The current BatchNorm running averages, ``{Flax path: array}`` (empty without BN)."""
        return {leaf.path: leaf.tensor.detach().numpy().copy() for leaf in self._stats}

    def _noise(self, eps: Any, shape: tuple[int, ...]) -> torch.Tensor:
        """The given noise checked to have ``shape``, or standard normal noise drawn."""
        if eps is None:
            return torch.randn(shape, generator=self._gen).to(self.dtype)
        eps = _as_tensor(eps, self.dtype)
        if tuple(eps.shape) != shape:
            raise ValueError(f"noise must have shape {shape}; got {tuple(eps.shape)}")
        return eps

    def _setup(
        self,
        twins: Sequence[tuple[str, FlaxTwin]],
        flax_params: Any,
        flax_batch_stats: Any,
        seed: int,
        zero_scale: Iterable[str] = (),
    ) -> None:
        """Casts the twins to the step's dtype, collects their leaves (under each root path)
        and loads the Flax values into them, or initializes them as Flax would."""
        self._gen = torch.Generator().manual_seed(seed)
        for _, twin in twins:
            twin.to(self.dtype)  # before collecting leaves: .to() replaces buffer tensors
        for root, twin in twins:
            p, s = collect_leaves(twin, root)
            self._params += p
            self._stats += s
        if flax_params is not None:
            if isinstance(flax_params, Mapping) and "params" in flax_params:  # variables dict
                flax_batch_stats = flax_params.get("batch_stats", flax_batch_stats)
                flax_params = flax_params["params"]
            load_leaves(self._params, flatten_flax(flax_params), "Flax params")
        else:
            flax_init(self._params, self._gen, zero_scale)
        if flax_batch_stats is not None:
            load_leaves(self._stats, flatten_flax(flax_batch_stats), "Flax batch_stats")


class VAEStep(TorchStep):
    """``vae_xai.train.vae_update_fn``: ``mean(recon_nll + beta * KL)`` and one Adam step.

    Args:
      name: the :data:`~.registry.MODELS` entry.
      model: the VAE twin.
      batch: ``{"image": (B, H, W, C)}`` NHWC float.
      lr: Adam's learning rate (``optax.adam`` defaults otherwise, which torch's Adam matches).
      beta: the KL weight.
      likelihood: ``"bernoulli"`` (sigmoid cross-entropy of the logits) or ``"gaussian"``
        (squared error of ``sigmoid(logits)`` over ``2 * variance``, constants dropped).
      variance: the Gaussian likelihood's variance.
      flax_params, flax_batch_stats, seed, dtype: as in :func:`~.registry.build`.
      zero_scale: BN scale paths that Flax initializes to zero (only without ``flax_params``).
    """

    def __init__(
        self,
        name: str,
        model: FlaxTwin,
        batch: Mapping[str, Any],
        *,
        lr: float,
        beta: float,
        likelihood: str = "bernoulli",
        variance: float = 0.5,
        flax_params: Any = None,
        flax_batch_stats: Any = None,
        seed: int = 0,
        zero_scale: Iterable[str] = (),
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(dtype)
        self.name, self.model = name, model
        self.latent_dim = model.latent_dim
        self.beta, self.likelihood, self.variance = beta, likelihood, variance
        self.x = _nchw(batch["image"]).to(dtype)
        self._setup([("", model)], flax_params, flax_batch_stats, seed, zero_scale)
        # optax.adam(lr): b1 0.9, b2 0.999, eps 1e-8, eps_root 0 == torch.optim.Adam
        self.optimizers = [
            torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        ]

    def _loss(self, update: bool, eps: Any = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x = self.x
        enc = self.model.encode(x, train=True, update=update)
        mu, logvar = enc["mu"], enc["logvar"]
        z = mu + self._noise(eps, tuple(mu.shape)) * torch.exp(0.5 * logvar)
        logits = self.model.decode(z, train=True, update=update)
        if self.likelihood == "bernoulli":
            rec = _bernoulli_nll(logits, x)
        else:
            diff = x - torch.sigmoid(logits)
            rec = 0.5 * diff.square().reshape(x.shape[0], -1).sum(dim=1) / self.variance
        kl = _gaussian_kl(mu, logvar)
        loss = torch.mean(rec + self.beta * kl)
        return loss, {"loss": loss, "recon": rec.mean(), "kl": kl.mean()}


class FactorVAEStep(TorchStep):
    """``vae_xai.disentangle.factor_vae_loss_fn`` + ``factor_vae_optimizer()``.

    One scalar ``vae_loss(vae; disc frozen) + disc_loss(disc; z frozen)`` is differentiated,
    as in our step; ``ad_weight > 0`` adds ``L_AD`` of the top-2 attention pair at the last
    conv layer (Grad-CAM of the sampled ``z``, second order through the maps).

    Args:
      name: the :data:`~.registry.MODELS` entry.
      vae: the VAE twin.
      disc: the discriminator twin.
      batch: ``{"image": (B, H, W, C)}`` NHWC float, plus ``"image_disc"``: the independent
        half-batch whose permuted latents the discriminator sees (without it, the permuted
        samples are those of ``"image"``).
      gamma: the TC weight.
      ad_weight: the ``L_AD`` weight; 0 leaves the term (and its cost) out.
      ad_eps: the epsilon in ``L_AD``'s denominator.
      flax_params: ``{"vae": ..., "disc": ...}``, or ``None`` for Flax's initializers.
      seed, dtype: as in :func:`~.registry.build`.
      vae_lr, vae_betas, disc_lr, disc_betas: the two Adam optimizers' hyperparameters.
    """

    def __init__(
        self,
        name: str,
        vae: ConvVAE,
        disc: FactorDiscriminator,
        batch: Mapping[str, Any],
        *,
        gamma: float = 40.0,
        ad_weight: float = 0.0,
        ad_eps: float = 1e-8,
        flax_params: Any = None,
        seed: int = 0,
        vae_lr: float = 1e-4,
        vae_betas: tuple[float, float] = (0.9, 0.999),
        disc_lr: float = 1e-4,
        disc_betas: tuple[float, float] = (0.5, 0.9),
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__(dtype)
        self.name, self.model, self.disc = name, vae, disc
        self.latent_dim = vae.latent_dim
        self.gamma, self.ad_weight, self.ad_eps = gamma, ad_weight, ad_eps
        self.x = _nchw(batch["image"]).to(dtype)
        self.x_disc = _nchw(batch["image_disc"]).to(dtype) if "image_disc" in batch else None
        if flax_params is not None and set(flax_params) != {"vae", "disc"}:
            raise ValueError("FactorVAE flax_params must be {'vae': ..., 'disc': ...}")
        self._setup([("vae", vae), ("disc", disc)], flax_params, None, seed)
        self.optimizers = [
            torch.optim.Adam(vae.parameters(), lr=vae_lr, betas=vae_betas, eps=1e-8),
            torch.optim.Adam(disc.parameters(), lr=disc_lr, betas=disc_betas, eps=1e-8),
        ]

    def _attention_ad(
        self, enc: dict[str, torch.Tensor], z: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """``L_AD`` of each sample's top-2 attention pair, ``(B,)``.

        ``delta`` is the zero shift of the last feature map that the encoder applied (see
        :meth:`~.models.ConvVAE.encode`); differentiating ``z`` by it gives the Grad-CAM weights.
        """
        a = enc[f"conv{len(self.model.convs)}"]  # (B, c, h, w), the feature map
        b, d = z.shape
        hh, ww = a.shape[2:]
        # d z_i / d delta = sum_hw d z_i / dA, all D latents in one batched vjp (create_graph:
        # the maps stay differentiable, second order)
        onehots = torch.eye(d, dtype=z.dtype)[:, None, :].expand(d, b, d)
        (sums,) = torch.autograd.grad(
            z, delta, grad_outputs=onehots, is_grads_batched=True, create_graph=True
        )  # (D, B, c)
        alpha = sums.permute(1, 0, 2) / (hh * ww)  # (B, D, c)
        maps = F.relu(torch.einsum("bdc,bchw->bdhw", alpha, a))
        pairs = torch.topk(maps.detach().sum(dim=(2, 3)), 2, dim=1).indices  # (B, 2)
        chosen = torch.gather(maps, 1, pairs[:, :, None, None].expand(b, 2, hh, ww))
        a1, a2 = chosen[:, 0], chosen[:, 1]
        inter = torch.minimum(a1, a2).sum(dim=(1, 2))
        total = (a1 + a2).sum(dim=(1, 2))
        return 2.0 * inter / (total + self.ad_eps)

    def _loss(
        self, update: bool, eps: Any = None, eps_disc: Any = None, perm: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        del update  # no BatchNorm
        x = self.x
        use_ad = self.ad_weight > 0
        delta = None
        if use_ad:
            delta = torch.zeros(x.shape[0], self.model.feat_c, dtype=x.dtype, requires_grad=True)
        enc = self.model.encode(x, delta=delta)
        mu, logvar = enc["mu"], enc["logvar"]
        z = mu + self._noise(eps, tuple(mu.shape)) * torch.exp(0.5 * logvar)
        logits = self.model.decode(z)
        rec = _bernoulli_nll(logits, x)
        kl = _gaussian_kl(mu, logvar)
        tc_logits = self.disc(z, frozen=True)
        tc = tc_logits[:, 0] - tc_logits[:, 1]
        vae_loss = torch.mean(rec + kl + self.gamma * tc)
        terms = {"recon": rec.mean(), "kl": kl.mean(), "tc": tc.mean()}
        if use_ad:
            terms["ad"] = self._attention_ad(enc, z, delta).mean()
            vae_loss = vae_loss + self.ad_weight * terms["ad"]
        terms["loss"] = vae_loss

        z_q = z.detach()
        if self.x_disc is not None:
            with torch.no_grad():
                enc2 = self.model.encode(self.x_disc)
                noise2 = self._noise(eps_disc, tuple(enc2["mu"].shape))
                z_other = enc2["mu"] + noise2 * torch.exp(0.5 * enc2["logvar"])
        else:
            z_other = z_q
        if perm is None:
            perm = torch.argsort(torch.rand(tuple(z_other.shape), generator=self._gen), dim=0)
        perm = _as_tensor(perm, torch.int64)
        if tuple(perm.shape) != tuple(z_other.shape):
            raise ValueError(f"perm must have shape {tuple(z_other.shape)}; got {perm.shape}")
        z_perm = torch.gather(z_other, 0, perm)
        logits_q = self.disc(z_q)
        logits_p = self.disc(z_perm)
        zeros = torch.zeros(logits_q.shape[0], dtype=torch.int64)
        ones = torch.ones(logits_p.shape[0], dtype=torch.int64)
        d_loss = 0.5 * (F.cross_entropy(logits_q, zeros) + F.cross_entropy(logits_p, ones))
        terms["disc_loss"] = d_loss
        with torch.no_grad():
            terms["disc_acc"] = 0.5 * (
                (logits_q.argmax(-1) == 0).to(x.dtype).mean()
                + (logits_p.argmax(-1) == 1).to(x.dtype).mean()
            )
        return vae_loss + d_loss, terms
