"""sb3_meta: gradient-based meta-reinforcement learning (MAML, FOMAML, Reptile) for Stable-Baselines3."""

import os

from sb3_meta import envs
from sb3_meta.common.callbacks import MetaEvalCallback
from sb3_meta.common.evaluation import AdaptationResult, evaluate_adaptation
from sb3_meta.maml import FOMAML, MAML
from sb3_meta.reptile import Reptile

# Read version from file
version_file = os.path.join(os.path.dirname(__file__), "version.txt")
with open(version_file) as file_handler:
    __version__ = file_handler.read().strip()

__all__ = [
    "FOMAML",
    "MAML",
    "AdaptationResult",
    "MetaEvalCallback",
    "Reptile",
    "__version__",
    "envs",
    "evaluate_adaptation",
]
