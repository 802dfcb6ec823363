"""Learning to route: RouteLLM-format data and RouteLLM's router metrics.

``tierwise.routing.learned`` holds the model; this package feeds it data and scores it.
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
