"""Adversarial attacks: decision-based (hard-label) black-box attacks in :mod:`.decision`."""
