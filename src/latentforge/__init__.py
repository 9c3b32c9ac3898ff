"""latentforge: deep unsupervised learning on PyTorch — train, then generate, reconstruct, embed."""

__version__ = "0.1.0"

from .errors import UserError  # noqa: E402
from .estimators import CVAE, VAE, AutoEncoder, BetaVAE, DenoisingAutoEncoder, load  # noqa: E402
from .recommenders import MultDAE, MultVAE  # noqa: E402

__all__ = ["VAE", "BetaVAE", "CVAE", "AutoEncoder", "DenoisingAutoEncoder", "MultVAE", "MultDAE", "UserError", "load", "__version__"]
