"""Names and Secret references shared by every part of the contract (channels of every kind use them)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from alertpipe.workers.config.base import Model

__all__ = ["Name", "SecretKeyRef"]

Name = Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]


class SecretKeyRef(Model):
    """A key of a Kubernetes Secret in the pipeline's namespace; the value never enters the config."""

    name: Name = Field(description="Name of the Secret.")
    key: str = Field(min_length=1, max_length=253, description="Key inside the Secret.")
