"""The spec language: typed pydantic models of an experiment, loaded from YAML. Never imports torch."""

from .spec import Spec

__all__ = ["Spec"]
