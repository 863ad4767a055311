"""What the agent's parts pass each other: the policy as verified data and what is blocked now.

The types are the shared ones of `lesfocus_policy` (the server compiles the same): the policy
source produces a `Policy`; `lesfocus_policy.blocked_at(policy, now)` turns it into a `BlockState`;
every enforcer and the DNS responder consume `BlockState` and the `Policy`'s services.
"""

from lesfocus_policy.model import Block, BlockState, Policy, PolicySegment, SegmentState, Service

__all__ = ["Block", "BlockState", "Policy", "PolicySegment", "SegmentState", "Service"]
