"""tether: RLHF with a KL tether to a frozen reference."""

__version__ = "0.1.0"
