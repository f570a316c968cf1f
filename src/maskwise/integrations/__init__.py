"""Integrations with training frameworks. Each submodule imports its framework when imported
itself, so ``import maskwise`` stays free of them: ``from maskwise.integrations.hf import ...``.
"""
