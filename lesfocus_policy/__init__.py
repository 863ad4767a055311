"""The policy shared by the server and the agent: its types, its document formats, its one reader.

Standard library only, so the agent's install does not pull in the server's dependencies.
"""

from .document import (FORMAT, LEGACY_FORMAT, MAX_ANSWER_BYTES, MAX_POLICY_BYTES, MAX_SERVICES,
                       UnsupportedFormat, content_version, is_domain_name, parse_claims,
                       to_claims)
from .model import Block, BlockState, Policy, PolicySegment, SegmentState, Service
from .reader import blocked_at, next_change, segment_state, state_stable_until, status_of

__all__ = [
    "FORMAT", "LEGACY_FORMAT", "MAX_ANSWER_BYTES", "MAX_POLICY_BYTES", "MAX_SERVICES",
    "UnsupportedFormat", "content_version", "is_domain_name", "parse_claims", "to_claims",
    "Block", "BlockState", "Policy", "PolicySegment", "SegmentState", "Service",
    "blocked_at", "next_change", "segment_state", "state_stable_until", "status_of",
]
