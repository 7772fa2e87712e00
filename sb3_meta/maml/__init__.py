from sb3_meta.maml.maml import FOMAML, MAML
from sb3_meta.maml.policies import MlpPolicy

__all__ = ["FOMAML", "MAML", "MlpPolicy"]
