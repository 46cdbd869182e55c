"""clip-scheduler service: per-run clip probabilities, reward weights and usage, over REST."""
