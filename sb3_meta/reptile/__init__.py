from sb3_meta.reptile.policies import MlpPolicy
from sb3_meta.reptile.reptile import Reptile

__all__ = ["MlpPolicy", "Reptile"]
