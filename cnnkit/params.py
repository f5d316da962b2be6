"""The one strict base of cnnkit's params models: a spec's sections, and every layer's, optimizer's,
schedule's and dataset source's params (each plugin group names its own subclass of it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictParams(BaseModel):
    """Strict types (``"3"`` is not 3), unknown keys refused (a typo is an error, not a default),
    finite numbers only (no NaN or Infinity), frozen (a validated spec does not change under its users).

    A subclass that means to differ says so in its own ``model_config`` (a spec's ``data`` section
    allows extra keys: they are its source's params).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)
