"""vla: a vision-language-action robotics stack."""

__version__ = "0.1.0"
