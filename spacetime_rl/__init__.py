"""spacetime_rl: Hydra-configured RL training for SpaceTime VR locomotion over Godot's HTTP API."""

__version__ = "0.1.0"
