"""Trainers that produce adapters on GPU workers (LoRA, AdaLoRA, IncreLoRA,
rank-selective). Each registers itself in :data:`TRAINERS`."""

from deltahub.registry import Registry

TRAINERS: Registry = Registry("trainer")
