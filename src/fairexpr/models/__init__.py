"""Backbones, attention layers and heads, all built by name through one registry."""
from .registry import FERModel, ModelError, create_model, list_models, load_state_file, register_model

__all__ = ["FERModel", "ModelError", "create_model", "list_models", "load_state_file", "register_model"]
