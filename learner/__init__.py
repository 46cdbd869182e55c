"""Reference PPO learner for multi-clip motion imitation that uses the clip scheduler."""
