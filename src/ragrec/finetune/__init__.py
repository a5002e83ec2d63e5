"""LoRA/QLoRA fine-tuning on scenario- and task-specific prompts (see issue #5)."""
