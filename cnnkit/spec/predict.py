"""The spec's ``predict`` section: test-time augmentation (``predict.tta``), kept in the bundle with the spec.

``tta`` names transforms whose views of each image are all classified and their probabilities
averaged (cnnkit/runtime/tta.py does it): ``"hflip"`` adds the mirror image, ``"shift:N"`` adds the
image moved N pixels up, down, left and right (black flowing in). Together they multiply: the
views are every combination, e.g. ``["hflip", "shift:1"]`` gives 2 x 5 = 10 views.
"""

from __future__ import annotations

import re
from pydantic import Field, field_validator

from ..params import StrictParams

SHIFT = re.compile(r"shift:([1-9][0-9]{0,3})")
TTA_ITEM_SCHEMA = {"type": "string", "pattern": f"^(hflip|{SHIFT.pattern})$"}


class PredictSpec(StrictParams):
    """How the model predicts: the views of an image it averages (test-time augmentation)."""

    tta: list[str] = Field(default_factory=list, max_length=2,
                           description="test-time augmentation: 'hflip' (the mirror image too) and/or 'shift:N' (also moved N pixels "
                                       "up, down, left, right); the probabilities of all views are averaged; [] = off",
                           json_schema_extra={"items": TTA_ITEM_SCHEMA})

    @field_validator("tta")
    @classmethod
    def _known_transforms(cls, items: list[str]) -> list[str]:
        for item in items:
            if item != "hflip" and not SHIFT.fullmatch(item):
                raise ValueError(f"each transform is 'hflip' or 'shift:N' (N a whole number of pixels >= 1). Received: {item!r}")
        kinds = [item.split(":")[0] for item in items]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each transform may appear once. Received: {items}")
        return items

    @property
    def hflip(self) -> bool:
        return "hflip" in self.tta

    @property
    def shift(self) -> int:
        """The shift in pixels, 0 when the views are not shifted."""
        return next((int(SHIFT.fullmatch(item).group(1)) for item in self.tta if item != "hflip"), 0)

    @property
    def views(self) -> int:
        """How many views of each image are classified (1: no test-time augmentation)."""
        return (2 if self.hflip else 1) * (5 if self.shift else 1)


def check_predict(predict: PredictSpec, shape: tuple[int, ...] | None, errors: list[tuple[str, str]]) -> None:
    """Test-time augmentation needs image input (``shape`` [C, H, W]), and a shift smaller than the image."""
    if not predict.tta or shape is None:
        return
    if len(shape) != 3:
        errors.append(("predict.tta", f"test-time augmentation works on images, input.shape [C, H, W]. Received: input.shape={list(shape)}"))
    elif predict.shift >= min(shape[1:]):
        errors.append(("predict.tta", f"a shift must be smaller than the image ({shape[1]}x{shape[2]}). Received: shift:{predict.shift}"))
