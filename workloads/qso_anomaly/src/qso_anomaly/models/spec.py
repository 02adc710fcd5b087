"""The versioned architecture spec shared by the PyTorch and JAX implementations."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from qso_anomaly.data.grid import WavelengthGrid
from qso_anomaly.errors import ModelError

ARCH_VERSION = "qso-ae-2.2.0"


@dataclass(frozen=True)
class ModelSpec:
    """Spender-like autoencoder over observed spectra with a rest-frame decoder.

    Input (``qso-ae-2``): three channels per pixel — the normalised flux weighted by the
    relative noise weight w = min(1, √ivar / mean_valid √ivar) (so a low-ivar pixel carries
    almost nothing), w itself, and the valid-pixel mask (ivar > 0). Masked pixels are zero in
    all three channels: a mask is information, not a zero flux.
    Encoder: Conv1d blocks (``channels``/``kernels``; InstanceNorm + PReLU; MaxPool(``pool``)
    between blocks). The last block emits 2·C channels split into features h and attention
    logits a; a parallel conv on log(1 + ivar) and log(valid fraction + 10⁻³) of each pooled
    window are added to a (masked attention pooling: masked stretches get no weight).
    The pooled features and log(1 + z) go through ``encoder_mlp`` to ``latent_dim`` latents.
    Decoder: MLP ``decoder_mlp`` → ``n_rest`` rest-frame pixels on [rest_start, rest_stop],
    linearly resampled to the observed grid at λ/(1+z), with its amplitude fitted to the valid
    pixels by weighted least squares. Loss: Σ ½·ivar·(x − x̂)² / L. Score: standardised
    log(χ² / n_valid) over valid pixels only + standardised −log p(latent) under a Gaussian
    mixture + standardised broad-band shape deviate (``shape_weight``; wide-window fluxes of
    the valid pixels against a per-redshift Gaussian, :mod:`qso_anomaly.models.shape`) +
    standardised absorption-trough depth (``trough_weight``; the deepest flux deficit below
    the reconstruction in windows of ``trough_widths``, as a ``trough_sigma``·σ lower bound,
    :mod:`qso_anomaly.models.trough`).
    ``z_min``/``z_max`` are the trained redshift range (the data policy rejects and counts
    spectra outside it); ``augment_fraction`` is the share of training spectra given a
    random instrument state (:mod:`qso_anomaly.train.augment`); ``consistency_weight`` weighs
    the latent-consistency term (latent of the augmented input vs the clean one, in units of
    the latent variance) that makes the latent, and so the density score, blind to masks.

    The architecture follows spender (Melchior et al. 2023; pmelchior/spender ``model.py``:
    observed-frame encoder with attention pooling, rest-frame decoder) as described in the
    design reference §8.2; the sizes of :meth:`full` are the design's GPU sizes.

    Attributes:
        version: Architecture version ``qso-ae-<major>.<minor>.<patch>``; a spec loads only
            into code of the same major version.
        channels: Conv1d output channels per encoder block (the last block emits twice this).
        kernels: Odd Conv1d kernel sizes per block, in pixels (same length as ``channels``).
        pool: MaxPool1d factor between blocks.
        encoder_mlp: Hidden sizes of the MLP from pooled features + log(1 + z) to the latents.
        latent_dim: Latent dimension L (8–16 in the design).
        decoder_mlp: Hidden sizes of the decoder MLP (latent → rest-frame spectrum).
        rest_start: First rest-frame wavelength of the decoder grid, in Å (vacuum).
        rest_stop: Last rest-frame wavelength of the decoder grid, in Å (vacuum).
        n_rest: Rest-frame decoder pixels (linear grid from ``rest_start`` to ``rest_stop``).
        grid_downsample: Factor by which the base observed grid is downsampled for the input.
        density_components: Largest number of latent Gaussian-mixture components.
        chi2_weight: Weight of the standardised log χ²/dof term in the score.
        density_weight: Weight of the standardised −log p(latent) term in the score.
        shape_weight: Weight of the standardised broad-band shape term in the score
            (:mod:`qso_anomaly.models.shape`; used when the fitted density carries it).
        trough_weight: Weight of the standardised absorption-trough term in the score
            (:mod:`qso_anomaly.models.trough`; used when the density's calibration has it,
            i.e. for models fitted from ``qso-ae-2.2.0`` on; 0 fits none).
        trough_widths: Sliding-window widths of the trough term, in observed-frame Å.
        trough_sigma: k of the trough term's lower bound d̂ − k·σ_d (one-sided).
        learning_rate: Initial Adam learning rate of training (cosine decay over the epochs,
            :mod:`qso_anomaly.train.schedule`).
        batch_size: Training batch size B (spectra).
        z_min: Lowest redshift of the training range (inclusive).
        z_max: Highest redshift of the training range (inclusive).
        min_valid_fraction: Smallest share of valid pixels (ivar > 0) of a scored spectrum.
        augment_fraction: Share of training spectra given a random instrument state, in [0, 1].
        consistency_weight: Weight of the latent-consistency loss term.
        extra: Free-form settings recorded with the model (not used by the architecture).

    Raises:
        ModelError: On construction, when ``channels`` and ``kernels`` are empty or of unequal
            length, a kernel is even, ``latent_dim < 1``, ``n_rest < 2`` or ``pool < 1``, or
            a non-zero ``trough_weight`` comes with no or non-positive ``trough_widths``.
    """

    version: str = ARCH_VERSION
    channels: tuple[int, ...] = (8, 16, 32)
    kernels: tuple[int, ...] = (5, 11, 21)
    pool: int = 4
    encoder_mlp: tuple[int, ...] = (64, 32)
    latent_dim: int = 8
    decoder_mlp: tuple[int, ...] = (64, 128, 256)
    rest_start: float = 640.0
    rest_stop: float = 9400.0
    n_rest: int = 2048
    grid_downsample: int = 4
    density_components: int = 8
    chi2_weight: float = 1.0
    density_weight: float = 1.0
    shape_weight: float = 1.0
    trough_weight: float = 1.0
    trough_widths: tuple[float, ...] = (25.6, 51.2, 102.4)
    trough_sigma: float = 3.0
    learning_rate: float = 2e-3
    batch_size: int = 128
    z_min: float = 0.05
    z_max: float = 4.5
    min_valid_fraction: float = 0.05
    augment_fraction: float = 0.5
    consistency_weight: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.kernels) or not self.channels:
            raise ModelError("channels and kernels must be non-empty and of equal length")
        if any(k % 2 == 0 for k in self.kernels):
            raise ModelError(f"kernels must be odd (same padding), got {self.kernels}")
        if self.latent_dim < 1 or self.n_rest < 2 or self.pool < 1:
            raise ModelError("latent_dim >= 1, n_rest >= 2 and pool >= 1 are required")
        if self.trough_weight and (not self.trough_widths
                                   or any(not w > 0 for w in self.trough_widths)):
            raise ModelError(f"trough_widths must be positive widths in Å, got "
                             f"{self.trough_widths}", hint="or set trough_weight to 0")

    @classmethod
    def ci(cls) -> ModelSpec:
        """CPU/CI size: small channels (8, 16, 32), 8 latents, 4× downsampled input grid.

        Returns:
            The default spec (sized to train on 2 CPU cores).
        """
        return cls()

    @classmethod
    def full(cls) -> ModelSpec:
        """GPU size (design §8.2): channels [128, 256, 512], 16 latents, full 0.8 Å grid.

        Returns:
            The full-size spec (7,000 rest-frame pixels, batch 256, learning rate 1e-3).
        """
        return cls(
            channels=(128, 256, 512),
            encoder_mlp=(128, 64, 32),
            latent_dim=16,
            decoder_mlp=(64, 256, 1024),
            n_rest=7000,
            grid_downsample=1,
            batch_size=256,
            learning_rate=1e-3,
        )

    def input_grid(self, base: WavelengthGrid | None = None) -> WavelengthGrid:
        """The observed grid this spec expects: ``base`` (EDR by default) downsampled.

        Args:
            base: Observed-frame wavelength grid in Å (vacuum); ``None`` means the DESI EDR
                merged grid, 3600–9824 Å in 0.8 Å steps (7,781 px).

        Returns:
            ``base`` downsampled by ``grid_downsample`` (every k-th pixel).

        Raises:
            DataError: When ``grid_downsample < 1`` (the spec does not check it).
        """
        return (base or WavelengthGrid.desi_edr()).downsample(self.grid_downsample)

    @property
    def rest_step(self) -> float:
        """Rest-frame decoder pixel size in Å: (rest_stop − rest_start) / (n_rest − 1)."""
        return (self.rest_stop - self.rest_start) / (self.n_rest - 1)

    def encoded_length(self, npix: int) -> int:
        """Length of the last encoder block's output for an input of ``npix`` pixels.

        Args:
            npix: Observed-frame pixels P of the input.

        Returns:
            P integer-divided by ``pool`` once per block after the first.

        Raises:
            ModelError: When that length is 0 (the input is too short for the blocks).
        """
        n = npix
        for _ in range(len(self.channels) - 1):
            n //= self.pool
        if n < 1:
            raise ModelError(f"input of {npix} px is too short for {len(self.channels)} blocks")
        return n

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (``spec.json`` of a trained-model directory).

        Returns:
            Every field by name; tuples become lists.
        """
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict` with a version check.

        Args:
            d: Spec fields by name (lists are turned back into tuples); a missing field takes
                its default, a missing ``version`` counts as the current one.

        Returns:
            The spec.

        Raises:
            ModelError: For an unknown field, for a ``version`` whose major part differs from
                :data:`ARCH_VERSION` (retrain with this release), or for invalid values (see
                the class).
        """
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"unknown ModelSpec fields {sorted(unknown)}")
        if str(d.get("version", ARCH_VERSION)).split(".")[0] != ARCH_VERSION.split(".")[0]:
            raise ModelError(
                f"model spec {d.get('version')!r} is not compatible with {ARCH_VERSION}",
                hint="retrain the model with this qso_anomaly release")
        kw: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)

    def with_(self, **changes: Any) -> ModelSpec:
        """A copy with some fields changed (``dataclasses.replace``).

        Args:
            **changes: New field values by name.

        Returns:
            The changed spec (validated again).

        Raises:
            ModelError: When the changed spec is invalid (see the class).
            TypeError: For a name that is not a field.
        """
        return replace(self, **changes)
