"""latentforge: deep unsupervised learning on PyTorch — train, then generate, reconstruct, embed."""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .estimators import VAE, load  # noqa: E402

__all__ = ["VAE", "UserError", "load", "__version__"]
