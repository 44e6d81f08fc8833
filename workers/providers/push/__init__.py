"""Push provider adapters."""
