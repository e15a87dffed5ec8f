"""mkdt-bench: benchmark harness for dataset distillation aimed at SSL pre-training."""

__version__ = "0.1.0"
