"""The pyfunc entry point MLflow copies into a logged adapter model ("models from code": loading
runs this file instead of unpickling an object). See :mod:`syllabus.tracking.adapter_model`."""

import mlflow.models

from syllabus.tracking.adapter_model import LoraAdapterModel

mlflow.models.set_model(LoraAdapterModel())
