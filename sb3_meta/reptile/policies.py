from sb3_meta.common.policies import MetaActorCriticPolicy

MlpPolicy = MetaActorCriticPolicy

__all__ = ["MlpPolicy"]
