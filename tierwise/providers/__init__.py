"""How to reach a model and read its failures: clients, failures, headers, redaction.

The light modules (failures, headers, redaction) are exported here; the clients and the
embedded model are imported from their modules, so reading a failure never loads an SDK.
"""

from tierwise.providers import failures, headers, redaction
from tierwise.providers.failures import *  # noqa: F403
from tierwise.providers.headers import *  # noqa: F403
from tierwise.providers.redaction import *  # noqa: F403

__all__ = [*failures.__all__, *headers.__all__, *redaction.__all__]
