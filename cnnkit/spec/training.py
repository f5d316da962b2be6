"""The spec's training extras: augmentation (data.augment), validation (data.validation), early stopping.

The models here are parts of ``DataSpec`` and ``TrainSpec`` (sections.py, which also checks what needs
two parts of a spec: the crop padding against the input shape, early stopping without a validation
split); the code that acts on them lives in cnnkit/training/ (augment.py, validation.py).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt, field_validator

from ..params import StrictParams


class RandomErasing(StrictParams):
    """torchvision's RandomErasing: with probability p, one rectangle of the image is set to ``value``."""

    p: float = Field(0.5, ge=0.0, le=1.0, description="probability that an image gets a rectangle erased")
    scale: list[float] = Field([0.02, 0.33], min_length=2, max_length=2, description="[low, high] fraction of the image area to erase")
    ratio: list[float] = Field([0.3, 3.3], min_length=2, max_length=2, description="[low, high] aspect ratio (height / width) of the rectangle")
    value: float = Field(0.0, description="the value written, in model units (after preprocessing: 0 is mid-grey for the seed's x/255 - 0.5)")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1] <= 1:
            raise ValueError(f"must be [low, high] with 0 < low <= high <= 1. Received: {v}")
        return v

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: list[float]) -> list[float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"must be [low, high] with 0 < low <= high. Received: {v}")
        return v


class AugmentSpec(StrictParams):
    """Random changes to training batches (never to validation or test data), drawn from the seed, epoch and step."""

    crop_padding: NonNegativeInt = Field(0, description="random crop: pad each side with this many black pixels (raw 0), crop back at a random offset; 0 = off")
    hflip: bool = Field(False, description="flip each image left-right with probability 0.5")
    erasing: RandomErasing | None = Field(None, description="random erasing (torchvision semantics); null = off")

    @property
    def active(self) -> bool:
        """Whether any augmentation can change a batch (erasing with p = 0 cannot)."""
        return bool(self.crop_padding or self.hflip or (self.erasing and self.erasing.p > 0))


class EarlyStopping(StrictParams):
    """Stop when the monitored validation figure has not improved by more than min_delta for ``patience`` epochs."""

    patience: PositiveInt = Field(5, description="epochs without improvement before training stops")
    monitor: Literal["val_loss", "val_accuracy", "val_macro_f1"] = Field("val_loss", description="the validation figure watched (loss: lower is better)")
    min_delta: NonNegativeFloat = Field(0.0, description="a smaller change does not count as an improvement")


class EmaSpec(StrictParams):
    """An exponential moving average of the weights, updated after every optimizer step (cnnkit/training/ema.py).

    Update n (0-based) moves the average ``1 - d_n`` of the way to the weights: ``d_0 = 0`` (the first
    update copies them, as torch's AveragedModel does), then ``d_n = decay``, or with ``warmup_power``
    p ``d_n = min(decay, 1 - (1 + n) ** -p)`` (timm's ModelEmaV3 warm-up with gamma 1: p = 1 is the
    plain mean of the weights so far until that reaches ``decay``).
    """

    decay: float = Field(0.999, gt=0.0, lt=1.0, description="how much of the average each step keeps (0.999: about the last 1,000 steps)")
    warmup_power: Annotated[float, Field(gt=0.0, le=1.0)] | None = Field(
        None, description="warm the decay up as min(decay, 1 - (1 + n)^-p) at update n (timm's ModelEmaV3; 1: a plain mean first); null: decay from the second update on")


# Keys added after the first release are stored (in bundles, by ModelSpec.to_dict) only when set, so
# a spec that does not use them keeps its bundle bytes, and older cnnkit versions still read its bundles.
OPTIONAL_KEYS = {"data": ("validation", "augment"), "train": ("early_stopping", "restore_best", "ema")}


# What check_validation_size accepts, for the JSON Schema (pydantic would only say "integer or number").
VALIDATION_SIZE_SCHEMA = [{"type": "integer", "minimum": 1}, {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, {"type": "null"}]


def check_validation_size(value: Any) -> Any:
    """data.validation: an integer count >= 1 or a float fraction strictly between 0 and 1 (or null)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1) or (isinstance(value, float) and 0 < value < 1):
        return value
    try:
        received = json.dumps(value)
    except (TypeError, ValueError):
        received = repr(value)
    raise ValueError(f"expected a number of examples (an integer >= 1) or a fraction strictly between 0 and 1. Received: {received[:60]}")

