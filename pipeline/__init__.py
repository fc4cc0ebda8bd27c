"""Re-referral risk pipeline: simulate, clean, derive episodes, model, audit, report."""

__version__ = "0.1.0"
