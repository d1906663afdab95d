"""Environments: dream envs, paper-faithful real envs and task families.

Modules are imported on demand (each may need an optional extra), e.g. ``dreamarcade.envs.atari``.
"""
