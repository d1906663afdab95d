"""Reward models learned from video: PyAV video reading, TDC/CMC embeddings, cycle-consistency, demo recording.

Submodules are imported on demand (``from dreamarcade.reward_models.video import VideoReader``) so that
importing the package costs nothing and PyAV stays an optional extra.
"""
