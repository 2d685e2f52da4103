"""Thin Prefect tasks: each is one call into ``syllabus.pipeline.stages``.

Tasks take and return small references (URLs, names, configs). Scoring, fine-tuning and
evaluation carry the ``gpu`` tag, so a tag concurrency limit (``prefect concurrency-limit
create gpu N``) bounds how many hold an accelerator at once.
"""
