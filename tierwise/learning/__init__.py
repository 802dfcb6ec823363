"""Learning to route: RouteLLM-format data and RouteLLM's router metrics.

``learned_router`` holds the model; the other modules feed it data and score it.
"""

from tierwise.learning.metrics import RoutingQuality, evaluate
from tierwise.learning.routellm import LabelledSet, contaminated, find_data, load_labelled, split

__all__ = [
    "LabelledSet",
    "RoutingQuality",
    "contaminated",
    "evaluate",
    "find_data",
    "load_labelled",
    "split",
]
