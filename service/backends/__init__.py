"""Inference backends behind the service's Backend seam."""
