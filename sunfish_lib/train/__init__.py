"""Training: optimizer and schedules, the Lightning module, trainer factory, callbacks."""
