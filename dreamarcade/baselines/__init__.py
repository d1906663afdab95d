"""Agents that consume dreamarcade's envs; run one with ``python -m dreamarcade.baselines <agent>``."""
