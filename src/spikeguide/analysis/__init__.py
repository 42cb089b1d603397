"""Measuring trained models: accuracy and firing rates, activity and energy, gradient flow,
training curves."""
