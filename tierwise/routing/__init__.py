"""Which model answers: availability, the pure selector, steering, the router and its drivers.

Knows nothing of nodes or graphs (see the README's "Architecture").
"""

from tierwise._exports import declared
from tierwise.routing.availability import DEFAULT_DEMOTION as DEFAULT_DEMOTION
from tierwise.routing.availability import Availability as Availability
from tierwise.routing.chat_model import RoutedChatModel as RoutedChatModel
from tierwise.routing.chat_model import StreamInterrupted as StreamInterrupted
from tierwise.routing.default import default_router as default_router
from tierwise.routing.demotion import DemotionRule as DemotionRule
from tierwise.routing.ensemble import EnsembleResult as EnsembleResult
from tierwise.routing.ensemble import aensemble as aensemble
from tierwise.routing.ensemble import ensemble as ensemble
from tierwise.routing.request import RouteRequest as RouteRequest
from tierwise.routing.results import NoModelAvailable as NoModelAvailable
from tierwise.routing.results import RoutedResult as RoutedResult
from tierwise.routing.results import StreamChunk as StreamChunk
from tierwise.routing.results import StreamEnd as StreamEnd
from tierwise.routing.results import StreamEvent as StreamEvent
from tierwise.routing.results import StreamRestart as StreamRestart
from tierwise.routing.router import ModelRouter as ModelRouter
from tierwise.routing.selector import Explanation as Explanation
from tierwise.routing.selector import Selector as Selector
from tierwise.routing.snapshot import Snapshot as Snapshot
from tierwise.routing.snapshot import Standing as Standing

__all__ = sorted(declared(__file__))
