"""The pipeline: plan a grid of stages, estimate its cost, run it on an executor."""
