"""bastion: ten industrial ML research systems as tested, fast software.

Subpackages (see ``DESIGN.md`` in the shared folder for the architecture):

* :mod:`bastion.core` -- seeding, the query-counting :class:`~bastion.core.BlackBox`, input checks,
  progress bars, report helpers and the registries the command line reads.
* :mod:`bastion.data` -- offline data sets that ship inside installed packages, and readers for
  users' own files (IDX, image folders).
* :mod:`bastion.zoo` -- small deterministic model recipes with a hash-keyed, integrity-checked
  safetensors cache, and EfficientNet-Lite0 pretrained on ImageNet.
* :mod:`bastion.reproduce` -- scaled-down reproductions that record the papers' claims and whether
  they hold on our data.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bastion")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
