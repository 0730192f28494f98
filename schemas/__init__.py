"""The spec language: typed pydantic models of an experiment, loaded from YAML. Never imports torch."""

from .loader import Issue, SpecError, dump_spec, load_spec, load_tree
from .spec import Spec

__all__ = ["Issue", "Spec", "SpecError", "dump_spec", "load_spec", "load_tree"]
