"""LoRA fine-tuning of the target model on a selected subset.

- ``config``: :class:`FinetuneConfig` (the 3DS paper's defaults, all overridable);
- ``data``: reading selections/pool files, templating, prompt masking (labels -100);
- ``lora``: the training loop (also driven by LESS's warm-up), exact gradient accumulation,
  the adapter's store key (its format: :mod:`syllabus.models.adapters`);
- ``syllabus finetune`` is :mod:`syllabus.cli.finetune`.
"""
