"""One typed, frozen settings object per stage, built and checked from params.yaml by
`pipelines.config.load` (the only reader of the file). Follow a setting from params.yaml to the code
that uses it through these classes: the section's name is each class's ``SECTION``."""
from __future__ import annotations

from .bench import BenchmarkSettings, PromoteSettings, ReportSettings
from .data import (AcquireSettings, DegradationSettings, GatysSettings, LossesSettings, LossNetworkSettings,
                   MlflowSettings, PrepareSettings)
from .release import ReleaseSettings
from .schema import SettingsError, build, plain, replace
from .serve import BatchSettings, InferenceSettings
from .train import TrainSettings, per_job

STAGES = (LossNetworkSettings, LossesSettings, DegradationSettings, AcquireSettings, PrepareSettings,
          MlflowSettings, TrainSettings, GatysSettings, BenchmarkSettings, ReportSettings, PromoteSettings,
          InferenceSettings, BatchSettings, ReleaseSettings)

__all__ = [c.__name__ for c in STAGES] + ["STAGES", "SettingsError", "build", "plain", "replace", "per_job"]
