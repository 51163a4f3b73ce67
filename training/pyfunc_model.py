"""The registered model as MLflow runs it (models from code): not imported by the project.

``training.tracking.log_model`` logs this file as the model's code, the scoring model as the
artifact ``scoring`` (``training.portable``) and the ``training`` modules it needs as code paths.
``mlflow.pyfunc.load_model`` runs this file with those modules on the path; ``load_context``
rebuilds the model with ``training.portable.load``, the function serving loads it with too.
"""

from __future__ import annotations

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from training import portable


class SalesModel(PythonModel):
    """Probability of the positive outcome (conversion, a good match, churn) from a frame of Feast
    feature columns."""

    def load_context(self, context) -> None:
        self.model = portable.load(context.artifacts[portable.ARTIFACT])

    def predict(self, context, model_input, params=None):
        return self.model.predict_proba(model_input)


set_model(SalesModel())
