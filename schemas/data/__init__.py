"""Data generator configs, one class per `kind`; each knows its vocabulary size and sequence lengths.

One module per generator family, each with its pure-Python length model; `base` holds what they share.
`Data` is the union a stage's `data:` is read as.
"""

from __future__ import annotations

from ..base import kinded
from .base import IntRange, LengthRanges, TokenData
from .biased_parity import BiasedParity
from .connectivity import PETAL, Connectivity, ConnectivityStrategy
from .copy_reverse import Copy, CopyTask, Reverse
from .countdown import Countdown
from .kg_experts import KgExperts
from .math_formats import FormatWeights, MathFormats
from .phonebook import PhoneBook
from .shortest_path import MIN_ACCEPT, SIM_GRAPHS, SIM_SIZES, SIM_SOURCES, ShortestPath
from .solution_tree import SolutionTree
from .sparse_parity import SparseParity
from .sudoku import Sudoku
from .variable_assignment import VariableAssignment
from .video import (
    FloatRange,
    SyntheticVideo,
    VideoColour,
    VideoFiles,
    VideoShape,
    VideoTask,
    VideoTexture,
)

__all__ = [
    "MIN_ACCEPT",
    "PETAL",
    "SIM_GRAPHS",
    "SIM_SIZES",
    "SIM_SOURCES",
    "BiasedParity",
    "Connectivity",
    "ConnectivityStrategy",
    "Copy",
    "CopyTask",
    "Countdown",
    "Data",
    "FloatRange",
    "FormatWeights",
    "IntRange",
    "KgExperts",
    "LengthRanges",
    "MathFormats",
    "PhoneBook",
    "Reverse",
    "ShortestPath",
    "SolutionTree",
    "SparseParity",
    "Sudoku",
    "SyntheticVideo",
    "TokenData",
    "VariableAssignment",
    "VideoColour",
    "VideoFiles",
    "VideoShape",
    "VideoTask",
    "VideoTexture",
]

Data = kinded(
    SparseParity,
    SolutionTree,
    Connectivity,
    Copy,
    Reverse,
    VariableAssignment,
    Sudoku,
    Countdown,
    PhoneBook,
    ShortestPath,
    KgExperts,
    MathFormats,
    SyntheticVideo,
    VideoFiles,
    BiasedParity,
    default=None,
    description="The data generator of a stage, by `kind`.",
)
