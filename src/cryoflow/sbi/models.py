"""Neural posterior estimator: ResNet-18 image embedding + neural spline flow on θ.

The flow models the standardized coordinate u = (θ − centre) / half-width,
with centre and half-width taken from the prior range (per coordinate for a
2-D θ), and the density is mapped back to θ in Å with the Jacobian. Model files hold only tensors and
plain Python values, so they load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
import zuko
from lampe.inference import NPE
from torch import nn

from cryoflow.errors import InputError
from cryoflow.io.fileio import atomic_path, sha256_files
from cryoflow.physics.projection import crop_rfft2
from cryoflow.physics.theta import bounds
from cryoflow.workflow.modelcard import CTF_PRIOR_TOLERANCE, ModelCard


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity (or 1×1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Embedding(nn.Module):
    """ResNet-18 (He et al. 2016) for one-channel images, ending in a ``latent_dim`` vector.

    ``width`` is the channel count of the first stage (64 in ResNet-18);
    stages double it. ``blocks`` gives the blocks per stage ((2, 2, 2, 2) is
    ResNet-18). ``crop_px``: the images are first Fourier-cropped to that box
    (band-limited to its Nyquist frequency, ``train.embedding.crop_px``), so
    the network costs about (crop_px / box)² of what the full box costs.
    """

    def __init__(self, latent_dim: int = 256, width: int = 64, blocks=(2, 2, 2, 2), crop_px: int | None = None):
        super().__init__()
        self.crop_px = crop_px
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, channels = [], width
        for stage, n_blocks in enumerate(blocks):
            out_channels = width * 2**stage
            for block in range(n_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(channels, latent_dim)

    def head_conv_weight(self) -> torch.Tensor:
        """A convolution weight with many input channels: its layout says whether the net is channels-last."""
        first = self.stages[0]
        assert isinstance(first, BasicBlock)
        return first.conv1.weight

    def band_limited(self, images: torch.Tensor) -> torch.Tensor:
        """The images Fourier-cropped to ``crop_px`` (in float32: FFTs have no bfloat16), pixel values
        rescaled so a constant image keeps its value; unchanged without ``crop_px`` or when already that small."""
        box = images.shape[-1]
        if self.crop_px is None or self.crop_px >= box:
            return images
        spectrum = crop_rfft2(torch.fft.rfft2(images.float()), self.crop_px)
        return torch.fft.irfft2(spectrum, s=(self.crop_px, self.crop_px)) * (self.crop_px / box) ** 2

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.band_limited(images).unsqueeze(1)
        if self.head_conv_weight().is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)  # as the weights: faster convolutions
        x = self.stages(self.stem(x))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class PosteriorEstimator(nn.Module):
    """q(θ | image): embedding network + NSF from lampe/zuko; θ in Å, 1-D or 2-D as ``theta_range_A``."""

    theta_center: torch.Tensor  # buffers (register_buffer): θ's centre and half-width, per coordinate
    theta_scale: torch.Tensor

    def __init__(
        self,
        theta_range_A,
        latent_dim: int = 256,
        width: int = 64,
        blocks=(2, 2, 2, 2),
        transforms: int = 5,
        hidden_features=(256,) * 10 + (128, 64),
        particle_head: bool = False,
        ctf_context: CTFContext | dict | None = None,
        crop_px: int | None = None,
    ):
        super().__init__()
        ranges = bounds(theta_range_A)
        self.theta_dim = len(ranges)
        self.architecture = {
            "theta_range_A": ranges[0].tolist() if self.theta_dim == 1 else ranges.tolist(),
            "latent_dim": int(latent_dim),
            "width": int(width),
            "blocks": [int(b) for b in blocks],
            "transforms": int(transforms),
            "hidden_features": [int(h) for h in hidden_features],
        }
        if particle_head:  # left out otherwise, so model files written before it existed load unchanged
            self.architecture["particle_head"] = True
        if crop_px is not None:  # train.embedding.crop_px; left out otherwise, as particle_head is
            self.architecture["crop_px"] = int(crop_px)
        # train.condition_on_ctf: each image's CTF (its features scaled to [-1, 1] over the prior) joins the latent
        # as the flow's context; left out otherwise, as particle_head is
        self.ctf_context = (
            None
            if ctf_context is None
            else {
                "features": list(ctf_context["features"]),
                "low": [float(v) for v in ctf_context["low"]],
                "high": [float(v) for v in ctf_context["high"]],
            }
        )
        if self.ctf_context is not None:
            self.architecture["ctf_context"] = self.ctf_context
        n_context = latent_dim + (0 if self.ctf_context is None else len(self.ctf_context["features"]))
        centre, scale = 0.5 * (ranges[:, 0] + ranges[:, 1]), 0.5 * (ranges[:, 1] - ranges[:, 0])
        if self.theta_dim == 1:  # scalars, as in 1-D model files written before 2-D θ existed
            centre, scale = centre[0], scale[0]
        self.register_buffer("theta_center", torch.tensor(centre, dtype=torch.float32))
        self.register_buffer("theta_scale", torch.tensor(scale, dtype=torch.float32))
        self.embedding = ResNet18Embedding(latent_dim, width, blocks, crop_px)
        self.npe = NPE(
            self.theta_dim, n_context, build=zuko.flows.NSF, transforms=transforms, hidden_features=hidden_features
        )
        # junk-aware models (train.junk_fraction > 0): the logit that the image holds a centred particle
        self.particle = nn.Linear(latent_dim, 1) if particle_head else None

    def particle_logit(self, latent: torch.Tensor) -> torch.Tensor:
        """log-odds (B,) that each image holds a centred particle; a model without the head raises."""
        if self.particle is None:
            raise ValueError("this model was trained without train.junk_fraction: it has no particle output")
        return self.particle(latent.float())[:, 0]

    def standardize(self, theta: torch.Tensor) -> torch.Tensor:
        """u (…, D) from θ (…,) for 1-D or (…, 2) for 2-D, in Å."""
        u = (theta - self.theta_center) / self.theta_scale
        return u[..., None] if self.theta_dim == 1 else u

    def log_jacobian(self) -> torch.Tensor:
        return torch.log(self.theta_scale).sum()

    def ctf_features(self, ctf: dict) -> torch.Tensor | None:
        """The flow's CTF context (B, F) from per-image values in the simulator's keys (``defocus_u_A``,
        ``defocus_v_A``, ``phase_shift_deg``): mean defocus, astigmatism (U − V)/2 and phase shift, each
        scaled to [-1, 1] over the trained prior. None for a model without CTF context."""
        if self.ctf_context is None:
            return None
        u = torch.as_tensor(ctf["defocus_u_A"], dtype=torch.float32)
        v = torch.as_tensor(ctf.get("defocus_v_A", u), dtype=torch.float32)
        values = {
            "defocus_A": 0.5 * (u + v),
            "astigmatism_A": 0.5 * (u - v),
            "phase_shift_deg": torch.as_tensor(ctf.get("phase_shift_deg", torch.zeros_like(u)), dtype=torch.float32),
        }
        columns = []
        for name, low, high in zip(self.ctf_context["features"], self.ctf_context["low"], self.ctf_context["high"]):
            centre, half = 0.5 * (low + high), max(0.5 * (high - low), 1e-6)
            columns.append((values[name].reshape(-1) - centre) / half)
        return torch.stack(columns, dim=1).to(self.theta_center.device)

    def context(self, latent: torch.Tensor, ctf: torch.Tensor | None = None) -> torch.Tensor:
        """The flow's context: the latent, and for a CTF-conditioned model its CTF features (``ctf_features``)."""
        if self.ctf_context is None:
            return latent.float()
        if ctf is None:
            raise ValueError(
                "this model is conditioned on the CTF (train.condition_on_ctf): each image's defocus is needed"
            )
        return torch.cat([latent.float(), ctf.to(latent.device, torch.float32)], dim=1)

    def log_prob(self, theta: torch.Tensor, images: torch.Tensor, ctf: torch.Tensor | None = None) -> torch.Tensor:
        """log q(θ | image) per image, θ (B,) or (B, 2) in Å, images (B, box, box)."""
        return self.log_prob_latent(theta, self.embedding(images), ctf)

    def log_prob_latent(self, theta: torch.Tensor, latent: torch.Tensor, ctf: torch.Tensor | None = None):
        """log q(θ | latent) per image, θ (B,) or (B, 2) in Å, latents (B, latent_dim), CTF features (B, F)."""
        return self.npe(self.standardize(theta), self.context(latent, ctf)) - self.log_jacobian()

    def log_prob_grid(
        self, latent: torch.Tensor, theta_grid: torch.Tensor, chunk_values: int = 1 << 23, ctf=None
    ) -> torch.Tensor:
        """log q(θ | latent) on θ grid points (G,) or (G, 2) for every latent (B, L): shape (B, G).

        For 1-D θ the spline parameters depend only on the latent, so the
        flow's networks run once per particle, not once per grid point. For
        2-D θ each coordinate's splines depend on the other (autoregressive
        transforms), so the networks run per point and particle, over chunks
        of grid points of about ``chunk_values`` network inputs each.
        """
        context = self.context(latent, ctf)
        distribution = self.npe.flow(context)
        u = self.standardize(theta_grid)[:, None, :]
        if self.theta_dim == 1:
            chunk = len(u)
        else:
            chunk = max(1, chunk_values // (context.shape[0] * (context.shape[1] + self.theta_dim)))
        parts = [distribution.log_prob(part.expand(-1, context.shape[0], -1)) for part in torch.split(u, chunk)]
        return (torch.cat(parts) - self.log_jacobian()).T


CHANNELS_LAST_MIN_WIDTH = 8


def memory_format(model: PosteriorEstimator, device) -> torch.memory_format:
    """Channels-last for the convolutions (~20 % faster on CPU through oneDNN, and what tensor cores want),
    except for networks narrower than 8 channels on a CPU: on one thread of an AVX2-only CPU (torch
    2.13.0+cpu) oneDNN's channels-last backward of a 4-channel stage corrupts the heap and the process
    aborts (free(): invalid next size)."""
    narrow = torch.device(device).type == "cpu" and model.architecture["width"] < CHANNELS_LAST_MIN_WIDTH
    return torch.contiguous_format if narrow else torch.channels_last


def save_model(path: str | Path, model: PosteriorEstimator, metadata: Mapping[str, Any]) -> None:
    """Save weights, architecture and metadata (tensors and plain values only)."""
    payload = {
        "format": "cryoflow-posterior-v1",
        "architecture": model.architecture,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metadata": json.loads(json.dumps(metadata, default=str)),  # plain values only
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model(path: str | Path, device="cpu") -> tuple[PosteriorEstimator, ModelCard]:
    """Rebuild a saved estimator without executing anything from the file (``weights_only=True``)."""
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:
        raise InputError(f"{path}: not a loadable cryoflow model file ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != "cryoflow-posterior-v1":
        raise InputError(f"{path}: field 'format' is not 'cryoflow-posterior-v1'")
    arch = payload["architecture"]
    model = PosteriorEstimator(
        arch["theta_range_A"],
        latent_dim=arch["latent_dim"],
        width=arch["width"],
        blocks=tuple(arch["blocks"]),
        transforms=arch["transforms"],
        hidden_features=tuple(arch["hidden_features"]),
        particle_head=bool(arch.get("particle_head", False)),
        ctf_context=arch.get("ctf_context"),
        crop_px=arch.get("crop_px"),
    )
    model.load_state_dict(payload["state_dict"])
    check_card(path, payload["metadata"])
    return model.to(device).eval(), payload["metadata"]


def check_card(path: str | Path, metadata: dict) -> None:
    """The ``card.json`` beside a model file must describe it: the weights' sha256 (``weights_sha256``, for
    the best-validation weights) and every field the file's own metadata shares with the card. A mismatch
    (another model's weights beside the card) is refused naming the field; no card, no check."""
    card_path = Path(path).with_name("card.json")
    if not card_path.is_file():
        return
    try:
        card = json.loads(card_path.read_text())
    except ValueError as err:
        raise InputError(f"{card_path}: not JSON ({err})") from err
    last_step = "weights" in metadata  # posterior_last.pt: the card's checksum is of posterior.pt
    if "weights_sha256" in card and not last_step and sha256_files(path) != card["weights_sha256"]:
        raise InputError(
            f"{card_path}: field 'weights_sha256' does not match {path}: the card belongs to other "
            "weights (a model file copied beside another model's card?)"
        )
    for field in sorted(set(card) & set(metadata) - {"weights", "weights_sha256"}):
        if card[field] != metadata[field]:
            raise InputError(
                f"{card_path}: field {field!r} differs from the metadata inside {path}: the card "
                "belongs to another model"
            )


class CTFContext(TypedDict):
    """The CTF features a CTF-conditioned model takes (``defocus_A``, ``astigmatism_A``, ``phase_shift_deg``)
    and the prior range of each, over which it scales them to [-1, 1]."""

    features: list[str]
    low: list[float]
    high: list[float]


def ctf_context_from_priors(priors) -> CTFContext:
    """The CTF features a ``train.condition_on_ctf`` model takes, and their prior ranges: mean defocus always;
    astigmatism and phase shift where the priors vary them."""
    features = {"defocus_A": tuple(priors.defocus_range_A)}
    if priors.astigmatism_max_A > 0:
        features["astigmatism_A"] = (-priors.astigmatism_max_A, priors.astigmatism_max_A)
    if priors.phase_shift_range_deg[1] > priors.phase_shift_range_deg[0]:
        features["phase_shift_deg"] = tuple(priors.phase_shift_range_deg)
    return CTFContext(
        features=list(features), low=[v[0] for v in features.values()], high=[v[1] for v in features.values()]
    )


def check_ctf_in_prior(
    model: PosteriorEstimator, ctf: dict, where: str, tolerance: float = CTF_PRIOR_TOLERANCE
) -> None:
    """Refuse images whose CTF lies outside the prior a CTF-conditioned model was trained on (by more than
    ``tolerance`` of the prior's width), naming the first such value."""
    if model.ctf_context is None:
        return
    context = model.ctf_features(ctf)
    assert context is not None  # a model with CTF context
    features = context.cpu().numpy()
    for k, name in enumerate(model.ctf_context["features"]):
        outside = np.flatnonzero(np.abs(features[:, k]) > 1 + 2 * tolerance)
        if len(outside):
            low, high = model.ctf_context["low"][k], model.ctf_context["high"][k]
            value = low + (features[outside[0], k] + 1) * 0.5 * (high - low)
            raise InputError(
                f"{where}, particle {outside[0] + 1}: {name} {value:.6g} lies outside the range "
                f"[{low:g}, {high:g}] the CTF-conditioned model was trained on "
                f"({len(outside)} particles outside); retrain with a wider simulator prior"
            )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def uniform_prior_loss(theta_range_A) -> float:
    """−log of the uniform prior density, Σ log(θ_max − θ_min) over coordinates: the loss of an estimator
    that learned nothing."""
    return float(sum(math.log(high - low) for low, high in bounds(theta_range_A)))
