"""Model references, loading, chat templating and inference engines."""

from syllabus.models.loading import LoadedModel, load_model
from syllabus.models.ref import ModelRef, fingerprint, resolve

__all__ = ["LoadedModel", "ModelRef", "fingerprint", "load_model", "resolve"]
