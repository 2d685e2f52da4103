"""Syllabus: model-centric data selection for domain fine-tuning."""

__version__ = "0.1.0"
