"""One stage pipeline for every registration kind (see docs/architecture.md)."""

from .base import RegistrationInputs, Stage, StageCache, StageContext, StageInfo, StageResult
from .chain import Link, TransformChain
from .runner import PipelineRun, run_pipeline

__all__ = ["RegistrationInputs", "Stage", "StageCache", "StageContext", "StageInfo", "StageResult", "Link",
           "TransformChain", "PipelineRun", "run_pipeline"]
