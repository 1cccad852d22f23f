"""The error every part of the Hugging Face conversion raises."""

__all__ = ["ConversionError"]


class ConversionError(ValueError):
    """A checkpoint or config that cannot be converted; names the key, field or file."""
