"""World Models (Ha & Schmidhuber 2018): V (ConvVAE), M (MDN-RNN), C (linear controller) and rollout storage.

Example:
    >>> from dreamarcade.world_models import WorldModel
    >>> WorldModel.bundled("doom").feature_size
    1088
"""

from __future__ import annotations

from dreamarcade.world_models.controller import Controller
from dreamarcade.world_models.features import FeatureTracker, WorldModelAgent, WorldModelFeatures
from dreamarcade.world_models.mdnrnn import MDNRNN, mdn_loss, sample_next
from dreamarcade.world_models.model import WorldModel, bundled_dir
from dreamarcade.world_models.rollouts import FrameStream, ShardWriter, encode_shards, load_series, load_shard
from dreamarcade.world_models.vae import ConvVAE, vae_loss

__all__ = [
    "ConvVAE",
    "vae_loss",
    "MDNRNN",
    "mdn_loss",
    "sample_next",
    "Controller",
    "WorldModel",
    "bundled_dir",
    "FeatureTracker",
    "WorldModelFeatures",
    "WorldModelAgent",
    "ShardWriter",
    "FrameStream",
    "encode_shards",
    "load_series",
    "load_shard",
]
