"""The Hugging Face conversion's former module path: everything is in
:mod:`mask2former.checkpoint.hf`."""

from .hf import *  # noqa: F401,F403
from .hf import __all__  # noqa: F401
