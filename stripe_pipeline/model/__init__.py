"""SQL models (``dbt_like_sql/``): discovery, per-dialect rendering, materialization.

Plain Python: Dagster wraps these functions in ``stripe_pipeline.defs.models``.
"""

from stripe_pipeline.model.project import Model, ModelError, Project, load_project
from stripe_pipeline.model.render import render_model
from stripe_pipeline.model.run import MaterializeResult, materialize, run_project

__all__ = [
    "MaterializeResult",
    "Model",
    "ModelError",
    "Project",
    "load_project",
    "materialize",
    "render_model",
    "run_project",
]
